"""`acepilot promote`: a gated model becomes production, atomically.

What promotion guarantees: production is only ever pointed at the exact bytes
the gate evaluated, and only in place of the production the gate compared
them with. gate.json is not trusted for anything that can be checked again:

- the decision is made again from the evaluation results gate.json names
  (its `source` directories) with its policy, and must come out the same,
  table and all (a report edited by hand is refused);
- the candidate is what those results say was evaluated, with its sha256
  digest (`acepilot.training.eval.models`: a registry entry's files digest, a
  checkpoint directory's digest); anything else is refused;
- the production recorded by the gate (`production_record`: version and
  digest) must still be production, and must be the model the baseline
  results were made with; otherwise the gate is stale and must be run again.

Promotion, in steps (each a crash point; see `CRASH_ENV`):

1. `gate-checked`: the checks above, under the name's lock.
2. `staged`: the model is in a registry staging directory. A candidate
   evaluated through the engine (a registry entry, e.g. in the evaluation's
   scratch registry) is copied file by file (a private copy or a reflink,
   never a hard link: the registry shares no inode with files outside it) and
   each copy's sha256 checked; its parity record must say passed. A raw
   checkpoint is copied into the registry's staging area, its digest checked
   against the gate's, and that private copy is built with `build_model`
   (parity gate enforced).
3. `committed`: `Registry.commit` renamed it into the next version, with
   `evaluation` (the candidate's HumanEval summary), `gate` (the decision)
   and `promotion` (the candidate key = digest, the gate path, the production
   it replaces) in its manifest.
4. `logged`: the intent "production: old -> new" is appended (fsync'd) to
   `<registry>/<name>/promotions.jsonl`.
5. `flipped`: the version is read back from disk and every file's sha256
   verified, then `Registry.set_production` replaces the pointer
   (os.replace): running servers resolve the new version from now on.

A crash before step 5 leaves production where it was, and the registry has
either no new version or a complete one (the rename is atomic). Running the
same promotion again resumes: a committed version carrying the same
candidate key is reused instead of built twice (its bytes verified before the
flip, so a version corrupted since is refused), and a pointer already moved
is left alone.

The history file is the rollback stack. An event counts only if what came
after it saw its result (the next event's "from", or the current pointer,
equals its "to"): an intent logged just before a crash is ignored.
`rollback` flips production to the version before the current one (history.py
holds the history, the name's lock and rollback).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from acepilot.server.errors import AcepilotError, RegistryError
from acepilot.server.registry import (
    SHA256,
    STAGING,
    ModelEntry,
    Registry,
    check_name,
    copy_private,
    files_digest,
    sha256_file,
)
from acepilot.training.eval.gate import (
    GatePolicy,
    Results,
    decide,
    from_humaneval,
    load_gate,
    merge,
)
from acepilot.training.eval.history import (
    PromotionError,
    append_history,
    name_lock,
)

log = logging.getLogger(__name__)

CRASH_ENV = "ACEPILOT_PROMOTE_CRASH_AT"
STEPS = ("gate-checked", "staged", "committed", "logged", "flipped")
# Written by Registry.commit itself; never copied from the evaluated entry.
COMMIT_FIELDS = ("files", "name", "version", "created", "acepilot_version", "format")
REGATE = (
    "gate it again: `acepilot gate CANDIDATE --against production --name {name} --out DIR` "
    "(in a pipeline: `acepilot pipeline CONFIG --restart-from evaluate`), then promote that gate"
)


def crash_point(step: str) -> None:
    """Test hook: SIGKILL this process at `step` when $ACEPILOT_PROMOTE_CRASH_AT names it."""
    if os.environ.get(CRASH_ENV) == step:
        log.warning("crash hook: killing the process at step %s", step)
        os.kill(os.getpid(), signal.SIGKILL)


# ---- what the gate evaluated -------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    """The model a gate evaluated, as its evaluation results describe it."""

    kind: str  # "engine" (a registry entry) or "torch" (a checkpoint directory)
    path: Path
    digest: str  # files_digest of the entry's files, or checkpoint_digest of the directory

    @property
    def key(self) -> str:
        """Identifies the candidate in the registry (manifest promotion.candidate_key)."""
        return self.digest


def model_digest(model: Mapping[str, Any]) -> str | None:
    """The digest of what an evaluation ran, from its model description (None: unknown)."""
    if model.get("kind") == "engine":
        files = model.get("files")
        if isinstance(files, dict) and all(
            isinstance(k, str) and isinstance(v, str) for k, v in files.items()
        ):
            return files_digest(files)
        return None
    digest = model.get("digest")
    return digest if isinstance(digest, str) and SHA256.match(digest) else None


def gated_candidate(model: Mapping[str, Any]) -> Candidate:
    kind, path = model.get("kind"), model.get("path")
    if kind not in ("engine", "torch") or not isinstance(path, str):
        raise PromotionError(
            f"the gate's candidate is a {kind!r} evaluation, not a model "
            "(evaluate a registry entry or a checkpoint directory)"
        )
    digest = model_digest(model)
    if digest is None:
        raise PromotionError(
            f"{path}: its evaluation recorded no digest of what it evaluated (made by an older "
            "acepilot?): evaluate and gate it again"
        )
    recorded = model.get("digest")
    if recorded is not None and recorded != digest:
        raise PromotionError(f"{path}: its evaluation's digest does not match its files")
    return Candidate(kind, Path(path), digest)


# ---- rechecking gate.json ----------------------------------------------------------


def load_results(record: Mapping[str, Any], with_completion: bool) -> Results:
    """One side of the gate, from the evaluation results directory it names."""
    from acepilot.training.eval.humaneval import load_summary
    from acepilot.training.eval.indomain import COMPLETION_FILE, completion_metrics

    source, label = record.get("source"), record.get("label")
    if not isinstance(source, str) or not source or not isinstance(label, str):
        raise ValueError(f"{label!r}: no evaluation results directory recorded")
    path = Path(source)
    results = from_humaneval(load_summary(path), label, source)
    if with_completion:
        data = json.loads((path / COMPLETION_FILE).read_text(encoding="utf-8"))
        results = merge(results, Results(label, completion_metrics(data)))
    return results


def recheck(gate: Mapping[str, Any], where: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Decide again from the evaluation results the gate names; it must agree with gate.json.

    Returns the candidate's and the baseline's model descriptions as those results
    record them (never as gate.json says).
    """
    try:
        completion = any(str(r["metric"]).startswith("completion:") for r in gate["rows"])
        policy = GatePolicy(**gate["policy"])
        candidate = load_results(gate["candidate"], completion)
        baseline = load_results(gate["baseline"], completion)
        others = [load_results(o, completion) for o in gate["other_baselines"]]
        fresh = decide(candidate, baseline, policy, others, production=gate["production"])
    except (KeyError, TypeError, ValueError, OSError, RecursionError) as exc:
        raise PromotionError(
            f"{where}: cannot check the gate against the evaluation results it names "
            f"({str(exc)[:300]}); run `acepilot gate` again"
        ) from None
    again = json.loads(json.dumps(fresh.to_dict()))
    differs = sorted(key for key in set(again) | set(gate) if again.get(key) != gate.get(key))
    if differs:
        raise PromotionError(
            f"{where}: gate.json does not match the evaluation results it names (differs in: "
            f"{', '.join(differs)}): edited by hand, or the results changed since the gate; "
            "run `acepilot gate` again"
        )
    return dict(candidate.model), dict(baseline.model)


def check_production(
    gate: Mapping[str, Any],
    baseline_model: Mapping[str, Any],
    candidate: Candidate,
    registry: Registry,
    name: str,
) -> None:
    """The gate compared the candidate with production as it is now (see the docstring)."""
    regate = REGATE.format(name=name)
    recorded = gate.get("production")
    if not isinstance(recorded, dict) or recorded.get("name") is None:
        raise PromotionError(
            "the gate does not record which production it compared the candidate with "
            f"(it was run without --name); {regate}"
        )
    if recorded["name"] != name:
        raise PromotionError(
            f"the gate compared the candidate with production of {recorded['name']!r}, "
            f"not of {name!r}; {regate}"
        )
    current = registry.production(name)
    entry = registry.entry(name, current) if current is not None else None
    if entry is not None and promotion_key(entry) == candidate.key:
        return  # this candidate is production already: an earlier run of this promotion
    digest = entry.digest if entry is not None else None
    if (current, digest) != (recorded.get("version"), recorded.get("digest")):
        was = recorded.get("version") or "no production"
        now = f"{current} ({str(digest)[:12]})" if current else "no production"
        raise PromotionError(
            f"production of {name!r} changed since the gate: the gate compared the candidate "
            f"with {was} ({str(recorded.get('digest'))[:12]}), production is now {now}. "
            f"The gate says nothing about the candidate against what is serving now; {regate}"
        )
    if entry is not None and model_digest(baseline_model) != entry.digest:
        raise PromotionError(
            f"the gate's baseline ({gate['baseline'].get('label')}) is not production "
            f"{name} {current}: its results were made with another model; {regate}"
        )


def promotion_key(entry: ModelEntry) -> Any:
    record = entry.manifest.get("promotion")
    return record.get("candidate_key") if isinstance(record, dict) else None


# ---- registering the candidate -------------------------------------------------------


class _AnnotatingRegistry(Registry):
    """A Registry whose commits add fields to the manifest and that leaves the
    production pointer to the promotion (build_model sets it for a first model)."""

    def __init__(self, root: Path, extra: Mapping[str, Any], source: Mapping[str, Any]) -> None:
        super().__init__(root)
        self.extra = dict(extra)
        self.source = dict(source)  # the checkpoint as gated, not the private copy built

    def commit(self, staging_dir: Path, name: str, manifest: Mapping[str, Any]) -> ModelEntry:
        crash_point("staged")
        source = {**dict(manifest.get("source") or {}), **self.source}
        return super().commit(staging_dir, name, {**manifest, **self.extra, "source": source})

    def set_production(self, name: str, version: str) -> None:
        return None


@dataclass(frozen=True)
class Promotion:
    name: str
    version: str
    previous: str | None
    reused: bool  # an earlier, interrupted run had already committed it


def find_promoted(registry: Registry, name: str, key: str) -> ModelEntry | None:
    for version in reversed(registry.versions(name)):
        try:
            entry = registry.entry(name, version)
        except AcepilotError:
            continue
        if promotion_key(entry) == key:
            return entry
    return None


def evaluation_record(gate: Mapping[str, Any]) -> dict[str, Any]:
    """The candidate's evaluation summary as stored in the manifest (no samples)."""
    source = gate["candidate"].get("source")
    record: dict[str, Any] = {"source": source}
    if source:
        summary_path = Path(source) / "summary.json"
        if summary_path.is_file():
            summary = json.loads(summary_path.read_text(encoding="utf-8"))
            for key in (
                "settings",
                "languages",
                "overall",
                "ks",
                "skipped",
                "isolation",
                "created",
            ):
                record[key] = summary.get(key)
    return record


def promote(
    gate_path: Path,
    registry: Registry,
    name: str,
    *,
    precision: str = "int4",
    device: str = "cpu",
    progress: bool = True,
) -> Promotion:
    """See the module docstring. `precision`/`device` apply to a raw checkpoint only."""
    check_name(name)
    try:
        gate = load_gate(gate_path)
    except ValueError as exc:
        raise PromotionError(str(exc)) from None
    if gate["promote"] is not True:
        raise PromotionError(
            "the gate rejected this candidate: " + "; ".join(map(str, gate.get("reasons", [])))
        )
    candidate_model, baseline_model = recheck(gate, Path(gate_path))
    candidate = gated_candidate(candidate_model)
    with name_lock(registry, name):
        crash_point("gate-checked")
        check_production(gate, baseline_model, candidate, registry, name)
        annotations = {
            "evaluation": evaluation_record(gate),
            "gate": {k: v for k, v in gate.items() if k != "candidate"},
            "promotion": {
                "candidate_key": candidate.key,
                "candidate_kind": candidate.kind,
                "gate_path": str(Path(gate_path).resolve()),
                "candidate": str(candidate.path),
                "replaces": gate["production"],
            },
        }
        entry = find_promoted(registry, name, candidate.key)
        reused = entry is not None
        if entry is None:
            if candidate.kind == "engine":
                entry = commit_entry(candidate, registry, name, annotations)
            else:
                entry = build_checkpoint(
                    candidate,
                    registry,
                    name,
                    annotations,
                    precision=precision,
                    device=device,
                    progress=progress,
                )
        crash_point("committed")
        previous = registry.production(name)
        if previous == entry.version:
            verify_promoted(registry, name, entry.version, candidate, previous)
        else:
            append_history(
                registry,
                name,
                {"event": "promote", "from": previous, "to": entry.version, "gate": str(gate_path)},
            )
            crash_point("logged")
            verify_promoted(registry, name, entry.version, candidate, previous)
            registry.set_production(name, entry.version)
            crash_point("flipped")
    return Promotion(name, entry.version, previous, reused)


def verify_promoted(
    registry: Registry, name: str, version: str, candidate: Candidate, previous: str | None
) -> None:
    """Immediately before the flip: the version, read back from disk, is the gated
    candidate and every file's bytes match its manifest."""
    entry = registry.entry(name, version)
    problem = None
    if promotion_key(entry) != candidate.key:
        problem = "its manifest names another candidate"
    elif candidate.kind == "engine" and entry.digest != candidate.digest:
        problem = "its files are not the ones the gate evaluated"
    else:
        try:
            entry.verify()
        except RegistryError as exc:
            problem = str(exc)
    if problem is not None:
        where = f"production stays {previous}" if previous != version else "it IS production"
        raise PromotionError(
            f"{name} {version} cannot be production: {problem}. Nothing was flipped "
            f"({where}). Move {entry.path} out of the registry and promote again to "
            "register the candidate afresh (or `acepilot rollback` if it is production)"
        )


def commit_entry(
    candidate: Candidate, registry: Registry, name: str, annotations: Mapping[str, Any]
) -> ModelEntry:
    """The evaluated entry, byte for byte, as a new version of `name` with annotations.

    Files are copied (reflinked where possible), never hard-linked, and each copy's
    sha256 is checked: the registry holds its own bytes, verified.
    """
    evaluated = ModelEntry.load(candidate.path)
    if evaluated.digest != candidate.digest:
        raise PromotionError(
            f"{candidate.path}: its files changed since the gate evaluated it (the digest "
            "differs); evaluate and gate it again"
        )
    parity = evaluated.manifest.get("parity", {}).get("status")
    if parity != "passed":
        raise PromotionError(
            f"{candidate.path}: its parity check did not pass (status {parity!r}); "
            "build it with --parity enforce"
        )
    with registry.stage(name) as staging:
        for relative, expected in evaluated.files.items():
            target = staging / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            copy_private(evaluated.file_path(relative), target)
            actual = sha256_file(target)
            if actual != expected:
                raise PromotionError(
                    f"{candidate.path}: model file {relative!r} is corrupt (sha256 {actual}, the "
                    f"gate evaluated {expected}); nothing was registered"
                )
        manifest = {k: v for k, v in evaluated.manifest.items() if k not in COMMIT_FIELDS}
        manifest.update(annotations)
        crash_point("staged")
        return registry.commit(staging, name, manifest)


def build_checkpoint(
    candidate: Candidate,
    registry: Registry,
    name: str,
    annotations: Mapping[str, Any],
    *,
    precision: str,
    device: str,
    progress: bool,
) -> ModelEntry:
    """Build the gated checkpoint: a private copy (in the registry's staging area) whose
    digest matches the gate's, so what is built is what was evaluated, whatever
    happens to the original directory meanwhile."""
    from acepilot.server.build.pipeline import build_model
    from acepilot.training.eval.models import checkpoint_digest, checkpoint_files

    staging_root = registry.root / STAGING
    staging_root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="checkpoint-", dir=staging_root) as temp:
        copy = Path(temp) / "checkpoint"
        try:
            files = checkpoint_files(candidate.path)
        except AcepilotError as exc:
            raise PromotionError(f"the gated checkpoint: {exc}") from None
        for relative, file in files:
            target = copy / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            copy_private(file, target)
        digest = checkpoint_digest(copy)
        if digest != candidate.digest:
            raise PromotionError(
                f"{candidate.path}: the checkpoint changed since the gate evaluated it (digest "
                f"{digest[:12]}, the gate evaluated {candidate.digest[:12]}); evaluate and gate "
                "it again"
            )
        source = {"path": str(candidate.path), "digest": digest}
        return build_model(
            str(copy),
            precision=precision,
            device=device,
            registry=_AnnotatingRegistry(registry.root, annotations, source),
            name=name,
            parity="enforce",
            progress=progress,
        )
