"""The promotion history of the served model, for the dashboard: who became production, and why.

Read from `<registry>/<name>/promotions.jsonl`, the log that `acepilot promote`
and `acepilot rollback` append to (acepilot/training/eval/promotion.py; the
server does not import training, so the few fields are read here), and each
promoted version's manifest, where promotion recorded the gate's decision.
Only the end of the file is read (the last `limit` events): the page stays
cheap however long the history.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from acepilot.server.registry import VERSION, Registry

HISTORY = "promotions.jsonl"
TAIL_BYTES = 256 * 1024
MAX_MANIFEST_BYTES = 4 * 1024 * 1024

log = logging.getLogger(__name__)


def _tail_lines(path: Path) -> list[str]:
    try:
        with path.open("rb") as handle:
            handle.seek(0, 2)
            size = handle.tell()
            handle.seek(max(0, size - TAIL_BYTES))
            data = handle.read()
    except FileNotFoundError:
        return []
    lines = data.decode("utf-8", errors="replace").splitlines()
    return lines[1:] if size > TAIL_BYTES else lines  # the first may be cut


def _gate(registry: Registry, name: str, version: str) -> dict[str, Any]:
    """The gate's verdict recorded in a version's manifest (empty for a first or manual build).

    The manifest is read as JSON, not loaded as a registry entry: only its `gate`
    record is needed, and a version that no longer loads still has a history."""
    if not VERSION.match(version):
        return {}
    path = registry.root / name / version / "manifest.json"
    try:
        if path.stat().st_size > MAX_MANIFEST_BYTES:
            return {}
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(manifest, dict):
        return {}
    gate = manifest.get("gate")
    if not isinstance(gate, dict):
        return {}
    reasons = gate.get("reasons")
    target = gate.get("target") if isinstance(gate.get("target"), dict) else None
    return {
        "decision": str(gate.get("decision", "")),
        "reason": str(reasons[0]) if isinstance(reasons, list) and reasons else "",
        "target": target,
    }


def history(registry: Registry, name: str, limit: int = 20) -> list[dict[str, Any]]:
    """The last `limit` promotions and rollbacks of `name`, newest first, with verdicts."""
    events: list[dict[str, Any]] = []
    for line in _tail_lines(registry.root / name / HISTORY):
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue  # a crash mid-write: promotion.py ignores it too
        if not isinstance(event, dict) or event.get("event") not in ("promote", "rollback"):
            continue
        to = str(event.get("to") or "")
        entry = {
            "time": str(event.get("time", "")),
            "event": str(event["event"]),
            "from": str(event.get("from") or ""),
            "to": to,
            "gate": _gate(registry, name, to) if event["event"] == "promote" and to else {},
        }
        events.append(entry)
    return events[-limit:][::-1]
