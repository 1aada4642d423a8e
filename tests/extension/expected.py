"""What the real language server answers for one document state: the e2e test's oracle.

The VS Code end-to-end test reads the ghost text off the screen; this module
asks a separate `acepilot serve` process (same settings, same workspace root,
same file name, VS Code's client capabilities) for the inline completion at
the same position of the same text. Greedy decoding with one thread is
deterministic, and both servers see the document's first model request with an
empty KV cache, so the two must agree exactly.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

from lsprotocol import types
from pytest_lsp import client_capabilities
from pytest_lsp.client import make_test_lsp_client

from acepilot.server.protocol import STATUS


async def _inline(
    root: Path, path: Path, text: str, line: int, character: int, settings: dict[str, Any]
) -> list[str]:
    client = make_test_lsp_client()
    ready = asyncio.Event()

    @client.feature(STATUS)
    def on_status(params: Any) -> None:
        state = params.get("state") if isinstance(params, dict) else getattr(params, "state", None)
        if state in ("ready", "error"):
            ready.set()

    environment = {**os.environ, "ACEPILOT_REGISTRY": str(root / "no-registry")}
    environment.pop("ACEPILOT_MODEL", None)
    await client.start_io(
        sys.executable, "-m", "acepilot.server.cli", "serve", env=environment, cwd=root
    )
    try:
        await client.initialize_session(
            types.InitializeParams(
                capabilities=client_capabilities("visual_studio_code"),
                initialization_options={"acepilot": settings},
                root_uri=root.as_uri(),
                workspace_folders=[types.WorkspaceFolder(uri=root.as_uri(), name=root.name)],
            )
        )
        await asyncio.wait_for(ready.wait(), 300)
        uri = path.as_uri()
        client.text_document_did_open(
            types.DidOpenTextDocumentParams(
                types.TextDocumentItem(uri=uri, language_id="python", version=1, text=text)
            )
        )
        result = await asyncio.wait_for(
            client.text_document_inline_completion_async(
                types.InlineCompletionParams(
                    context=types.InlineCompletionContext(
                        trigger_kind=types.InlineCompletionTriggerKind.Automatic
                    ),
                    text_document=types.TextDocumentIdentifier(uri=uri),
                    position=types.Position(line=line, character=character),
                )
            ),
            120,
        )
        await asyncio.wait_for(client.shutdown_session(), 30)
    finally:
        process = client._server
        if process is not None and process.returncode is None:
            process.kill()
        await client.stop()
    items = result.items if isinstance(result, types.InlineCompletionList) else (result or [])
    return [str(item.insert_text) for item in items]


def expected_completions(
    root: Path, path: Path, text: str, line: int, character: int, settings: dict[str, Any]
) -> list[str]:
    """The server's inline completion texts for `text` with the cursor at (line, character)."""
    return asyncio.run(_inline(root, path, text, line, character, settings))
