"""The production follower shared by the language server and the team server."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from test_registry import commit_fake

from acepilot.server.errors import RegistryError
from acepilot.server.production import PRODUCTION, ProductionFollower, default_model
from acepilot.server.registry import Registry


def touch_pointer(root: Path, name: str, version: str) -> None:
    """Write the pointer with a new mtime (what promote/rollback do)."""
    pointer = root / name / PRODUCTION
    pointer.write_text(version + "\n")
    stat = pointer.stat()
    os.utime(pointer, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))


def test_follows_promotion_and_rollback(tmp_path: Path) -> None:
    registry = Registry(tmp_path)
    commit_fake(registry)
    commit_fake(registry, payload=b"v2")
    registry.set_production("tiny", "v1")
    follower = ProductionFollower(registry, "tiny", serving="v1")
    assert follower.poll() is None  # production is what is served
    touch_pointer(tmp_path, "tiny", "v2")
    entry = follower.poll()
    assert entry is not None and entry.version == "v2"
    follower.accept(entry)
    assert follower.poll() is None
    touch_pointer(tmp_path, "tiny", "v1")
    back = follower.poll()
    assert back is not None and back.version == "v1"


def test_a_refused_version_waits_for_the_next_pointer_write(tmp_path: Path) -> None:
    registry = Registry(tmp_path)
    commit_fake(registry)
    commit_fake(registry, payload=b"v2")
    registry.set_production("tiny", "v1")
    follower = ProductionFollower(registry, "tiny", serving="v1")
    touch_pointer(tmp_path, "tiny", "v2")
    entry = follower.poll()
    assert entry is not None
    follower.refuse(entry)  # it failed to load
    assert follower.poll() is None and follower.poll() is None
    touch_pointer(tmp_path, "tiny", "v2")  # promoted again: one more try
    assert follower.poll() is not None


def test_a_corrupt_pointer_is_reported_once_per_write(tmp_path: Path) -> None:
    registry = Registry(tmp_path)
    commit_fake(registry)
    registry.set_production("tiny", "v1")
    follower = ProductionFollower(registry, "tiny", serving="v1")
    touch_pointer(tmp_path, "tiny", "garbage")
    with pytest.raises(RegistryError):
        follower.poll()
    assert follower.poll() is None  # said once; the old version keeps serving


def test_default_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ACEPILOT_MODEL", raising=False)
    registry = Registry(tmp_path)
    with pytest.raises(RegistryError, match=r"no models in the registry .*, or pass --model"):
        default_model(registry, None, "pass --model")
    commit_fake(registry)
    assert default_model(registry, None, "x") == "tiny"
    assert default_model(registry, "other", "x") == "other"
    monkeypatch.setenv("ACEPILOT_MODEL", "env")
    assert default_model(registry, None, "x") == "env"
    monkeypatch.delenv("ACEPILOT_MODEL")
    commit_fake(registry, name="second")
    with pytest.raises(RegistryError, match=r"several models .*: set acepilot\.model"):
        default_model(registry, None, "set acepilot.model")
