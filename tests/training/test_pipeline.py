"""`acepilot pipeline` end to end on CPU: tiny corpus -> DeepSpeed fine-tune (2 gloo ranks)
-> fp32 build with the parity gate -> HumanEval-X (2 problems x 6 languages, engine,
sandbox) for candidate and production -> gate -> promote; then resume, restart-from,
rollback. The tiny random model passes nothing, so the gate sees "no change" everywhere
and promotes under a no-target policy: the point is the machinery, run for real."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_train_corpus import code, write

from acepilot.server.build.pipeline import build_model
from acepilot.server.registry import Registry
from acepilot.training.eval.toolchains import LANGUAGES, find_toolchain

REPO_ROOT = Path(__file__).resolve().parents[2]
DATA = Path(
    os.environ.get("ACEPILOT_HUMANEVAL_X", REPO_ROOT.parent / "shared" / "data" / "humaneval-x")
)
pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason=f"HumanEval-X data not at {DATA}")
NAME = "team"


def pipeline(config: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "acepilot.server.cli",
            "pipeline",
            str(config),
            "--progress=False",
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )


def test_full_tiny_pipeline(tmp_path: Path, random_codegen_dir: Path) -> None:
    sources = [
        str(
            write(
                tmp_path / "src" / f"repo{r}",
                {f"m{i}.py": code(100 * r + i, "py" if i % 2 else "ts") for i in range(6)},
            )
        )
        for r in range(4)
    ]
    registry = tmp_path / "registry"
    build_model(
        str(random_codegen_dir),
        precision="fp32",
        registry=Registry(registry),
        name=NAME,
        progress=False,
    )
    languages = [lang for lang in LANGUAGES if not find_toolchain(lang).missing]
    config = tmp_path / "team_pipeline.py"
    config.write_text(
        f"""# the tiny end-to-end run
name = {NAME!r}
registry = {str(registry)!r}
work_dir = {str(tmp_path / "run")!r}
init_from = {str(random_codegen_dir)!r}
corpus = ["--sources={",".join(sources)}", "--eval_leak=off", "--validation_repos=repo3",
          "--seq_len=64", "--workers=1"]
finetune = ["--nproc=2", "--max_steps=6", "--micro_batch=4", "--learning_rate=3e-3",
            "--warmup_steps=2", "--eval_interval=6", "--eval_iters=2", "--checkpoint_interval=6",
            "--progress=False", "--master_port={29900 + os.getpid() % 90}"]
precision = "fp32"
eval_data = {str(DATA)!r}
eval_languages = {languages!r}
eval_limit = 2
eval_max_new_tokens = 24
eval_workers = 2
completion_positions = 20
gate = ["epsilon=0.02", "alpha=0.05"]
"""
    )
    done = pipeline(config)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    for stage in ("corpus", "finetune", "build", "evaluate", "gate", "promote"):
        assert f"pipeline: {stage}: done" in done.stdout
    reg = Registry(registry)
    assert reg.production(NAME) == "v2" and reg.versions(NAME) == ["v1", "v2"]
    manifest = reg.entry(NAME, "v2").manifest
    assert manifest["gate"]["decision"] == "promote"
    assert manifest["parity"]["status"] == "passed"
    evaluated = manifest["evaluation"]["languages"]
    assert set(evaluated) == set(languages)
    assert all(entry["problems"] == 2 for entry in evaluated.values())
    run = tmp_path / "run"
    gate = json.loads((run / "gate" / "gate.json").read_text())
    metrics = {row["metric"] for row in gate["rows"]}
    assert {f"humaneval:{lang}" for lang in languages} <= metrics
    # in-domain line completion on the held-out repository, paired per position
    assert "completion:domain:repo3:exact_match" in metrics
    assert {"completion:python:edit_similarity", "completion:python:exact_match"} <= metrics
    rows = {row["metric"]: row for row in gate["rows"]}
    assert rows["completion:domain:repo3:exact_match"]["items"] == 20
    assert (run / "gate" / "report.html").is_file() and (run / "gate" / "scores.png").is_file()
    samples = (run / "evaluations" / "candidate" / "samples.jsonl").read_text().splitlines()
    assert len(samples) == 2 * len(languages)
    assert json.loads((run / "stages" / "promote.json").read_text())["outputs"]["version"] == "v2"

    # a rerun resumes: every stage is skipped
    again = pipeline(config)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("done earlier, skipped") == 6

    # restart from the gate: gate and promote run again; production is already v2
    redo = pipeline(config, "--restart-from=gate")
    assert redo.returncode == 0, redo.stderr[-3000:]
    assert "pipeline: corpus: done earlier, skipped" in redo.stdout
    assert "pipeline: gate: done" in redo.stdout and Registry(registry).versions(NAME) == [
        "v1",
        "v2",
    ]

    # a changed config does not silently resume on old stages
    config.write_text(config.read_text().replace("eval_limit = 2", "eval_limit = 3"))
    changed = pipeline(config)
    assert changed.returncode == 2 and "the config changed" in changed.stderr

    back = subprocess.run(
        [
            sys.executable,
            "-m",
            "acepilot.server.cli",
            "rollback",
            NAME,
            "--registry",
            str(registry),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert back.returncode == 0 and "v2 -> v1" in back.stdout
    assert Registry(registry).production(NAME) == "v1"
