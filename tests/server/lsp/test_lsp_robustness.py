"""Bad input is answered (an error or an empty result) and the server keeps serving.

Also: $/cancelRequest stops a running completion, a newer request supersedes
an older one, and logs at the default level never contain document text.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from lsp_helpers import (
    inline,
    items_of,
    open_doc,
    raw_notify,
    raw_request,
    remote_options,
    running_server,
)
from lsprotocol import types
from pygls.exceptions import JsonRpcException

pytestmark = pytest.mark.timeout(180)
SECRET = "hunter2_SECRET_CODE"


async def still_serving(client: Any, stub: Any, tmp_path: Path) -> None:
    stub.delay = 0
    stub.reply = lambda body: "ok_value"
    uri = (tmp_path / "alive.py").as_uri()
    open_doc(client, uri, "answer = \n")
    items = items_of(await inline(client, uri, 0, 9))
    assert [item.insert_text for item in items] == ["ok_value"]


async def test_cancel_request_stops_the_completion(stub: Any, tmp_path: Path) -> None:
    stub.delay = 10.0
    async with running_server("visual_studio_code", remote_options(stub), tmp_path) as (
        client,
        _,
        _,
    ):
        uri = (tmp_path / "c.py").as_uri()
        open_doc(client, uri, "x = \n")
        params = types.InlineCompletionParams(
            context=types.InlineCompletionContext(
                trigger_kind=types.InlineCompletionTriggerKind.Invoked
            ),
            text_document=types.TextDocumentIdentifier(uri),
            position=types.Position(0, 4),
        )
        future = client.protocol.send_request(
            types.TEXT_DOCUMENT_INLINE_COMPLETION, params, msg_id="slow-1"
        )
        while not stub.bodies:  # the request reached the backend
            await asyncio.sleep(0.01)
        started = time.monotonic()
        client.protocol.notify(types.CANCEL_REQUEST, types.CancelParams(id="slow-1"))
        with pytest.raises(JsonRpcException) as info:
            await asyncio.wait_for(asyncio.wrap_future(future), 5)
        assert time.monotonic() - started < 2
        assert "cancel" in str(info.value).lower()
        await still_serving(client, stub, tmp_path)


async def test_newer_request_supersedes_older(stub: Any, tmp_path: Path) -> None:
    stub.delay = 3.0
    async with running_server("visual_studio_code", remote_options(stub), tmp_path) as (
        client,
        _,
        _,
    ):
        uri = (tmp_path / "s.py").as_uri()
        open_doc(client, uri, "x = \ny = \n")
        first = asyncio.ensure_future(inline(client, uri, 0, 4))
        while not stub.bodies:
            await asyncio.sleep(0.01)
        started = time.monotonic()
        stub.delay = 0
        second = await inline(client, uri, 1, 4)
        assert items_of(await first) == []  # superseded: answered empty, not finished
        assert time.monotonic() - started < 2.5
        assert [item.insert_text for item in items_of(second)] == ["42"]


async def test_bad_input_is_answered(stub: Any, tmp_path: Path) -> None:
    async with running_server("neovim", remote_options(stub), tmp_path) as (client, _, _):
        # a request for a document that was never opened
        assert items_of(await inline(client, (tmp_path / "nope.py").as_uri(), 0, 0)) == []
        uri = (tmp_path / "a.py").as_uri()
        open_doc(client, uri, "def f():\n    pass\n")
        # positions past the end of the line / of the document are clamped
        items = items_of(await inline(client, uri, 0, 500))
        assert all(item.range.start == types.Position(0, 8) for item in items)
        items = items_of(await inline(client, uri, 900, 3))
        assert all(item.range.start == types.Position(2, 0) for item in items)
        # malformed params: an InvalidParams error, not silence
        bad = [
            {"textDocument": 5},
            {"textDocument": {"uri": uri}, "position": {"line": -1}},
            [],
            None,
        ]
        for index, params in enumerate(bad):
            with pytest.raises(JsonRpcException) as info:
                await raw_request(
                    client, types.TEXT_DOCUMENT_INLINE_COMPLETION, params, f"bad-{index}"
                )
            assert info.value.code == types.ErrorCodes.InvalidParams
        # malformed and impossible notifications are dropped
        raw_notify(client, types.TEXT_DOCUMENT_DID_CHANGE, {"textDocument": {"uri": uri}})
        raw_notify(client, types.TEXT_DOCUMENT_DID_OPEN, {"textDocument": None})
        raw_notify(client, "acepilot/unknownNotification", {"x": 1})
        client.text_document_did_change(
            types.DidChangeTextDocumentParams(
                text_document=types.VersionedTextDocumentIdentifier(version=2, uri=uri + "x"),
                content_changes=[types.TextDocumentContentChangeWholeDocument(text="zzz")],
            )
        )
        client.text_document_did_change(
            types.DidChangeTextDocumentParams(
                text_document=types.VersionedTextDocumentIdentifier(version=3, uri=uri),
                content_changes=[
                    types.TextDocumentContentChangePartial(
                        range=types.Range(types.Position(1, 4), types.Position(0, 1)), text="x"
                    )
                ],
            )
        )
        # unknown request method
        with pytest.raises(JsonRpcException) as info:
            await client.protocol.send_request_async("acepilot/noSuchMethod", {})
        assert info.value.code == types.ErrorCodes.MethodNotFound
        # binary content with NUL characters
        open_doc(client, (tmp_path / "bin.py").as_uri(), "\x00\x01\x02\ufffd\x7f" * 1000 + "\nx = ")
        await inline(client, (tmp_path / "bin.py").as_uri(), 1, 4)
        # a 5 MB document
        big = "".join(f"value_{i} = compute({i}, 'padding text here')\n" for i in range(110_000))
        assert len(big) > 5_000_000
        big_uri = (tmp_path / "big.py").as_uri()
        open_doc(client, big_uri, big + "last = ")
        started = time.monotonic()
        items = items_of(await inline(client, big_uri, 110_000, 7))
        assert [item.insert_text for item in items] == ["42"]
        assert time.monotonic() - started < 5
        prompt = stub.bodies[-1]["prompt"]
        assert prompt.endswith("'padding text here')\nlast = ") and len(prompt) < 20_000
        await still_serving(client, stub, tmp_path)


async def test_logs_never_contain_document_text(stub: Any, tmp_path: Path) -> None:
    log_file = tmp_path / "server.log"
    stub.reply = lambda body: f"{SECRET}_completion"
    async with running_server(
        "visual_studio_code", remote_options(stub), tmp_path, args=("--log-file", str(log_file))
    ) as (client, _, _):
        uri = (tmp_path / "p.py").as_uri()
        open_doc(client, uri, f"password = '{SECRET}'\nx = \n")
        await inline(client, uri, 1, 4)
        with pytest.raises(JsonRpcException):
            params = {"textDocument": SECRET, "position": SECRET}
            await raw_request(client, types.TEXT_DOCUMENT_INLINE_COMPLETION, params, "secret-1")
        change = {"textDocument": {"uri": uri}, "contentChanges": [{"text": SECRET, "range": 5}]}
        raw_notify(client, types.TEXT_DOCUMENT_DID_CHANGE, change)
        raw_notify(
            client, types.TEXT_DOCUMENT_DID_OPEN, {"textDocument": {"uri": SECRET, "text": SECRET}}
        )
        stub.status = 500
        await inline(client, uri, 1, 5)  # a backend error is logged
        stub.status = 200
        await still_serving(client, stub, tmp_path)
    text = log_file.read_text()
    assert text, "the server logged nothing (the test would prove nothing)"
    assert SECRET not in text
