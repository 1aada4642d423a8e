"""The remote backend against a real HTTP server on 127.0.0.1 (lsp_helpers.Stub).

Streaming (server-sent events) over one keep-alive connection, FIM through
the API's `suffix` only when the model supports it (remoteFim auto/on/off),
cancellation that closes the stream, and an unreachable server or a refused
token told to the user once, with empty results rather than errors.
"""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path
from typing import Any

import pytest
from lsp_helpers import (
    get_stats,
    inline,
    items_of,
    open_doc,
    remote_options,
    running_server,
    status_field,
)
from lsprotocol import types
from pygls.exceptions import JsonRpcException

pytestmark = pytest.mark.timeout(120)


async def test_streamed_over_one_connection(stub: Any, tmp_path: Path) -> None:
    stub.reply = lambda body: "compute(values, scale=2)"
    stub.chunk_chars = 2  # many events per answer
    async with running_server("visual_studio_code", remote_options(stub), tmp_path) as (
        client,
        _,
        _,
    ):
        uri = (tmp_path / "k.py").as_uri()
        open_doc(client, uri, "a = \nb = \nc = \n")
        for line in range(3):
            items = items_of(await inline(client, uri, line, 4))
            assert [item.insert_text for item in items] == ["compute(values, scale=2)"]
        assert [body["stream"] for body in stub.bodies] == [True, True, True]
        assert len(set(stub.ports)) == 1  # one keep-alive connection for all three
        assert all("suffix" not in body for body in stub.bodies)  # no FIM declared
        assert stub.model_gets == 1  # /v1/models read once
        stats = await get_stats(client)
        assert stats["model_requests"] == 3
        assert stats["prompt_tokens"] == 21  # usage: 7 per answer


@pytest.mark.parametrize(
    ("mode", "declared", "sent", "gets"),
    [
        ("auto", True, True, 1),
        ("auto", False, False, 1),
        ("on", False, True, 0),
        ("off", True, False, 0),
    ],
)
async def test_fim_suffix_only_when_supported(
    mode: str, declared: bool, sent: bool, gets: int, stub: Any, tmp_path: Path
) -> None:
    stub.models = [
        {"id": "other", "object": "model", "acepilot": {"fim": not declared}},
        {"id": "stub", "object": "model", "acepilot": {"fim": declared}},
    ]
    stub.reply = lambda body: "a, b"
    options = remote_options(stub, remoteFim=mode)
    async with running_server("neovim", options, tmp_path) as (client, _, _):
        uri = (tmp_path / "f.py").as_uri()
        open_doc(client, uri, "def f(a, b):\n    return max()\n\nprint(f(1, 2))\n")
        items = items_of(await inline(client, uri, 1, 15))
        assert [item.insert_text for item in items] == ["a, b"]
        body = stub.bodies[-1]
        assert body["prompt"].endswith("def f(a, b):\n    return max(")
        if sent:
            assert body["suffix"] == ")\n\nprint(f(1, 2))\n"
        else:
            assert "suffix" not in body
        assert stub.model_gets == gets


def test_nested_remote_settings_are_accepted() -> None:
    from acepilot.server.lsp.config import Config, update

    config = update(Config(), {"backend": "remote", "remote": {"url": "http://h:1", "fim": "on"}})
    assert config.remote_url == "http://h:1" and config.remote_fim == "on"


@pytest.mark.parametrize("how", ["cancelRequest", "superseded"])
async def test_cancel_closes_the_stream(how: str, stub: Any, tmp_path: Path) -> None:
    stub.reply = lambda body: "x" * 400
    stub.chunk_chars = 1
    stub.chunk_delay = 0.02  # 8 s for the whole answer
    async with running_server("visual_studio_code", remote_options(stub), tmp_path) as (
        client,
        _,
        _,
    ):
        uri = (tmp_path / "c.py").as_uri()
        open_doc(client, uri, "x = \ny = \n")
        params = types.InlineCompletionParams(
            context=types.InlineCompletionContext(
                trigger_kind=types.InlineCompletionTriggerKind.Automatic
            ),
            text_document=types.TextDocumentIdentifier(uri),
            position=types.Position(0, 4),
        )
        future = client.protocol.send_request(
            types.TEXT_DOCUMENT_INLINE_COMPLETION, params, msg_id="long-1"
        )
        while not stub.bodies:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)  # the stream is flowing
        started = time.monotonic()
        if how == "cancelRequest":
            client.protocol.notify(types.CANCEL_REQUEST, types.CancelParams(id="long-1"))
            with pytest.raises(JsonRpcException):
                await asyncio.wait_for(asyncio.wrap_future(future), 5)
        else:
            stub.reply = lambda body: "short"  # streamed at the same slow pace: 0.1 s
            second = items_of(await inline(client, uri, 1, 4))
            assert items_of(await asyncio.wait_for(asyncio.wrap_future(future), 5)) == []
            assert [item.insert_text for item in second] == ["short"]
        while stub.aborted == 0 and time.monotonic() - started < 5:
            await asyncio.sleep(0.02)
        assert stub.aborted == 1  # the server closed the connection: the stream stopped
        assert time.monotonic() - started < 3
        stats = await get_stats(client)
        assert stats["cancelled"] >= 1
        first = stats["recent_generations"][0]
        assert first["finish_reason"] == "cancelled"
        assert 0 < first["generated_tokens"] < 200  # cut early, the partial count kept
        stub.reply, stub.chunk_delay = (lambda body: "alive"), 0
        items = items_of(await inline(client, uri, 0, 4))
        assert [item.insert_text for item in items] == ["alive"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port  # nothing listens there now


async def wait_messages(client: Any, needle: str, seconds: float = 1.0) -> list[Any]:
    await asyncio.sleep(seconds)  # give a repeated message the time to arrive
    return [m for m in client.messages if needle in m.message]


async def test_unreachable_server_is_told_once(tmp_path: Path, stub: Any) -> None:
    options = remote_options(stub, remoteUrl=f"http://127.0.0.1:{free_port()}/v1")
    async with running_server("visual_studio_code", options, tmp_path) as (
        client,
        _,
        statuses,
    ):
        uri = (tmp_path / "u.py").as_uri()
        open_doc(client, uri, "a = \nb = \nc = \n")
        for line in range(3):
            assert items_of(await inline(client, uri, line, 4)) == []  # empty, not an error
        messages = await wait_messages(client, "cannot reach")
        assert len(messages) == 1 and messages[0].type == types.MessageType.Error
        errors = [s for s in statuses if status_field(s, "state") == "error"]
        assert len(errors) == 1 and "cannot reach" in status_field(errors[0], "message")
        stats = await get_stats(client)
        assert stats["errors"] == 3


async def test_refused_token_is_told_once_then_recovers(stub: Any, tmp_path: Path) -> None:
    stub.status = 401
    stub.reply = lambda body: "fine"
    async with running_server("neovim", remote_options(stub), tmp_path) as (
        client,
        _,
        statuses,
    ):
        uri = (tmp_path / "t.py").as_uri()
        open_doc(client, uri, "a = \nb = \nc = \n")
        for line in range(3):
            assert items_of(await inline(client, uri, line, 4)) == []
        messages = await wait_messages(client, "refused the token")
        assert len(messages) == 1 and "acepilot.remoteToken" in messages[0].message
        errors = [s for s in statuses if status_field(s, "state") == "error"]
        assert len(errors) == 1 and "HTTP 401" in status_field(errors[0], "message")
        stub.status = 200
        items = items_of(await inline(client, uri, 0, 4))
        assert [item.insert_text for item in items] == ["fine"]
        assert status_field(statuses[-1], "state") == "ready"
