"""Idle prefill in a real `acepilot serve` session (issue 17): the KV cache filled while typing pauses.

The local backend runs the tiny trained CodeGen (tests/engine_fixtures.py); the
workspace folder has a module the edited file imports, so the prompt's head holds
workspace context. The assertions read the engine's own counters through
`acepilot/stats` (tokens reused from the document's KV cache), never the clock.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from lsp_helpers import (
    Stub,
    change,
    get_stats,
    inline,
    open_doc,
    remote_options,
    running_server,
    wait_state,
)

pytestmark = pytest.mark.timeout(600)

GEOMETRY = '''def scale_vector(vector, factor):
    """Multiply each component of `vector` by `factor`."""
    return [component * factor for component in vector]
'''
APP = "from geometry import scale_vector\n\n\ndef main(values):\n    doubled = scale_vector(values, 2)\n"


def local_options(registry: Path, **extra: Any) -> dict[str, Any]:
    return {
        "backend": "local",
        "registry": str(registry),
        "model": "tiny",
        "debounceMs": 0,
        "maxNewTokens": 8,
        "contextTokens": 160,  # the tiny model's window is 256 tokens
        "snippetTokens": 0,
        "threads": 1,
        **extra,
    }


async def wait_for(client: Any, check: Any, what: str, timeout: float = 120) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        stats = await get_stats(client)
        if check(stats):
            return stats
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{what} within {timeout} s: {stats}")
        await asyncio.sleep(0.05)


def workspace(root: Path) -> Path:
    (root / "geometry.py").write_text(GEOMETRY, encoding="utf-8")
    app = root / "app.py"
    app.write_text(APP, encoding="utf-8")
    return app


@pytest.mark.parametrize("idle_ms", [50, 0])
async def test_the_request_after_a_pause_reuses_what_the_idle_prefill_fed(
    idle_ms: int, built_tiny_registry: Path, tmp_path: Path
) -> None:
    """The user opens app.py and types a line, then pauses: no completion was asked for yet,
    so the document's KV cache is empty. With idle prefill the first request reuses the
    prompt's head (context + header + lines above); without it, it starts cold."""
    app = workspace(tmp_path)
    options = local_options(built_tiny_registry, idlePrefillMs=idle_ms)
    async with running_server("visual_studio_code", options, tmp_path) as (client, _, statuses):
        await wait_state(statuses, "ready", 300)
        await wait_for(
            client,
            lambda s: not s["workspace"]["indexing"] and s["workspace"]["files"] == 2,
            "indexed",
        )
        uri = app.as_uri()
        open_doc(client, uri, APP)
        client.text_document_did_change(change(uri, 2, (5, 0), (5, 0), "    return dou"))
        if idle_ms:
            stats = await wait_for(
                client, lambda s: s["idle_prefill"]["prefilled_tokens"] > 0, "no idle prefill"
            )
            fed = stats["idle_prefill"]["prefilled_tokens"]
        else:
            await asyncio.sleep(1.0)  # a pause, with idle prefill off
            assert (await get_stats(client))["idle_prefill"]["runs"] == 0
        await inline(client, uri, 5, 14)
        stats = await get_stats(client)
        [generation] = stats["recent_generations"]
        assert stats["workspace"]["last_chunks"] >= 1  # the prompt's head has workspace context
        if idle_ms:
            assert generation["reused_tokens"] >= fed - 1 > 0
            assert generation["prefilled_tokens"] < generation["prompt_tokens"] - fed + 2
        else:
            assert generation["reused_tokens"] == 0


async def test_no_idle_prefill_with_a_remote_backend(stub: Stub, tmp_path: Path) -> None:
    """The remote server keeps its own cache: a pause sends it nothing."""
    app = workspace(tmp_path)
    options = remote_options(stub, idlePrefillMs=20)
    async with running_server("visual_studio_code", options, tmp_path) as (client, _, _):
        uri = app.as_uri()
        open_doc(client, uri, APP)
        client.text_document_did_change(change(uri, 2, (5, 0), (5, 0), "    return dou"))
        await asyncio.sleep(0.5)
        assert (await get_stats(client))["idle_prefill"]["runs"] == 0
        assert stub.bodies == []
        await inline(client, uri, 5, 14)
        assert len(stub.bodies) == 1  # only the request itself
