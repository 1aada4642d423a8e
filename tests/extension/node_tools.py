"""Helpers of the extension tests: run npm and friends, hash inputs, lock shared caches."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# npm's messages when the registry cannot be reached: a missing prerequisite, not a failure
NETWORK_ERRORS = ("ENOTFOUND", "EAI_AGAIN", "ECONNREFUSED", "ETIMEDOUT", "ENETUNREACH")


def run_logged(
    command: list[str], cwd: Path, timeout: float, env: dict[str, str] | None = None
) -> str:
    """Run; on failure skip if the npm registry is unreachable, else fail with the output."""
    proc = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    output = proc.stdout + proc.stderr
    if proc.returncode != 0:
        if any(code in output for code in NETWORK_ERRORS):
            pytest.skip(f"`{' '.join(command)}` cannot reach the npm registry: {output[-400:]}")
        pytest.fail(f"`{' '.join(command)}` failed ({proc.returncode}):\n{output[-4000:]}")
    return output


def digest(paths: list[Path]) -> str:
    """A hash of files and directory trees (names and contents): 'did the inputs change?'."""
    sha = hashlib.sha256()
    for path in paths:
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in files:
            sha.update(str(file.relative_to(ROOT)).encode())
            sha.update(file.read_bytes())
    return sha.hexdigest()


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive file lock: parallel pytest workers install and package once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def artifacts_dir(factory: pytest.TempPathFactory, name: str) -> Path:
    """Where a browser test keeps its screenshots and logs: $ACEPILOT_TEST_ARTIFACTS/name
    (CI collects it), else a temporary folder."""
    root = os.environ.get("ACEPILOT_TEST_ARTIFACTS")
    base = Path(root) if root else factory.mktemp("artifacts")
    path = base / name
    path.mkdir(parents=True, exist_ok=True)
    return path
