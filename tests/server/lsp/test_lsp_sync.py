"""1,000 random incremental edits over the wire leave the server's text equal to the client's.

The server's text is observed through the prompt it sends to the stub backend:
with a large budget the prompt holds the whole document before the cursor.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
from lsp_helpers import CLIENTS, inline, open_doc, remote_options, running_server
from lsprotocol import types

pytestmark = pytest.mark.timeout(300)
PIECES = ["x", "def f():\n", "\r\n", "😀", "𠀀", "    ", "}", "é", "", "\n\n", "\r"]


def position(text: str, offset: int, encoding: str) -> types.Position:
    """Independent reference: LSP position of a code-point offset."""
    before = text[:offset]
    line = before.count("\n") + before.count("\r") - before.count("\r\n")
    start = max(before.rfind("\n"), before.rfind("\r")) + 1
    head = before[start:]
    units = (
        len(head.encode("utf-16-le")) // 2 if encoding == "utf-16" else len(head.encode("utf-8"))
    )
    return types.Position(line, units)


@pytest.mark.parametrize("client_name", CLIENTS)
async def test_random_edits_stay_identical(client_name: str, stub: Any, tmp_path: Path) -> None:
    rng = random.Random(1234)
    options = remote_options(stub, contextTokens=32768, snippetTokens=0)
    async with running_server(client_name, options, tmp_path) as (client, result, _):
        enc = str(result.capabilities.position_encoding)
        uri = (tmp_path / "edit.py").as_uri()
        text = "start = 1\r\n" * 10
        open_doc(client, uri, text)
        for version in range(2, 1002):
            valid = [
                i
                for i in range(len(text) + 1)
                if not (0 < i < len(text) and text[i - 1 : i + 1] == "\r\n")
            ]
            start = rng.choice(valid)
            end = min(len(text), start + rng.choice([0, 0, 1, 3]))
            if end not in valid:
                end = start
            insert = rng.choice(PIECES)
            change = types.TextDocumentContentChangePartial(
                range=types.Range(position(text, start, enc), position(text, end, enc)), text=insert
            )
            client.text_document_did_change(
                types.DidChangeTextDocumentParams(
                    text_document=types.VersionedTextDocumentIdentifier(version=version, uri=uri),
                    content_changes=[change],
                )
            )
            text = text[:start] + insert + text[end:]
        end_position = position(text, len(text), enc)
        await inline(client, uri, end_position.line, end_position.character)
        prompt = stub.bodies[-1]["prompt"]
        expected = text.replace("\r\n", "\n").replace("\r", "\n")
        assert prompt.endswith(expected)
