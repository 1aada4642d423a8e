"""Fixtures of the language-server tests (tests/server/lsp/); the helpers are in lsp_helpers.py."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
from lsp_helpers import Stub

# The tiny model's registry (needs the build extra: torch); the local-backend tests use it.
with contextlib.suppress(ImportError):
    from engine_fixtures import built_tiny_registry  # noqa: F401


@pytest.fixture
def stub() -> Iterator[Stub]:
    server = Stub()
    yield server
    server.close()
