"""`acepilot promote` and `acepilot rollback`: a gated model becomes production, atomically.

Promotion, in steps (each a crash point; see `CRASH_ENV`):

1. `gate-checked`: gate.json says promote; the candidate it names is found.
2. `staged`: the model is in a registry staging directory. A candidate
   evaluated through the engine (a registry entry, e.g. in the evaluation's
   scratch registry) is exactly what was measured: its files are verified
   (sha256) and linked or copied, and its parity record must say passed. A
   raw checkpoint is built with `build_model` (parity gate enforced).
3. `committed`: `Registry.commit` renamed it into the next version, with
   `evaluation` (the candidate's HumanEval summary), `gate` (the decision)
   and `promotion` (the candidate key, the gate path) in its manifest.
4. `logged`: the intent "production: old -> new" is appended (fsync'd) to
   `<registry>/<name>/promotions.jsonl`.
5. `flipped`: `Registry.set_production` replaced the pointer (os.replace):
   running servers resolve the new version from now on.

A crash before step 5 leaves production where it was, and the registry has
either no new version or a complete one (the rename is atomic). Running the
same promotion again resumes: a committed version carrying the same
candidate key is reused instead of built twice, and a pointer already moved
is left alone.

The history file is the rollback stack. An event counts only if what came
after it saw its result (the next event's "from", or the current pointer,
equals its "to"): an intent logged just before a crash is ignored.
`rollback` flips production to the version before the current one.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import signal
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from acepilot.server.errors import AcepilotError
from acepilot.server.registry import ModelEntry, Registry
from acepilot.training.eval.gate import load_gate

log = logging.getLogger(__name__)

CRASH_ENV = "ACEPILOT_PROMOTE_CRASH_AT"
STEPS = ("gate-checked", "staged", "committed", "logged", "flipped")
HISTORY = "promotions.jsonl"
LOCK = ".promote.lock"
# Written by Registry.commit itself; never copied from the evaluated entry.
COMMIT_FIELDS = ("files", "name", "version", "created", "acepilot_version", "format")


class PromotionError(AcepilotError):
    """The gate did not pass, the candidate is not the one gated, or nothing to roll back to."""


def crash_point(step: str) -> None:
    """Test hook: SIGKILL this process at `step` when $ACEPILOT_PROMOTE_CRASH_AT names it."""
    if os.environ.get(CRASH_ENV) == step:
        log.warning("crash hook: killing the process at step %s", step)
        os.kill(os.getpid(), signal.SIGKILL)


@contextlib.contextmanager
def name_lock(registry: Registry, name: str) -> Iterator[None]:
    """One promotion or rollback of a name at a time (an flock, released on crash)."""
    directory = registry.root / name
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / LOCK).open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def candidate_key(candidate: Mapping[str, Any]) -> str:
    """What identifies the gated model: its files' hashes (entry) or its checkpoint's."""
    model = candidate.get("model", {})
    if model.get("kind") == "engine":
        basis: Any = sorted(dict(model["files"]).items())
    elif model.get("kind") == "torch":
        basis = checkpoint_fingerprint(Path(model["path"]))
    else:
        raise PromotionError(
            f"the gate's candidate is a {model.get('kind')!r} evaluation, not a model "
            "(evaluate a registry entry or a checkpoint directory)"
        )
    return hashlib.sha256(json.dumps(basis).encode()).hexdigest()


def checkpoint_fingerprint(path: Path) -> list[tuple[str, str]]:
    if not path.is_dir():
        raise PromotionError(f"{path}: the gated checkpoint directory is gone")
    found = []
    for file in sorted(path.iterdir()):
        if file.is_file() and file.suffix in (".json", ".safetensors", ".bin", ".txt", ".model"):
            digest = hashlib.sha256(file.read_bytes()).hexdigest()
            found.append((file.name, digest))
    return found


def append_history(registry: Registry, name: str, event: dict[str, Any]) -> None:
    path = registry.root / name / HISTORY
    line = json.dumps({**event, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    with path.open("a", encoding="utf-8") as handle:
        handle.write(line + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def read_history(registry: Registry, name: str) -> list[dict[str, Any]]:
    path = registry.root / name / HISTORY
    events = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    for number, line in enumerate(lines, 1):
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            log.warning("%s:%d: unreadable line ignored (a crash mid-write?)", path, number)
            continue
        if isinstance(event, dict) and event.get("event") in ("promote", "rollback"):
            events.append(event)
    return events


def effective_history(events: list[dict[str, Any]], current: str | None) -> list[dict[str, Any]]:
    """Events that took effect: the next event (or the pointer now) starts where they ended."""
    kept = []
    for index, event in enumerate(events):
        after = events[index + 1]["from"] if index + 1 < len(events) else current
        if event.get("to") == after:
            kept.append(event)
    return kept


def rollback_target(registry: Registry, name: str) -> str | None:
    current = registry.production(name)
    stack: list[str | None] = []
    for event in effective_history(read_history(registry, name), current):
        if event["event"] == "promote":
            stack.append(event["from"])
        elif stack and stack[-1] == event["to"]:
            stack.pop()
        else:
            stack.append(event["from"])
    return stack[-1] if stack else None


class _AnnotatingRegistry(Registry):
    """A Registry whose commits add fields to the manifest and that leaves the
    production pointer to the promotion (build_model sets it for a first model)."""

    def __init__(self, root: Path, extra: Mapping[str, Any]) -> None:
        super().__init__(root)
        self.extra = dict(extra)

    def commit(self, staging_dir: Path, name: str, manifest: Mapping[str, Any]) -> ModelEntry:
        crash_point("staged")
        return super().commit(staging_dir, name, {**manifest, **self.extra})

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
        if entry.manifest.get("promotion", {}).get("candidate_key") == key:
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
    gate = load_gate(gate_path)
    if not gate["promote"]:
        raise PromotionError(
            "the gate rejected this candidate: " + "; ".join(gate.get("reasons", []))
        )
    key = candidate_key(gate["candidate"])
    model = gate["candidate"]["model"]
    with name_lock(registry, name):
        crash_point("gate-checked")
        annotations = {
            "evaluation": evaluation_record(gate),
            "gate": {k: v for k, v in gate.items() if k != "candidate"},
            "promotion": {
                "candidate_key": key,
                "gate_path": str(Path(gate_path).resolve()),
                "candidate": model.get("path"),
            },
        }
        entry = find_promoted(registry, name, key)
        reused = entry is not None
        if entry is None:
            if model["kind"] == "engine":
                entry = commit_entry(
                    Path(model["path"]), dict(model["files"]), registry, name, annotations
                )
            else:
                from acepilot.server.build.pipeline import build_model

                entry = build_model(
                    str(model["path"]),
                    precision=precision,
                    device=device,
                    registry=_AnnotatingRegistry(registry.root, annotations),
                    name=name,
                    parity="enforce",
                    progress=progress,
                )
        crash_point("committed")
        previous = registry.production(name)
        if previous != entry.version:
            append_history(
                registry,
                name,
                {"event": "promote", "from": previous, "to": entry.version, "gate": str(gate_path)},
            )
            crash_point("logged")
            registry.set_production(name, entry.version)
            crash_point("flipped")
    return Promotion(name, entry.version, previous, reused)


def commit_entry(
    source: Path,
    files: Mapping[str, str],
    registry: Registry,
    name: str,
    annotations: Mapping[str, Any],
) -> ModelEntry:
    """The evaluated entry, byte for byte, as a new version of `name` with annotations."""
    evaluated = ModelEntry.load(source)
    if evaluated.files != dict(files):
        raise PromotionError(
            f"{source}: its files changed since the gate evaluated it (sha256 differs)"
        )
    evaluated.verify()
    parity = evaluated.manifest.get("parity", {}).get("status")
    if parity != "passed":
        raise PromotionError(
            f"{source}: its parity check did not pass (status {parity!r}); "
            "build it with --parity enforce"
        )
    with registry.stage(name) as staging:
        for relative in evaluated.files:
            target = staging / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(evaluated.file_path(relative), target)  # immutable files: share them
            except OSError:
                shutil.copy2(evaluated.file_path(relative), target)
        manifest = {k: v for k, v in evaluated.manifest.items() if k not in COMMIT_FIELDS}
        manifest.update(annotations)
        crash_point("staged")
        return registry.commit(staging, name, manifest)


def rollback(registry: Registry, name: str, to: str | None = None) -> tuple[str | None, str]:
    """Point production back at the previous version (or `to`); returns (from, to)."""
    with name_lock(registry, name):
        current = registry.production(name)
        target = to or rollback_target(registry, name)
        if target is None:
            raise PromotionError(
                f"model {name!r}: no earlier production version in {HISTORY} to roll back to "
                "(name one with --to)"
            )
        if target == current:
            raise PromotionError(f"model {name!r}: {target} is already production")
        registry.entry(name, target).verify()  # never roll back onto a broken entry
        append_history(registry, name, {"event": "rollback", "from": current, "to": target})
        registry.set_production(name, target)
    return current, target
