"""Promotion and rollback: atomic, resumable, safe when killed between any two steps,
and never fooled into serving something the gate did not measure.

Real pieces throughout: the tiny models built into registries, the engine
evaluating HumanEval problems per side, the gate deciding, and `acepilot
promote` run as a child process that SIGKILLs itself at a chosen step
($ACEPILOT_PROMOTE_CRASH_AT). The integrity tests (issue 13) attack what
promotion trusts: a candidate version corrupted after its commit, a stale gate,
a checkpoint changed after its gate, files shared with scratch copies, a
gate.json edited by hand, path traversal, concurrent promote and rollback.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from engine_fixtures import built_tiny_entry, built_tiny_registry  # noqa: F401

from acepilot.server.build.pipeline import build_model
from acepilot.server.errors import AcepilotError, RegistryError
from acepilot.server.registry import ModelEntry, Registry
from acepilot.training.eval.gate import (
    GatePolicy,
    decide,
    from_humaneval,
    production_record,
    write_report,
)
from acepilot.training.eval.generate import Sampling
from acepilot.training.eval.history import HISTORY, PromotionError, rollback, rollback_target
from acepilot.training.eval.humaneval import HumanEvalConfig, evaluate
from acepilot.training.eval.models import make_generator
from acepilot.training.eval.promotion import COMMIT_FIELDS, CRASH_ENV, STEPS, promote

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


def tiny_eval(model: Path, out: Path) -> dict[str, object]:
    """Evaluated the way `acepilot gate` does (the description records the digest)."""
    generator = make_generator(str(model), Registry(out.parent / "unused"), threads=1)
    return evaluate(generator, TINY_EVAL, out)


def gate(
    root: Path,
    out: str,
    candidate: str,
    baseline: str,
    production: dict[str, object] | None,
    policy: GatePolicy | None = None,
) -> Path:
    """A gate report on two evaluation results directories under `root`."""

    def results(name: str) -> object:
        summary = json.loads((root / name / "summary.json").read_text())
        return from_humaneval(summary, name, str(root / name))

    decision = decide(
        results(candidate),  # type: ignore[arg-type]
        results(baseline),  # type: ignore[arg-type]
        policy or GatePolicy(),
        production=production,
    )
    write_report(decision, root / out)
    return root / out


def variant(entry: ModelEntry, registry: Registry) -> ModelEntry:
    """Another candidate: the same model with one byte more in its tokenizer file (so
    other bytes, another digest), registered with the same manifest fields."""
    with registry.stage(entry.name) as staging:
        for name in entry.files:
            (staging / name).write_bytes(entry.file_path(name).read_bytes())
        with (staging / entry.manifest["tokenizer"]["file"]).open("a") as handle:
            handle.write("\n")
        manifest = {k: v for k, v in entry.manifest.items() if k not in COMMIT_FIELDS}
        return registry.commit(staging, entry.name, manifest)


@pytest.fixture(scope="module")
def setup(
    tmp_path_factory: pytest.TempPathFactory,
    random_codegen_dir: Path,
    built_tiny_entry: ModelEntry,  # noqa: F811
) -> dict[str, Path]:
    """A registry with production v1 (the random tiny model); two candidate entries in a
    scratch registry (the trained tiny model, A, and a variant of it, B), all three
    evaluated; gates of A and of B against production v1, and a rejected gate of A."""
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
    scratch = Registry(root / "scratch")
    private = root / "scratch" / built_tiny_entry.name / built_tiny_entry.version
    shutil.copytree(built_tiny_entry.path, private)  # a copy these tests may damage
    candidate = scratch.entry(built_tiny_entry.name, built_tiny_entry.version)
    other = variant(candidate, scratch)
    tiny_eval(candidate.path, root / "eval-candidate")
    tiny_eval(other.path, root / "eval-other")
    tiny_eval(production.path, root / "eval-production")
    record = production_record(Registry(template), NAME)
    passed = gate(root, "gate", "eval-candidate", "eval-production", record)
    assert json.loads((passed / "gate.json").read_text())["promote"]
    gate(root, "gate-b", "eval-other", "eval-production", record)
    gate(
        root,
        "gate-rejected",
        "eval-candidate",
        "eval-production",
        record,
        GatePolicy(target="humaneval:python", delta=0.5),  # cannot be met: rejected
    )
    gate(root, "gate-no-production", "eval-candidate", "eval-production", None)
    # compared with B, not with production: the record says v1, the baseline is not v1
    gate(root, "gate-wrong-baseline", "eval-candidate", "eval-other", record)
    return {
        "root": root,
        "template": template,
        "gate": root / "gate",
        "gate-b": root / "gate-b",
        "rejected": root / "gate-rejected",
        "no-production": root / "gate-no-production",
        "wrong-baseline": root / "gate-wrong-baseline",
        "candidate": candidate.path,
        "other": other.path,
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


def checkpoint_gate(setup: dict[str, Path], source: Path, work: Path) -> tuple[Path, Path]:
    """A private copy of a checkpoint, evaluated (PyTorch) and gated against production."""
    checkpoint = work / "checkpoint"
    shutil.copytree(source, checkpoint)
    out = work / "eval-checkpoint"
    summary = tiny_eval(checkpoint, out)
    assert summary["model"]["kind"] == "torch"  # type: ignore[index]
    shutil.copytree(setup["root"] / "eval-production", work / "eval-production")
    record = production_record(Registry(setup["template"]), NAME)
    return gate(work, "gate", "eval-checkpoint", "eval-production", record), checkpoint


def test_promote_a_checkpoint_builds_it_with_parity(
    setup: dict[str, Path], random_codegen_dir: Path, tmp_path: Path
) -> None:
    """A candidate evaluated as a raw checkpoint (PyTorch) is built at promotion, with
    the parity gate enforced, and carries its evaluation in the manifest."""
    gate_dir, checkpoint = checkpoint_gate(setup, random_codegen_dir, tmp_path)
    root = fresh_registry(setup, "checkpoint")
    result = promote(gate_dir, Registry(root), NAME, precision="fp32", progress=False)
    assert (result.previous, result.version, result.reused) == ("v1", "v2", False)
    registry = assert_consistent(root)
    manifest = registry.entry(NAME, "v2").manifest
    assert manifest["parity"]["status"] == "passed" and manifest["precision"] == "fp32"
    assert manifest["evaluation"]["languages"]["python"]["problems"] == 2
    assert manifest["promotion"]["candidate"] == str(checkpoint)
    assert manifest["source"]["path"] == str(checkpoint)  # not the private copy built
    assert registry.production(NAME) == "v2"
    assert list((root / ".staging").iterdir()) == []  # the private copy is gone


# ---- integrity: what independent adversarial testing broke (issue 13) ----------------


def flip_byte(path: Path, offset: int = 100) -> bytes:
    """Corrupt a file in place (same inode, as a stray write would); returns the old byte."""
    with path.open("r+b") as handle:
        handle.seek(offset)
        old = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([old[0] ^ 0xFF]))
    return old


def restore_byte(path: Path, old: bytes, offset: int = 100) -> None:
    with path.open("r+b") as handle:
        handle.seek(offset)
        handle.write(old)


def test_a_candidate_version_corrupted_since_its_commit_is_never_made_production(
    setup: dict[str, Path],
) -> None:
    """Before: the rerun reused v2 by its candidate key and flipped onto corrupt bytes."""
    root = fresh_registry(setup, "corrupt-reuse")
    registry = Registry(root)
    assert promote(setup["gate"], registry, NAME, progress=False).version == "v2"
    rollback(registry, NAME)
    flip_byte(root / NAME / "v2" / "model.onnx")
    with pytest.raises(PromotionError, match=r"team v2 cannot be production: .*corrupt"):
        promote(setup["gate"], registry, NAME, progress=False)
    assert registry.production(NAME) == "v1"
    registry.resolve(NAME).verify()


def test_a_corrupted_version_left_by_a_killed_promotion_is_refused_on_resume(
    setup: dict[str, Path],
) -> None:
    root = fresh_registry(setup, "corrupt-resume")
    killed = cli(
        "promote", str(setup["gate"]), "--name", NAME, "--registry", str(root), crash="committed"
    )
    assert killed.returncode == -9, killed.stderr[-2000:]
    flip_byte(root / NAME / "v2" / "tokenizer.json", offset=10)
    resumed = cli("promote", str(setup["gate"]), "--name", NAME, "--registry", str(root))
    assert resumed.returncode == 2 and "cannot be production" in resumed.stderr
    assert Registry(root).production(NAME) == "v1"


def test_a_stale_gate_is_refused(setup: dict[str, Path]) -> None:
    """Two gates against v1: A promoted, then B would have replaced A without ever being
    compared with it."""
    root = fresh_registry(setup, "stale")
    registry = Registry(root)
    assert promote(setup["gate"], registry, NAME, progress=False).version == "v2"
    with pytest.raises(PromotionError, match="production of 'team' changed since the gate") as err:
        promote(setup["gate-b"], registry, NAME, progress=False)
    assert "acepilot gate CANDIDATE --against production --name team" in str(err.value)
    assert "--restart-from evaluate" in str(err.value)
    assert registry.production(NAME) == "v2" and registry.versions(NAME) == ["v1", "v2"]
    # Rolled back, production is again what B was compared with: B may go.
    rollback(registry, NAME)
    assert promote(setup["gate-b"], registry, NAME, progress=False).version == "v3"
    entry = registry.entry(NAME, "v3")
    assert entry.files == ModelEntry.load(setup["other"]).files
    assert entry.manifest["promotion"]["replaces"]["version"] == "v1"


def test_a_gate_whose_baseline_was_not_production_is_refused(setup: dict[str, Path]) -> None:
    """The gate records production v1, but it compared the candidate with B."""
    root = fresh_registry(setup, "wrong-baseline")
    with pytest.raises(PromotionError, match="is not production team v1"):
        promote(setup["wrong-baseline"], Registry(root), NAME, progress=False)
    assert Registry(root).versions(NAME) == ["v1"]


def test_a_gate_that_records_no_production_is_refused(setup: dict[str, Path]) -> None:
    root = fresh_registry(setup, "no-production")
    with pytest.raises(PromotionError, match="does not record which production"):
        promote(setup["no-production"], Registry(root), NAME, progress=False)
    with pytest.raises(PromotionError, match="not of 'other'"):
        promote(setup["gate"], Registry(root), "other", progress=False)
    assert Registry(root).versions(NAME) == ["v1"]


def test_a_checkpoint_changed_after_its_gate_is_refused(
    setup: dict[str, Path], random_codegen_dir: Path, tmp_path: Path
) -> None:
    """The gate evaluated a checkpoint; then its lm_head was zeroed. Before, the gate held
    only the path, and the changed checkpoint was built (parity passes: it compares the
    build with the same changed checkpoint) and promoted."""
    from safetensors.torch import load_file, save_file

    gate_dir, checkpoint = checkpoint_gate(setup, random_codegen_dir, tmp_path)
    weights = load_file(checkpoint / "model.safetensors")
    weights["lm_head.weight"].zero_()
    save_file(weights, checkpoint / "model.safetensors", metadata={"format": "pt"})
    root = fresh_registry(setup, "checkpoint-changed")
    with pytest.raises(PromotionError, match="the checkpoint changed since the gate evaluated it"):
        promote(gate_dir, Registry(root), NAME, precision="fp32", progress=False)
    assert Registry(root).versions(NAME) == ["v1"] and Registry(root).production(NAME) == "v1"
    assert list((root / ".staging").iterdir()) == []


def test_promoted_files_share_no_inode_with_the_candidate(setup: dict[str, Path]) -> None:
    """Before: production was hard-linked to the scratch candidate, so a write into the
    scratch file in place corrupted production."""
    root = fresh_registry(setup, "inodes")
    registry = Registry(root)
    entry = registry.entry(NAME, promote(setup["gate"], registry, NAME, progress=False).version)
    candidate = ModelEntry.load(setup["candidate"])
    for name in entry.files:
        mine, theirs = entry.file_path(name).stat(), candidate.file_path(name).stat()
        assert mine.st_ino != theirs.st_ino and mine.st_nlink == 1, name
    old = flip_byte(candidate.graph_path)
    try:
        entry.verify()  # production is unaffected
        with pytest.raises(RegistryError, match="corrupt"):
            candidate.verify()
    finally:
        restore_byte(candidate.graph_path, old)


def edited_gate(setup: dict[str, Path], source: str, target: str, change: object) -> Path:
    copy = setup["root"] / target
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(setup[source], copy)
    data = json.loads((copy / "gate.json").read_text())
    change(data)  # type: ignore[operator]
    (copy / "gate.json").write_text(json.dumps(data))
    return copy


def test_a_gate_report_edited_by_hand_is_refused(setup: dict[str, Path]) -> None:
    """Promotion decides again from the evaluation results the gate names, and takes the
    candidate from those results, not from gate.json."""
    root = fresh_registry(setup, "edited")
    registry = Registry(root)

    def flip_decision(data: dict[str, object]) -> None:
        data.update(promote=True, decision="promote", reasons=["no guarded metric regressed"])

    forged = edited_gate(setup, "rejected", "gate-forged", flip_decision)
    with pytest.raises(PromotionError, match=r"does not match the evaluation results .*promote"):
        promote(forged, registry, NAME, progress=False)

    other = ModelEntry.load(setup["other"])

    def swap_candidate(data: dict[str, object]) -> None:
        model = data["candidate"]["model"]  # type: ignore[index]
        model.update(path=str(other.path), files=other.files, digest=other.digest)

    swapped = edited_gate(setup, "gate", "gate-swapped", swap_candidate)
    with pytest.raises(PromotionError, match=r"does not match .*candidate"):
        promote(swapped, registry, NAME, progress=False)

    def old_format(data: dict[str, object]) -> None:
        data["format"] = 1
        del data["production"]

    with pytest.raises(PromotionError, match="run `acepilot gate` again"):
        promote(edited_gate(setup, "gate", "gate-old", old_format), registry, NAME)
    assert registry.versions(NAME) == ["v1"] and registry.production(NAME) == "v1"


def test_path_traversal_in_the_name_touches_nothing_outside(setup: dict[str, Path]) -> None:
    root = fresh_registry(setup, "traversal")
    before = sorted(p.name for p in root.iterdir())
    for name in ("../escape", "/tmp/escape", "team/../../escape"):
        with pytest.raises(RegistryError, match="invalid model name"):
            promote(setup["gate"], Registry(root), name, progress=False)
        with pytest.raises(RegistryError, match="invalid model name"):
            rollback(Registry(root), name)
    assert not (root.parent / "escape").exists()
    assert sorted(p.name for p in root.iterdir()) == before


def test_a_production_pointer_to_a_missing_version_is_not_replaced(
    setup: dict[str, Path],
) -> None:
    """Production names v9, which does not exist: not what the gate compared with."""
    root = fresh_registry(setup, "dangling")
    (root / NAME / "production").write_text("v9\n")
    with pytest.raises(AcepilotError, match="no version 'v9'"):
        promote(setup["gate"], Registry(root), NAME, progress=False)
    assert (root / NAME / "production").read_text() == "v9\n"
    assert Registry(root).versions(NAME) == ["v1"]


ACT = """
import sys
from pathlib import Path
from acepilot.server.errors import AcepilotError
from acepilot.server.registry import Registry
from acepilot.training.eval.history import rollback
from acepilot.training.eval.promotion import promote
registry = Registry(sys.argv[2])
try:
    if sys.argv[1] == "promote":
        print(promote(Path(sys.argv[3]), registry, "team", progress=False))
    else:
        print(rollback(registry, "team"))
except AcepilotError as exc:
    print(exc, file=sys.stderr)
    sys.exit(2)
"""


def test_concurrent_promotions_and_rollbacks_are_serialised(setup: dict[str, Path]) -> None:
    """Three promotions and three rollbacks of one name at once: each sees the result of
    the one before it (the history is one chain), nothing is built twice, and production
    is a verified version."""
    root = fresh_registry(setup, "concurrent")
    promote(setup["gate"], Registry(root), NAME, progress=False)
    actions = [["promote", str(root), str(setup["gate"])], ["rollback", str(root)]] * 3
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", ACT, *action],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for action in actions
    ]
    outcomes = [(p.wait(timeout=300), *p.communicate()) for p in processes]
    for code, _, err in outcomes:
        assert code in (0, 2), err[-2000:]
        if code == 2:  # refused cleanly: nothing to roll back, or already production
            assert "already production" in err or "no earlier production" in err, err
    registry = assert_consistent(root)
    assert registry.versions(NAME) == ["v1", "v2"]
    events = [json.loads(line) for line in (root / NAME / HISTORY).read_text().splitlines()]
    rolled_back = sum(
        code == 0 and action[0] == "rollback"
        for (code, _, _), action in zip(outcomes, actions, strict=True)
    )
    flipped = sum(code == 0 and "previous='v1'" in out for code, out, _ in outcomes)
    assert [e["event"] for e in events].count("rollback") == rolled_back
    assert [e["event"] for e in events].count("promote") == 1 + flipped
    for before, after in itertools.pairwise(events):
        assert after["from"] == before["to"], events
    assert registry.production(NAME) == events[-1]["to"]


def test_gate_and_promote_commands_end_to_end(setup: dict[str, Path]) -> None:
    """`acepilot gate` on a model records production and digests; `acepilot promote` accepts
    exactly that gate (the recheck reproduces the decision from the results it wrote)."""
    root = fresh_registry(setup, "commands")
    out = setup["root"] / "gate-cli"
    settings = ["--data", str(DATA), "--languages", "python", "--tasks", "0,1"]
    settings += ["--max-new-tokens", "16", "--k", "1", "--workers", "1", "--no-progress"]
    gated = cli(
        "gate",
        str(setup["candidate"]),
        "--against",
        "production",
        "--name",
        NAME,
        "--registry",
        str(root),
        "--out",
        str(out),
        *settings,
    )
    assert gated.returncode == 0, gated.stderr[-2000:]
    record = json.loads((out / "gate.json").read_text())
    v1 = Registry(root).entry(NAME, "v1")
    assert record["production"] == {"name": NAME, "version": "v1", "digest": v1.digest}
    assert record["candidate"]["model"]["digest"] == ModelEntry.load(setup["candidate"]).digest
    done = cli("promote", str(out), "--name", NAME, "--registry", str(root))
    assert done.returncode == 0, done.stderr[-2000:]
    assert "team: production v1 -> v2" in done.stdout
    assert_consistent(root)
