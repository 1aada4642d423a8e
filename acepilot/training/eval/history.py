"""A name's production history: promotions.jsonl, the name's lock, and rollback.

Every flip of a name's production pointer (a promotion, a rollback) is first
appended to `<registry>/<name>/promotions.jsonl` (fsynced), under an flock
that lets one promotion or rollback of a name run at a time. `rollback`
walks the events that took effect back to the version production had before
(or goes to the version named), verifying it first. promotion.py writes the
promote events; `acepilot rollback` and the pipeline call `rollback`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import time
from collections.abc import Iterator
from typing import Any

from acepilot.server.errors import AcepilotError
from acepilot.server.registry import Registry, check_name

log = logging.getLogger(__name__)

HISTORY = "promotions.jsonl"
LOCK = ".promote.lock"


class PromotionError(AcepilotError):
    """The gate did not pass, is stale, or does not match what it names; or nothing to roll back to."""


@contextlib.contextmanager
def name_lock(registry: Registry, name: str) -> Iterator[None]:
    """One promotion or rollback of a name at a time (an flock, released on crash)."""
    directory = registry.root / check_name(name)  # never a directory outside the registry
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / LOCK).open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


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


__all__ = [
    "HISTORY",
    "PromotionError",
    "append_history",
    "name_lock",
    "read_history",
    "rollback",
    "rollback_target",
]
