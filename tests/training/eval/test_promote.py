"""Promotion and rollback: atomic, resumable, and safe when killed between any two steps.

Real pieces throughout: the tiny models built into registries, the engine
evaluating one HumanEval problem per side, the gate deciding, and `acepilot
promote` run as a child process that SIGKILLs itself at a chosen step
($ACEPILOT_PROMOTE_CRASH_AT).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from engine_fixtures import built_tiny_entry, built_tiny_registry  # noqa: F401

from acepilot.server.build.pipeline import build_model
from acepilot.server.registry import ModelEntry, Registry
from acepilot.training.eval.gate import GatePolicy, decide, from_humaneval, write_report
from acepilot.training.eval.generate import EngineGenerator, Sampling
from acepilot.training.eval.humaneval import HumanEvalConfig, evaluate
from acepilot.training.eval.promotion import CRASH_ENV, HISTORY, STEPS, rollback_target

REPO_ROOT = Path(__file__).resolve().parents[3]
DATA = Path(
    os.environ.get("ACEPILOT_HUMANEVAL_X", REPO_ROOT.parent / "shared" / "data" / "humaneval-x")
)
pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason=f"HumanEval-X data not at {DATA}")
NAME = "team"


TINY_EVAL = HumanEvalConfig(
    languages=("python",),
    data=str(DATA),
    tasks=(0, 1),
    sampling=Sampling(max_new_tokens=16),
    ks=(1,),
    workers=1,
    progress=False,
)


def tiny_eval(entry: ModelEntry, out: Path) -> dict[str, object]:
    return evaluate(EngineGenerator(entry, threads=1), TINY_EVAL, out)


@pytest.fixture(scope="module")
def setup(
    tmp_path_factory: pytest.TempPathFactory,
    random_codegen_dir: Path,
    built_tiny_entry: ModelEntry,  # noqa: F811
) -> dict[str, Path]:
    """A registry with production v1 (the random tiny model), a candidate entry (the
    trained tiny model, elsewhere), both evaluated, and a gate that says promote."""
    root = tmp_path_factory.mktemp("promote")
    template = root / "registry"
    build_model(
        str(random_codegen_dir),
        precision="fp32",
        registry=Registry(template),
        name=NAME,
        progress=False,
    )
    assert Registry(template).production(NAME) == "v1"
    production = Registry(template).resolve(NAME)
    candidate = tiny_eval(built_tiny_entry, root / "eval-candidate")
    baseline = tiny_eval(production, root / "eval-production")
    decision = decide(
        from_humaneval(candidate, "candidate", str(root / "eval-candidate")),
        from_humaneval(baseline, f"{NAME}@v1", str(root / "eval-production")),
        GatePolicy(),
    )
    assert decision.promote, decision.reasons
    write_report(decision, root / "gate")
    rejected = decide(
        from_humaneval(candidate, "candidate", str(root / "eval-candidate")),
        from_humaneval(baseline, f"{NAME}@v1", str(root / "eval-production")),
        GatePolicy(target="humaneval:python", delta=0.5),  # cannot be met: rejected
    )
    write_report(rejected, root / "gate-rejected")
    return {
        "root": root,
        "template": template,
        "gate": root / "gate",
        "rejected": root / "gate-rejected",
        "candidate": built_tiny_entry.path,
    }


def cli(*args: str, crash: str | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop(CRASH_ENV, None)
    if crash:
        env[CRASH_ENV] = crash
    return subprocess.run(
        [sys.executable, "-m", "acepilot.server.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )


def fresh_registry(setup: dict[str, Path], name: str) -> Path:
    target = setup["root"] / name
    shutil.copytree(setup["template"], target)
    return target


def assert_consistent(root: Path) -> Registry:
    """Every version is complete and verifies; production resolves to a valid entry."""
    registry = Registry(root)
    for version in registry.versions(NAME):
        registry.entry(NAME, version).verify()
    entry = registry.resolve(NAME)
    entry.verify()
    return registry


def test_promote_and_rollback(setup: dict[str, Path]) -> None:
    root = fresh_registry(setup, "plain")
    done = cli("promote", str(setup["gate"]), "--name", NAME, "--registry", str(root))
    assert done.returncode == 0, done.stderr
    assert "team: production v1 -> v2" in done.stdout
    registry = assert_consistent(root)
    assert registry.production(NAME) == "v2"
    manifest = registry.entry(NAME, "v2").manifest
    assert manifest["gate"]["decision"] == "promote"
    assert manifest["evaluation"]["languages"]["python"]["problems"] == 2
    assert manifest["promotion"]["candidate"] == str(setup["candidate"])
    assert manifest["parity"]["status"] == "passed"
    # what is served is byte for byte what the gate measured
    assert registry.entry(NAME, "v2").files == ModelEntry.load(setup["candidate"]).files

    back = cli("rollback", NAME, "--registry", str(root))
    assert back.returncode == 0 and "team: production v2 -> v1" in back.stdout
    assert Registry(root).production(NAME) == "v1"
    again = cli("rollback", NAME, "--registry", str(root))
    assert again.returncode == 2 and "no earlier production version" in again.stderr

    # promoting the same gate again reuses v2 (no duplicate version)
    redo = cli("promote", str(setup["gate"]), "--name", NAME, "--registry", str(root))
    assert redo.returncode == 0 and "already registered" in redo.stdout
    assert Registry(root).versions(NAME) == ["v1", "v2"] and Registry(root).production(NAME) == "v2"
    assert rollback_target(Registry(root), NAME) == "v1"
    events = [json.loads(line) for line in (root / NAME / HISTORY).read_text().splitlines()]
    assert [(e["event"], e["from"], e["to"]) for e in events] == [
        ("promote", "v1", "v2"),
        ("rollback", "v2", "v1"),
        ("promote", "v1", "v2"),
    ]


def test_a_rejected_gate_changes_nothing(setup: dict[str, Path]) -> None:
    root = fresh_registry(setup, "rejected")
    done = cli("promote", str(setup["rejected"]), "--name", NAME, "--registry", str(root))
    assert done.returncode == 2 and "the gate rejected this candidate" in done.stderr
    assert Registry(root).versions(NAME) == ["v1"] and Registry(root).production(NAME) == "v1"


@pytest.mark.parametrize("step", STEPS)
def test_killed_at_any_step_leaves_production_serving(setup: dict[str, Path], step: str) -> None:
    root = fresh_registry(setup, f"crash-{step}")
    killed = cli("promote", str(setup["gate"]), "--name", NAME, "--registry", str(root), crash=step)
    assert killed.returncode == -9, (killed.returncode, killed.stderr[-2000:])
    registry = assert_consistent(root)
    expected = "v2" if step == "flipped" else "v1"
    assert registry.production(NAME) == expected  # the old one until the atomic flip
    committed = step in ("committed", "logged", "flipped")
    assert registry.versions(NAME) == (["v1", "v2"] if committed else ["v1"])
    if step == "logged":  # an intent without its flip does not count for rollback
        assert rollback_target(registry, NAME) is None

    resumed = cli("promote", str(setup["gate"]), "--name", NAME, "--registry", str(root))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    registry = assert_consistent(root)
    assert registry.versions(NAME) == ["v1", "v2"]  # never built twice
    assert registry.production(NAME) == "v2"
    assert rollback_target(registry, NAME) == "v1"
    back = cli("rollback", NAME, "--registry", str(root))
    assert back.returncode == 0, back.stderr
    assert assert_consistent(root).production(NAME) == "v1"


def test_promote_a_checkpoint_builds_it_with_parity(
    setup: dict[str, Path], random_codegen_dir: Path
) -> None:
    """A candidate evaluated as a raw checkpoint (PyTorch) is built at promotion, with
    the parity gate enforced, and carries its evaluation in the manifest."""
    from acepilot.training.eval.generate import TorchGenerator
    from acepilot.training.eval.promotion import promote

    root = fresh_registry(setup, "checkpoint")
    out = setup["root"] / "eval-checkpoint"
    summary = evaluate(TorchGenerator(random_codegen_dir), TINY_EVAL, out)
    assert summary["model"]["kind"] == "torch"
    baseline = from_humaneval(
        json.loads((setup["root"] / "eval-production" / "summary.json").read_text()),
        f"{NAME}@v1",
        str(setup["root"] / "eval-production"),
    )
    decision = decide(from_humaneval(summary, "ckpt", str(out)), baseline, GatePolicy())
    write_report(decision, setup["root"] / "gate-checkpoint")
    result = promote(
        setup["root"] / "gate-checkpoint", Registry(root), NAME, precision="fp32", progress=False
    )
    assert (result.previous, result.version, result.reused) == ("v1", "v2", False)
    registry = assert_consistent(root)
    manifest = registry.entry(NAME, "v2").manifest
    assert manifest["parity"]["status"] == "passed" and manifest["precision"] == "fp32"
    assert manifest["evaluation"]["languages"]["python"]["problems"] == 2
    assert manifest["promotion"]["candidate"] == str(random_codegen_dir)
    assert registry.production(NAME) == "v2"
