"""Fixtures of the team-server tests (tests/server/team/); the helpers are in team_helpers.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from engine_fixtures import built_tiny_entry, built_tiny_registry  # noqa: F401
from team_helpers import copy_registry


@pytest.fixture(scope="module")
def team_registry(
    built_tiny_registry: Path,  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    """A registry of this module's own, holding `tiny` v1 (production) and no tokens."""
    return copy_registry(built_tiny_registry, tmp_path_factory.mktemp("team") / "registry")
