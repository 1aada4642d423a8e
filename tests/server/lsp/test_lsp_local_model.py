"""End to end with the local backend: the real server runs the tiny trained CodeGen (ONNX).

The registry entry is built once per session from tests/conftest.py's
`trained_codegen_dir` (tests/engine_fixtures.py). Checks: the model loads with
workDoneProgress and an `acepilot/status` ready notification, inline
completion returns the model's text with an exact range under both client
capability sets, the engine's KV cache is reused across keystrokes, and
$/cancelRequest stops a long generation.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from lsp_helpers import (
    CLIENTS,
    change,
    get_stats,
    inline,
    items_of,
    open_doc,
    running_server,
    status_field,
    wait_state,
)
from lsprotocol import types
from pygls.exceptions import JsonRpcException

from acepilot.server.protocol import STATS

pytestmark = pytest.mark.timeout(900)
TINY_NAME = "tiny"  # tests/engine_fixtures.py registers the model under this name

SOURCE = (
    "def add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n    return a - b\n\n\ndef mul(a, b):\n"
)


def local_options(registry: Path, **extra: Any) -> dict[str, Any]:
    return {
        "backend": "local",
        "registry": str(registry),
        "model": TINY_NAME,
        "debounceMs": 0,
        "maxNewTokens": 24,
        "threads": 1,
        **extra,
    }


@pytest.mark.parametrize("client_name", CLIENTS)
async def test_inline_completion_from_the_tiny_model(
    client_name: str,
    built_tiny_registry: Path,
    tmp_path: Path,
) -> None:
    options = local_options(built_tiny_registry)
    async with running_server(client_name, options, tmp_path) as (client, result, statuses):
        assert result.capabilities.inline_completion_provider is not None
        ready = await wait_state(statuses, "ready", 300)
        assert status_field(ready, "backend") == "local"
        assert status_field(ready, "model") == f"{TINY_NAME} v1"
        assert status_field(ready, "device") == "cpu"
        # the load was shown as work-done progress (both clients support it)
        reports = [
            r for token, rs in client.progress_reports.items() if "load" in str(token) for r in rs
        ]
        assert [type(r).__name__ for r in reports] == [
            "WorkDoneProgressBegin",
            "WorkDoneProgressEnd",
        ]

        uri = (tmp_path / "ops.py").as_uri()
        open_doc(client, uri, SOURCE)
        items = items_of(await inline(client, uri, 8, 14))
        stats = await client.protocol.send_request_async(STATS, {})
        assert status_field(stats, "model_requests") == 1
        for item in items:  # the tiny model may or may not say something worth showing
            assert item.range == types.Range(types.Position(8, 14), types.Position(8, 14))
            assert item.insert_text.strip()
        # a keystroke later: the engine reuses the document's KV cache
        client.text_document_did_change(change(uri, 2, (8, 14), (8, 14), "\n    res"))
        await inline(client, uri, 9, 7)
        stats = await client.protocol.send_request_async(STATS, {})
        prompt_tokens = status_field(stats, "prompt_tokens")
        prefilled = status_field(stats, "prefilled_tokens")
        assert status_field(stats, "model_requests") == 2
        assert prefilled < prompt_tokens  # the second prompt was mostly in the cache


async def test_model_text_reaches_the_editor(built_tiny_registry: Path, tmp_path: Path) -> None:
    """The item's text is the model's own continuation (greedy, post-processed)."""
    from acepilot.server.engine import Engine, GenerationParams
    from acepilot.server.registry import Registry

    engine = Engine.load(Registry(built_tiny_registry).resolve(TINY_NAME), threads=1)
    options = local_options(built_tiny_registry, contextTokens=256, snippetTokens=0)
    text = "x = 1\ny = "
    async with running_server("visual_studio_code", options, tmp_path) as (client, _, statuses):
        await wait_state(statuses, "ready", 300)
        uri = (tmp_path / "m.py").as_uri()
        open_doc(client, uri, text)
        items = items_of(await inline(client, uri, 1, 4))
    prompt = "# Path: m.py\n# Language: python\n" + text
    expected = engine.generate(
        prompt, GenerationParams(max_new_tokens=24, stop=("\n",))
    ).text.rstrip()
    if expected.strip():
        assert [item.insert_text for item in items] == [expected]
    else:
        assert items == []


LONG = 450  # max new tokens: greedy, the tiny model fills them all after "def f():"


async def generation_of(client: Any, index: int) -> dict[str, Any]:
    """The index-th finished generation in `acepilot/stats` (waits for it)."""
    for _ in range(1000):
        stats = await get_stats(client)
        if len(stats["recent_generations"]) > index:
            record: dict[str, Any] = stats["recent_generations"][index]
            return record
        await asyncio.sleep(0.01)
    raise AssertionError("the generation never finished")


async def decoding_began(client: Any, done_before: int) -> bool:
    """True once the server decodes; False if the generation finished before we saw it."""
    while True:
        stats = await get_stats(client)
        if stats["in_flight_tokens"] > 0:
            return True
        if len(stats["recent_generations"]) > done_before:
            return False
        await asyncio.sleep(0.001)


@pytest.mark.parametrize("how", ["cancelRequest", "superseded"])
async def test_cancel_stops_local_generation(
    how: str, built_tiny_registry: Path, tmp_path: Path
) -> None:
    """A long greedy generation, cut by $/cancelRequest or a newer request, stops early."""
    options = local_options(built_tiny_registry, maxNewTokens=LONG, maxLines=500, timeoutMs=0)
    async with running_server("visual_studio_code", options, tmp_path) as (client, _, statuses):
        await wait_state(statuses, "ready", 300)
        # Control: uncancelled, this prompt runs to max tokens (the block never closes).
        uri = (tmp_path / "long.py").as_uri()
        open_doc(client, uri, "def f():\n")
        await inline(client, uri, 0, 8)
        record = await generation_of(client, 0)
        assert record["finish_reason"] == "length" and record["generated_tokens"] == LONG

        # The same prompt again (greedy: the same long text), with the document reopened
        # (no typing-ahead) and another max_tokens (no cache hit): the model runs again.
        # On a loaded machine the whole generation can end between two polls; then it
        # is not cancellable any more and the attempt is repeated.
        for attempt in range(5):
            client.text_document_did_close(
                types.DidCloseTextDocumentParams(types.TextDocumentIdentifier(uri))
            )
            client.workspace_did_change_configuration(
                types.DidChangeConfigurationParams(
                    settings={"acepilot": {"maxNewTokens": LONG - 1 - attempt}}
                )
            )
            open_doc(client, uri, "def f():\n")
            done_before = len((await get_stats(client))["recent_generations"])
            params = types.InlineCompletionParams(
                context=types.InlineCompletionContext(
                    trigger_kind=types.InlineCompletionTriggerKind.Invoked
                ),
                text_document=types.TextDocumentIdentifier(uri),
                position=types.Position(0, 8),
            )
            msg_id = f"long-{attempt}"
            future = client.protocol.send_request(
                types.TEXT_DOCUMENT_INLINE_COMPLETION, params, msg_id=msg_id
            )
            if await decoding_began(client, done_before):
                break
            await asyncio.wrap_future(future)
        else:
            raise AssertionError("every long generation ended before it could be cancelled")
        if how == "cancelRequest":
            client.protocol.notify(types.CANCEL_REQUEST, types.CancelParams(id=msg_id))
            with pytest.raises(JsonRpcException) as info:
                await asyncio.wait_for(asyncio.wrap_future(future), 10)
            assert "cancel" in str(info.value).lower()
        else:
            await inline(client, uri, 0, 3)  # mid-line: a short single-line request
            assert items_of(await asyncio.wait_for(asyncio.wrap_future(future), 10)) == []
        record = await generation_of(client, done_before)
        assert record["finish_reason"] == "cancelled"
        assert 0 < record["generated_tokens"] < LONG // 2, record  # stopped well before max
        stats = await get_stats(client)
        assert stats["cancelled"] >= 1
        # the engine is free again at once: a short request completes quickly
        client.workspace_did_change_configuration(
            types.DidChangeConfigurationParams(settings={"acepilot": {"maxNewTokens": 4}})
        )
        started = time.monotonic()
        await inline(client, uri, 0, 0)
        assert time.monotonic() - started < 10
        assert (await get_stats(client))["model_requests"] == stats["model_requests"] + 1


async def test_kv_reuse_can_be_turned_off(built_tiny_registry: Path, tmp_path: Path) -> None:
    """kvReuse false: every prompt is prefilled in full (bench/typing_replay.py compares both)."""
    options = local_options(built_tiny_registry, kvReuse=False, maxNewTokens=4)
    async with running_server("visual_studio_code", options, tmp_path) as (client, _, statuses):
        await wait_state(statuses, "ready", 300)
        uri = (tmp_path / "ops.py").as_uri()
        open_doc(client, uri, SOURCE)
        await inline(client, uri, 8, 14)
        await inline(client, uri, 7, 0)
        stats = await get_stats(client)
        assert [g["reused_tokens"] for g in stats["recent_generations"]] == [0, 0]
        assert stats["prefilled_tokens"] == stats["prompt_tokens"] > 0
        # Per request: what answered it, how long it took, how its generation ended.
        requests = stats["recent_requests"]
        assert [r["source"] for r in requests] == ["model", "model"]
        for request, generation in zip(requests, stats["recent_generations"], strict=True):
            assert request["generated_tokens"] == generation["generated_tokens"] <= 4
            assert request["finish_reason"] == generation["finish_reason"] != "cancelled"
            assert request["total_ms"] > 0


def add_version(registry: Path, source: str, version: str, damage: bool = False) -> None:
    """Register a copy of `source` as `version` (as a promotion would); `damage` flips a
    byte of the graph, so its sha256 no longer matches the manifest."""
    import json
    import shutil

    target = registry / TINY_NAME / version
    shutil.copytree(registry / TINY_NAME / source, target)
    manifest = json.loads((target / "manifest.json").read_text())
    manifest["version"] = version
    (target / "manifest.json").write_text(json.dumps(manifest))
    if damage:
        graph = target / "model.onnx"
        data = bytearray(graph.read_bytes())
        data[len(data) // 2] ^= 0xFF
        graph.write_bytes(bytes(data))


async def wait_model(statuses: list[Any], model: str, timeout: float = 120, since: int = 0) -> None:
    """Wait for a ready status naming `model` among statuses[since:]."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(
            status_field(s, "state") == "ready" and status_field(s, "model") == model
            for s in statuses[since:]
        ):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"never served {model!r}: {statuses}")


async def test_a_running_server_follows_promotion_and_rollback(
    built_tiny_registry: Path, tmp_path: Path
) -> None:
    """The production pointer moves (promote, rollback): the running server swaps to the
    version it names; a version that fails its sha256 check is refused with a message and
    the old one keeps serving."""
    import shutil

    from acepilot.server.registry import Registry

    registry = tmp_path / "registry"
    shutil.copytree(built_tiny_registry, registry)
    options = local_options(registry)
    async with running_server("visual_studio_code", options, tmp_path) as (client, _, statuses):
        await wait_model(statuses, f"{TINY_NAME} v1", 300)
        uri = (tmp_path / "ops.py").as_uri()
        open_doc(client, uri, SOURCE)

        add_version(registry, "v1", "v2")
        Registry(registry).set_production(TINY_NAME, "v2")  # a promotion
        await wait_model(statuses, f"{TINY_NAME} v2")
        await inline(client, uri, 8, 14)  # served by v2
        stats = await get_stats(client)
        assert status_field(stats, "model_requests") == 1

        add_version(registry, "v2", "v3", damage=True)
        Registry(registry).set_production(TINY_NAME, "v3")  # a corrupt promotion
        for _ in range(600):
            if any("v3" in m.message and "cannot be loaded" in m.message for m in client.messages):
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError(f"no refusal message: {client.messages}")
        assert not any(status_field(s, "model") == f"{TINY_NAME} v3" for s in statuses)
        other = (tmp_path / "more.py").as_uri()  # a new position: the model is asked
        open_doc(client, other, SOURCE)
        await inline(client, other, 8, 14)  # v2 still serves
        assert status_field(await get_stats(client), "model_requests") == 2

        Registry(registry).set_production(TINY_NAME, "v1")  # a rollback
        await wait_model(statuses, f"{TINY_NAME} v1", since=len(statuses))
