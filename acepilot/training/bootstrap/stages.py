"""The work dir's stages: a directory each, done when its record has the expected key.

Every stage's key hashes the settings it depends on (config.py's `*_FIELDS`)
and the keys of the stages before it, so a rerun skips finished stages and a
changed setting redoes exactly what it affects. A stage is built in a temp
dir and renamed into place: it exists only when complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from acepilot.training.atomic import replace_atomically

STAGE_RECORD = "stage.json"


def stable_hash(value: object) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def read_json(path: Path, default: Any = None) -> Any:
    try:
        return json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return default


class Stage:
    """One stage's directory in the work dir, done when its record has the expected key."""

    def __init__(self, work: Path, name: str, key: str) -> None:
        self.name, self.key = name, key
        self.path = work / name

    def record(self) -> dict[str, Any] | None:
        data = read_json(self.path / STAGE_RECORD)
        return data if isinstance(data, dict) and data.get("key") == self.key else None

    def done(self) -> bool:
        return self.record() is not None

    def finish(self, info: dict[str, Any]) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        text = json.dumps({"key": self.key, **info}, indent=2, default=str) + "\n"
        tmp = self.path / f".{STAGE_RECORD}.tmp"
        tmp.write_text(text, "utf-8")
        os.replace(tmp, self.path / STAGE_RECORD)

    def build_atomically(self, build: Callable[[Path], dict[str, Any]]) -> dict[str, Any]:
        """Fill a fresh temp dir with `build`, record it, swap it into place."""
        info: dict[str, Any] = {}

        def run(tmp: Path) -> None:
            info.update(build(tmp))
            (tmp / STAGE_RECORD).write_text(
                json.dumps({"key": self.key, **info}, indent=2, default=str) + "\n", "utf-8"
            )

        replace_atomically(self.path, run)
        return info


def say(message: str, quiet: bool) -> None:
    if not quiet:
        print(message, file=sys.stderr, flush=True)


__all__ = ["STAGE_RECORD", "Stage", "read_json", "say", "stable_hash"]
