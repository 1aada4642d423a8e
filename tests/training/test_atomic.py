"""Directories built once: one build for concurrent callers, nothing left by a failed one."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from acepilot.training.atomic import build_once


def test_build_once_builds_once_atomically(tmp_path: Path) -> None:
    calls: list[int] = []

    def slow_build(out: Path) -> None:
        calls.append(1)
        time.sleep(0.3)
        (out / "done").write_text("yes")

    target = tmp_path / "thing"
    threads = [threading.Thread(target=build_once, args=(target, slow_build)) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert calls == [1]
    assert (target / "done").read_text() == "yes"

    def failing_build(out: Path) -> None:
        (out / "partial").write_text("half")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        build_once(tmp_path / "broken", failing_build)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.lock", "thing", "thing.lock"]
