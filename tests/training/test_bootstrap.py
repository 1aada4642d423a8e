"""`acepilot bootstrap` end to end on the small preset (about a minute on 2 cores).

One module-scoped run goes through every stage (sources, tokenizer with the
FIM tokens, FIM/repository-format data, DeepSpeed training, int8 build with
the parity gate, held-out evaluation against both baselines, publishing). A
second, separate process trains the same config, is killed with SIGKILL after
its first checkpoint and resumed: its tokenizer and weights must be
byte-identical to the first run's, which checks determinism and exact
resumption at once. The shipped-model path (models/, sha256 checked) is
tested on an artifact shipped from the small run, and on the real one.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from acepilot.server.cli import main
from acepilot.server.registry import Registry
from acepilot.training import bootstrap as bs
from acepilot.training.bootstrap import shipped
from acepilot.training.bootstrap.evaluate import PREFIX_ONLY, WITH_SUFFIX, WITH_SUFFIX_SPM
from acepilot.training.bootstrap.pipeline import RECORD
from acepilot.training.commands.demo_samples import SAMPLES

SMALL = bs.BootstrapConfig.preset("small")


@pytest.fixture(scope="module")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("bootstrap")
    work, registry = root / "work", Registry(root / "registry")
    started = time.monotonic()
    result = bs.bootstrap(SMALL, work, registry, progress=False, quiet=True)
    assert result is not None
    return {
        "root": root,
        "work": work,
        "registry": registry,
        "result": result,
        "seconds": time.monotonic() - started,
    }


def stage(work: Path, name: str) -> dict[str, Any]:
    record: dict[str, Any] = json.loads((work / name / "stage.json").read_text())
    return record


def test_small_bootstrap_publishes_an_evaluated_int8_model(small_run: dict[str, Any]) -> None:
    registry: Registry = small_run["registry"]
    result = small_run["result"]
    assert not result.cached
    assert registry.production(bs.MODEL_NAME) == "v1"
    entry = registry.resolve(bs.MODEL_NAME)
    entry.verify()
    assert entry.manifest["precision"] == "int8"
    assert entry.manifest["parity"]["status"] == "passed"
    assert entry.manifest["config"]["rotary_dim"] % 16 == 0

    # the builder found the FIM and repository tokens in the tokenizer
    tokenizer = entry.manifest["tokenizer"]
    assert tokenizer["fim"]["prefix"] == "<fim_prefix>" and tokenizer["fim"]["order"] == "psm"
    assert set(tokenizer["fim"]["orders"]) == {"psm", "spm"}
    assert "<|endoftext|>" in tokenizer["fim"]["stop"]
    assert tokenizer["repo"] == {"repo_name": "<repo_name>", "file_sep": "<file_sep>"}
    assert entry.fim is not None and entry.repo_format is not None

    record = result.record
    assert record["version"] == "v1" and record["artifact_bytes"] > 0
    assert record["parameters"] == SMALL.model_size()
    assert set(record["licences"]["summary"]["python"]) == {"PSF-2.0"}
    evaluation = record["evaluation"]
    lines = evaluation["line_completion"]
    assert set(lines) == {
        PREFIX_ONLY,
        WITH_SUFFIX,
        WITH_SUFFIX_SPM,
        "bigram",
        "repeat previous line",
    }
    languages = set(evaluation["held_out"])
    assert languages == {"python", "javascript"}
    for scores in lines.values():
        assert scores["n"] == SMALL.eval_positions  # the same positions for every predictor
        assert 0.0 <= scores["exact_match"] <= 1.0 and 0.0 <= scores["edit_similarity"] <= 1.0
        assert set(scores["languages"]) == languages
        assert {group["n"] for group in scores["languages"].values()} == {SMALL.eval_positions // 2}
    perplexity = evaluation["perplexity"]
    # the model trained 30 steps: at least better than counting tokens one by one
    assert perplexity["model"] < perplexity["unigram"]
    assert set(perplexity["per_language"]) == languages
    check = perplexity["onnx_check"]  # the served int8 graph agrees with PyTorch
    assert check["built_artifact"] == pytest.approx(check["pytorch"], rel=0.05)
    assert len(evaluation["showcase"]) == 5
    for item in evaluation["showcase"]:
        assert isinstance(item["prefix_only"], str) and isinstance(item["with_suffix"], str)
        assert item["prefix_only_ms"] > 0 and item["with_suffix_ms"] > 0
    saved = json.loads((small_run["work"] / RECORD).read_text())
    assert saved["key"] == record["key"]


def test_held_out_files_never_reach_training(small_run: dict[str, Any]) -> None:
    sources = json.loads((small_run["work"] / "sources.json").read_text())
    train = {name for name, _, _ in sources["files"]["train"]}
    validation = {name for name, _, _ in sources["files"]["validation"]}
    held_out = {name for name, _, _ in sources["files"]["held_out"]}
    assert held_out and train and validation
    assert not held_out & (train | validation) and not train & validation
    assert all(name.startswith(("python/", "npm/")) for name in train | held_out)

    # held out by package: no held-out package has a file on the training side
    packages = {
        split: {package for _, _, package in sources["files"][split]}
        for split in ("train", "validation", "held_out")
    }
    assert not packages["held_out"] & (packages["train"] | packages["validation"])
    assert any(p.startswith("npm:") for p in packages["train"])  # npm's bundled packages
    # the data stage cut every file into at least one document; half of the training
    # documents in FIM order (both orders), some with repository context, validation plain
    counts = stage(small_run["work"], "data")["counts"]
    assert counts["train"]["documents"] >= len(train)
    assert counts["validation"]["documents"] >= len(validation)
    fim = counts["train"]["fim"]
    assert fim["psm"] > 0 and fim["spm"] > 0
    assert 0.3 < (fim["psm"] + fim["spm"]) / counts["train"]["documents"] < 0.7
    assert counts["train"]["repo_documents"] > 0
    assert counts["validation"]["fim"] == {} and counts["validation"]["repo_documents"] == 0


def test_rerun_is_cached_and_stages_are_reused(small_run: dict[str, Any]) -> None:
    work, registry = small_run["work"], small_run["registry"]
    train_before = stage(work, "train")
    started = time.monotonic()
    again = bs.bootstrap(SMALL, work, registry, progress=False, quiet=True)
    assert again is not None and again.cached and again.entry.version == "v1"
    assert time.monotonic() - started < small_run["seconds"] / 3

    # An evaluation-only change re-runs the evaluation, not the training or the build,
    # and publishing the same artifact reuses v1.
    changed = bs.BootstrapConfig.preset("small", eval_positions=12)
    result = bs.bootstrap(changed, work, registry, progress=False, quiet=True)
    assert result is not None and not result.cached
    assert stage(work, "train") == train_before
    assert set(result.record["seconds_this_run"]) == {"evaluate", "publish", "total"}
    assert result.record["evaluation"]["line_completion"]["bigram"]["n"] == 12
    assert registry.versions(bs.MODEL_NAME) == ["v1"]
    # back to the original settings for the other tests
    assert bs.bootstrap(SMALL, work, registry, progress=False, quiet=True) is not None


def test_kill_and_resume_gives_the_same_weights(small_run: dict[str, Any], tmp_path: Path) -> None:
    """Another process, killed after its first checkpoint, then resumed: byte-identical
    tokenizer and weights (so the run is deterministic, and resuming is exact)."""
    work = tmp_path / "work"
    command = [
        sys.executable,
        "-m",
        "acepilot.server.cli",
        "bootstrap",
        "--preset",
        "small",
        "--work",
        str(work),
        "--registry",
        str(tmp_path / "registry"),
        "--stop-after",
        "train",
        "--no-progress",
    ]
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    latest = work / "train" / "checkpoints" / "latest"
    deadline = time.monotonic() + 600
    while not latest.exists() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert latest.exists(), "the training stage wrote no checkpoint before it was killed"
    assert not (work / "train" / "stage.json").exists()  # really interrupted mid-training

    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resumed from" in done.stderr
    first, resumed = small_run["work"], work
    assert stage(resumed, "tokenizer")["sha256"] == stage(first, "tokenizer")["sha256"]
    assert stage(resumed, "train")["weights_sha256"] == stage(first, "train")["weights_sha256"]


def test_demo_uses_acepilot_tiny_when_no_model_is_configured(
    small_run: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cache, registry = tmp_path / "cache", tmp_path / "registry"
    shutil.copytree(small_run["work"], cache / "bootstrap")  # built stages: nothing retrains
    os.environ.pop("ACEPILOT_MODEL", None)
    argv = ["demo", "--cache", str(cache), "--registry", str(registry), "--preset", "small"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "acepilot-tiny v1 is production" in out
    assert "completions by acepilot-tiny v1 (int8, cpu)" in out
    table = out.split("| language | file | position | completion | latency |", 1)[1]
    rows = [row for row in table.splitlines() if row.startswith("| ") and "---" not in row]
    assert [row.split(" | ")[1] for row in rows] == [s.filename for s in SAMPLES]
    assert {row.split(" | ")[2] for row in rows} == {"prefix only", "with suffix"}
    assert all(row.endswith(" ms |") for row in rows)
    assert Registry(registry).production("acepilot-tiny") == "v1"

    # Again: cached, the same greedy completions.
    assert main(argv) == 0
    again = capsys.readouterr().out
    assert "(already built: cached)" in again
    completions = [row.split(" | ")[3] for row in rows]
    table = again.split("| language | file | position | completion | latency |", 1)[1]
    assert [r.split(" | ")[3] for r in table.splitlines()[2:]] == completions

    # One position of the user's own file: the completion the editor would show there.
    own = tmp_path / "own.py"
    own.write_text("import os\n\n\ndef home():\n    return os.path.\n")
    assert main(argv + ["--file", str(own), "--line", "5", "--column", "20"]) == 0
    single = capsys.readouterr().out
    assert "completing " + str(own) + " at line 5, column 20" in single
    assert "completion text: " in single
    assert main(argv + ["--line", "3"]) == 2
    assert "--line and --column need --file" in capsys.readouterr().err

    # A configured model is used as is: no bootstrap.
    entry = Registry(registry).resolve("acepilot-tiny")
    other = tmp_path / "empty-cache"
    argv = ["demo", "--cache", str(other), "--registry", str(registry), "--model", str(entry.path)]
    assert main(argv) == 0
    assert "(configured)" in capsys.readouterr().out
    assert not (other / "bootstrap").exists()


def test_eval_completion_command_on_the_built_model(
    small_run: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`acepilot eval completion` (registered by the eval command) on held-out files."""
    import argparse

    from acepilot.training.eval import line_completion as lc

    sources = json.loads((small_run["work"] / "sources.json").read_text())
    root = small_run["work"] / "held_out"  # the evaluation's own copies
    held = tmp_path / "held"
    names = [n for n, _, _ in sources["files"]["held_out"] if n.startswith("python/")]
    for name in names[:2]:
        relative = name.removeprefix("python/")
        target = held / ("pkg" if "/" in relative else "flat") / Path(relative).name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(root / name, target)
    (held / "web").mkdir()
    (held / "web" / "app.js").write_text("function add(a, b) {\n  return a + b;\n}\n" * 200)
    parser = argparse.ArgumentParser()
    lc.add_parser(parser.add_subparsers())
    train_file = tmp_path / "train.py"
    train_file.write_text("def f(x):\n    return x + 1\n" * 100)
    args = parser.parse_args(
        [
            "completion",
            bs.MODEL_NAME,
            str(held),
            "--registry",
            str(small_run["registry"].root),
            "-n",
            "30",
            "--perplexity-tokens",
            "200",
            "--bigram-train",
            str(train_file),
            "--json",
            str(tmp_path / "out.json"),
            "--no-progress",
        ]
    )
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "repeat previous line" in out and "bigram" in out and "javascript" in out
    results = json.loads((tmp_path / "out.json").read_text())
    model = results["line_completion"]["acepilot-tiny v1"]
    assert model["n"] == 30
    assert sum(group["n"] for group in model["languages"].values()) == 30
    assert set(model["domains"]) <= {"pkg", "flat", "web"} and "web" in model["domains"]
    assert results["perplexity"]["model"] > 1.0 and results["perplexity"]["bigram"] > 1.0


def test_baseline_gate_and_config_checks() -> None:
    good = {
        "line_completion": {
            "acepilot-tiny": {"exact_match": 0.3, "edit_similarity": 0.6},
            "bigram": {"exact_match": 0.1, "edit_similarity": 0.3},
            "repeat previous line": {"exact_match": 0.05, "edit_similarity": 0.2},
        },
        "perplexity": {"model": 8.0, "bigram": 30.0},
    }
    assert bs.beats_baselines(good) == []
    worse = json.loads(json.dumps(good))
    worse["line_completion"]["repeat previous line"]["edit_similarity"] = 0.6  # a tie loses
    worse["perplexity"]["model"] = 31.0
    failures = bs.beats_baselines(worse)
    assert len(failures) == 2 and "repeat previous line" in failures[0]
    with pytest.raises(ValueError, match="rotary_dim"):
        bs.BootstrapConfig(rotary_dim=24).check()
    with pytest.raises(ValueError, match="unknown preset"):
        bs.BootstrapConfig.preset("huge")
    assert bs.BootstrapConfig().model_size() > 1_000_000


def test_shipped_model_is_registered_with_its_sha256_checked(
    small_run: dict[str, Any], tmp_path: Path
) -> None:
    """ship() writes an entry directory with provenance; ensure_shipped registers it
    once, and refuses a corrupt file or a manifest that is not the pinned one."""
    from acepilot.server.errors import RegistryError

    published = small_run["result"].entry
    out = tmp_path / "models" / bs.MODEL_NAME
    digest = shipped.ship(small_run["work"], published, out)
    provenance = {p.name for p in (out / "provenance").iterdir()}
    assert {"bootstrap.json", "sources.json", "training-log.jsonl", "evaluation.json"} <= provenance
    assert "LICENCES.md" in provenance

    registry = Registry(tmp_path / "registry")
    entry = shipped.ensure_shipped(registry, out, digest)
    assert registry.production(bs.MODEL_NAME) == entry.version == "v1"
    entry.verify()
    assert shipped.ensure_shipped(registry, out, digest).version == "v1"  # reused, not copied
    assert registry.versions(bs.MODEL_NAME) == ["v1"]
    record = shipped.shipped_record(entry)
    assert record["evaluation"]["line_completion"][PREFIX_ONLY]["n"] == SMALL.eval_positions

    # a manifest that is not the pinned one (another model, or edited hashes)
    with pytest.raises(RegistryError, match="do not match the shipped model"):
        shipped.load_shipped(out, "0" * 64)
    # one flipped byte in the graph: refused by its sha256, never registered
    broken = tmp_path / "broken"
    shutil.copytree(out, broken)
    graph = broken / published.manifest["graph"]["file"]
    data = bytearray(graph.read_bytes())
    data[len(data) // 2] ^= 0xFF
    graph.write_bytes(bytes(data))
    other = Registry(tmp_path / "other")
    with pytest.raises(RegistryError, match="sha256"):
        shipped.ensure_shipped(other, broken, digest)
    assert other.versions(bs.MODEL_NAME) == []


@pytest.mark.skipif(not shipped.SHIPPED_DIGEST, reason="no model is shipped yet")
def test_the_shipped_default_model_loads_and_completes(tmp_path: Path) -> None:
    """models/acepilot-tiny as committed: its digest is the pinned one, every file's
    sha256 holds, and it registers and completes code without any training."""
    from acepilot.server.engine import Engine, GenerationParams

    registry = Registry(tmp_path / "registry")
    entry = shipped.ensure_shipped(registry)
    assert entry.digest == shipped.SHIPPED_DIGEST
    assert sum(entry.file_path(n).stat().st_size for n in entry.files) < 50_000_000
    # FIM is offered to servers only when it measured at least as well as the prefix,
    # in the order that measured best
    evaluation = json.loads((entry.path / "provenance" / "evaluation.json").read_text())
    lines = evaluation["line_completion"]
    orders = {"psm": WITH_SUFFIX, "spm": WITH_SUFFIX_SPM}
    scores = {o: lines[name]["exact_match"] for o, name in orders.items() if name in lines}
    best = max(scores, key=lambda o: scores[o])
    helps = scores[best] >= lines[PREFIX_ONLY]["exact_match"]
    assert (entry.fim is not None) == helps
    if entry.fim is not None:
        assert entry.fim.order == best
    assert entry.repo_format is not None
    engine = Engine.load(entry)
    result = engine.generate("def add(a, b):\n    return", GenerationParams(max_new_tokens=8))
    assert result.token_ids


@pytest.mark.skipif(not shipped.SHIPPED_DIGEST, reason="no model is shipped yet")
def test_the_shipped_model_was_made_by_the_default_recipe() -> None:
    """`acepilot bootstrap` with no options reproduces the shipped model: the recipe
    recorded in its provenance is today's BootstrapConfig() (a model trained with other
    settings, or a recipe changed after shipping, fails here)."""
    import dataclasses

    recorded = json.loads((shipped.shipped_dir() / "provenance" / "bootstrap.json").read_text())
    today = json.loads(json.dumps(dataclasses.asdict(bs.BootstrapConfig())))
    assert recorded["config"] == today


def test_licences_are_read_conservatively() -> None:
    """Only clearly permissive expressions pass; unknown or copyleft means no."""
    from email.message import Message

    from acepilot.training.bootstrap.sources import distribution_licence, permissive

    assert permissive("MIT") == "MIT"
    assert permissive("(MIT OR Apache-2.0)") == "MIT"
    assert permissive("Apache-2.0 OR GPL-2.0") == "Apache-2.0"
    assert permissive("BSD-3-Clause AND MIT") == "BSD-3-Clause AND MIT"
    assert permissive("MIT AND GPL-3.0") is None
    assert permissive("GPL-2.0-or-later") is None
    assert permissive("LGPL") is None and permissive("") is None and permissive(None) is None
    assert permissive("Proprietary") is None

    def metadata(**fields: object) -> Message:
        message = Message()
        for key, value in fields.items():
            for item in value if isinstance(value, list) else [value]:
                message[key.replace("_", "-")] = str(item)
        return message

    osi = "License :: OSI Approved :: "
    assert distribution_licence(metadata(License_Expression="BSD-3-Clause")) == "BSD-3-Clause"
    assert distribution_licence(metadata(Classifier=[osi + "MIT License"])) == "MIT"
    mixed = [osi + "MIT License", osi + "GNU General Public License v3 (GPLv3)"]
    assert distribution_licence(metadata(Classifier=mixed)) is None
    assert distribution_licence(metadata(License="Apache 2.0")) == "Apache-2.0"
    assert distribution_licence(metadata(License="see LICENSE file")) is None
