"""Fixtures of the VS Code extension tests: the Node toolchain and caches outside the repo."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from node_tools import ROOT, locked, run_logged


@pytest.fixture(scope="session")
def e2e_cache() -> Path:
    """$ACEPILOT_E2E_CACHE or ~/.cache/acepilot-e2e: code-server and the install locks."""
    root = os.environ.get("ACEPILOT_E2E_CACHE")
    path = Path(root).expanduser() if root else Path.home() / ".cache" / "acepilot-e2e"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def node_modules(e2e_cache: Path) -> Path:
    """`npm ci` at the repository root (node_modules is git-ignored), again only when
    package-lock.json is newer than npm's record of the installed tree (as `make
    extension-lint` decides)."""
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (Node 20+ is needed for the extension)")
    lock = ROOT / "package-lock.json"
    installed = ROOT / "node_modules" / ".package-lock.json"
    with locked(e2e_cache / "npm-ci.lock"):
        if not installed.is_file() or lock.stat().st_mtime > installed.stat().st_mtime:
            run_logged(["npm", "ci", "--no-audit", "--no-fund"], ROOT, 900)
            installed.touch()
    return ROOT / "node_modules"
