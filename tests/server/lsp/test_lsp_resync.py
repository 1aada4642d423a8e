"""A change the server cannot apply: the document goes stale until the client resends it.

Stale: completions are empty (never from a text that differs from the
client's), the server sends `acepilot/resync {uri}`, incremental changes are
ignored; a full-text change, or didClose + didOpen, makes it fresh again.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from lsp_helpers import (
    change,
    get_stats,
    inline,
    items_of,
    open_doc,
    plain,
    remote_options,
    running_server,
)
from lsprotocol import types

from acepilot.server.protocol import RESYNC

pytestmark = pytest.mark.timeout(120)


def full(uri: str, version: int, text: str) -> types.DidChangeTextDocumentParams:
    return types.DidChangeTextDocumentParams(
        text_document=types.VersionedTextDocumentIdentifier(version=version, uri=uri),
        content_changes=[types.TextDocumentContentChangeWholeDocument(text=text)],
    )


async def next_resync(asks: list[Any], count: int) -> Any:
    for _ in range(500):
        if len(asks) >= count:
            return asks[count - 1]
        await asyncio.sleep(0.01)
    raise AssertionError(f"no acepilot/resync number {count}: {asks}")


@pytest.mark.parametrize("failure", ["past the end", "version does not increase"])
async def test_stale_document_asks_for_resync(failure: str, stub: Any, tmp_path: Path) -> None:
    stub.reply = lambda body: "value"
    async with running_server("visual_studio_code", remote_options(stub), tmp_path) as (
        client,
        _,
        _,
    ):
        asks: list[Any] = []

        @client.feature(RESYNC)
        def on_resync(params: Any) -> None:
            asks.append(plain(params))

        uri = (tmp_path / "r.py").as_uri()
        open_doc(client, uri, "a = 1\nb = \n")
        assert items_of(await inline(client, uri, 1, 4))
        if failure == "past the end":
            client.text_document_did_change(change(uri, 2, (40, 0), (40, 0), "lost = 1\n"))
        else:
            client.text_document_did_change(change(uri, 2, (0, 0), (0, 0), "# one\n"))
            client.text_document_did_change(change(uri, 2, (0, 0), (0, 0), "# two\n"))
        ask = await next_resync(asks, 1)
        assert ask == {"uri": uri}
        calls = len(stub.bodies)
        assert items_of(await inline(client, uri, 1, 4)) == []  # never from a wrong text
        client.text_document_did_change(change(uri, 3, (0, 0), (0, 0), "c = 3\n"))  # ignored
        assert items_of(await inline(client, uri, 1, 4)) == []
        assert len(stub.bodies) == calls  # the model was not asked
        stats = await get_stats(client)
        assert stats["stale"] == 2
        # the extension answers with one full-text change: fresh again
        client.text_document_did_change(full(uri, 4, "a = 1\nb = 2\nresult = \n"))
        items = items_of(await inline(client, uri, 2, 9))
        assert [item.insert_text for item in items] == ["value"]
        assert stub.bodies[-1]["prompt"].endswith("a = 1\nb = 2\nresult = ")
        # incremental changes apply again
        client.text_document_did_change(change(uri, 5, (2, 9), (2, 9), "b"))
        await inline(client, uri, 2, 10)
        assert stub.bodies[-1]["prompt"].endswith("result = b")


async def test_reopening_makes_it_fresh(stub: Any, tmp_path: Path) -> None:
    stub.reply = lambda body: "value"
    async with running_server("neovim", remote_options(stub), tmp_path) as (client, _, _):
        uri = (tmp_path / "o.py").as_uri()
        open_doc(client, uri, "x = \n")
        client.text_document_did_change(change(uri, 2, (0, 4), (0, 0), "reversed"))
        assert items_of(await inline(client, uri, 0, 4)) == []
        client.text_document_did_close(
            types.DidCloseTextDocumentParams(types.TextDocumentIdentifier(uri))
        )
        open_doc(client, uri, "y = \n")
        items = items_of(await inline(client, uri, 0, 4))
        assert [item.insert_text for item in items] == ["value"]
