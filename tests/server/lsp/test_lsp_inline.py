"""End to end over stdio, remote backend (stub): capabilities, inline completion, ranges."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from lsp_helpers import (
    CLIENTS,
    change,
    inline,
    items_of,
    open_doc,
    remote_options,
    running_server,
    status_field,
    wait_state,
)
from lsprotocol import types

from acepilot.server.protocol import STATS

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize("client_name", CLIENTS)
async def test_capabilities_and_inline_completion(
    client_name: str, stub: Any, tmp_path: Path
) -> None:
    stub.reply = lambda body: "a + b\n\nprint(add(1, 2))"
    async with running_server(client_name, remote_options(stub), tmp_path) as (
        client,
        result,
        statuses,
    ):
        caps = result.capabilities
        assert caps.inline_completion_provider is not None
        assert caps.completion_provider is not None
        sync = caps.text_document_sync
        assert isinstance(sync, types.TextDocumentSyncOptions)
        assert sync.change == types.TextDocumentSyncKind.Incremental and sync.open_close
        # Neovim offers UTF-8 first and gets it; VS Code offers nothing: UTF-16
        expected = "utf-8" if client_name == "neovim" else "utf-16"
        assert caps.position_encoding == expected
        assert result.server_info is not None and result.server_info.name == "acepilot"

        await wait_state(statuses, "ready")
        uri = (tmp_path / "pkg" / "calc.py").as_uri()
        open_doc(client, uri, "import os\n\ndef add(a, b):\n    return \n")
        items = items_of(await inline(client, uri, 3, 11))
        assert len(items) == 1
        assert items[0].insert_text == "a + b"
        assert items[0].range == types.Range(types.Position(3, 11), types.Position(3, 11))
        body = stub.bodies[-1]
        assert body["prompt"].startswith("# Path: pkg/calc.py\n# Language: python\n")
        assert body["prompt"].endswith("def add(a, b):\n    return ")
        assert body["model"] == "stub" and body["stop"] == ["\n"]
        assert stub.headers[-1]["Authorization"] == "Bearer test-token"


def units(text: str, encoding: str) -> int:
    """Code units of text in the negotiated encoding (computed independently of the server)."""
    return len(text.encode("utf-16-le")) // 2 if encoding == "utf-16" else len(text.encode("utf-8"))


@pytest.mark.parametrize("client_name", CLIENTS)
async def test_positions_with_emoji_and_cjk(client_name: str, stub: Any, tmp_path: Path) -> None:
    """VS Code gets UTF-16 (an astral character is 2 units), Neovim UTF-8 (4 bytes)."""
    stub.reply = lambda body: "'done')"
    async with running_server(client_name, remote_options(stub), tmp_path) as (client, result, _):
        enc = str(result.capabilities.position_encoding)
        uri = (tmp_path / "u.py").as_uri()
        open_doc(client, uri, "s = '😀𠀀'\nprint(s, \n")
        # replace the emoji (one character) by another: its range in the client's units
        client.text_document_did_change(
            change(uri, 2, (0, units("s = '", enc)), (0, units("s = '😀", enc)), "🎉")
        )
        end0 = units("s = '🎉𠀀", enc)
        await inline(client, uri, 0, end0)
        assert stub.bodies[-1]["prompt"].endswith("s = '🎉𠀀")
        items = items_of(await inline(client, uri, 1, units("print(s, ", enc)))
        assert stub.bodies[-1]["prompt"].endswith("s = '🎉𠀀'\nprint(s, ")
        assert [item.insert_text for item in items] == ["'done')"]
        assert items[0].range.start == types.Position(1, 9)
        # a completion after an astral character: its range is in the client's units
        open_doc(client, uri + "2", "x = '😀' + \n")
        items = items_of(await inline(client, uri + "2", 0, units("x = '😀' + ", enc)))
        assert items[0].range.start == types.Position(0, units("x = '😀' + ", enc))


async def test_crlf_document(stub: Any, tmp_path: Path) -> None:
    stub.reply = lambda body: "\n    return x * 2\n\nprint(f(2))"
    async with running_server("visual_studio_code", remote_options(stub), tmp_path) as (
        client,
        _,
        _,
    ):
        uri = (tmp_path / "crlf.py").as_uri()
        open_doc(client, uri, "import os\r\ndef f(x):\r\n\r\nprint(1)\r\n")
        items = items_of(await inline(client, uri, 1, 9))
        assert stub.bodies[-1]["prompt"].endswith("import os\ndef f(x):")  # LF in the prompt
        assert [item.insert_text for item in items] == ["\r\n    return x * 2"]  # CRLF back


async def test_completion_fallback_for_editors_without_inline(stub: Any, tmp_path: Path) -> None:
    stub.reply = lambda body: "ult = compute(1)"
    async with running_server("neovim", remote_options(stub), tmp_path) as (client, _, _):
        uri = (tmp_path / "n.py").as_uri()
        open_doc(client, uri, "x = 1\nres\n")
        result = await client.text_document_completion_async(
            types.CompletionParams(types.TextDocumentIdentifier(uri), types.Position(1, 3))
        )
        assert isinstance(result, types.CompletionList) and len(result.items) == 1
        item = result.items[0]
        assert item.label == "result = compute(1)"
        assert isinstance(item.text_edit, types.TextEdit)
        assert item.text_edit.new_text == "result = compute(1)"
        assert item.text_edit.range == types.Range(types.Position(1, 0), types.Position(1, 3))


async def test_typing_ahead_and_cache_skip_the_model(stub: Any, tmp_path: Path) -> None:
    stub.reply = lambda body: "compute_total(items)"
    async with running_server("visual_studio_code", remote_options(stub), tmp_path) as (
        client,
        _,
        _,
    ):
        uri = (tmp_path / "t.py").as_uri()
        open_doc(client, uri, "total = \n")
        items = items_of(await inline(client, uri, 0, 8))
        assert items[0].insert_text == "compute_total(items)"
        assert len(stub.bodies) == 1
        client.text_document_did_change(change(uri, 2, (0, 8), (0, 8), "comp"))
        items = items_of(await inline(client, uri, 0, 12))
        assert items[0].insert_text == "ute_total(items)"
        assert items[0].range.start == types.Position(0, 12)
        assert len(stub.bodies) == 1  # typing-ahead: no model call
        stats = await client.protocol.send_request_async(STATS, {})
        assert status_field(stats, "typing_ahead") == 1
        assert status_field(stats, "model_requests") == 1
