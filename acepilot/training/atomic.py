"""Directories built once, atomically, safe across processes (test fixtures, bootstrap stages).

A build fills a fresh temporary directory next to its target, which is then
renamed into place: the target exists only when complete, and a killed build
leaves only a `*.tmp-*` directory that the next build removes. A file lock
(`target.lock`) makes parallel test workers or commands wait for one another
instead of building twice.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def build_once(target: Path, build: Callable[[Path], object]) -> Path:
    """Make `target` with `build(tmp_dir)` unless it exists; atomic and process-safe."""
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(target):
        if target.is_dir():
            return target
        replace_atomically(target, build)
    return target


def file_lock(target: Path) -> Any:
    """The lock that guards `target` (`target.lock` beside it), for `with`."""
    from filelock import FileLock

    return FileLock(str(target.parent / f"{target.name}.lock"))


def replace_atomically(target: Path, build: Callable[[Path], object]) -> None:
    """Build into a sibling temp dir and rename it over `target`; the caller holds the lock."""
    for stale in target.parent.glob(f"{target.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)  # left by a killed build (we hold the lock)
    tmp = Path(tempfile.mkdtemp(prefix=f"{target.name}.tmp-", dir=target.parent))
    try:
        build(tmp)
        if target.exists():
            old = target.parent / f"{target.name}.tmp-old"
            target.rename(old)
            shutil.rmtree(old)
        tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


__all__ = ["build_once", "file_lock", "replace_atomically"]
