"""Configuration over LSP: initializationOptions, didChangeConfiguration (push and pull)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from lsp_helpers import inline, open_doc, remote_options, running_server, status_field, wait_state
from lsprotocol import types

pytestmark = pytest.mark.timeout(120)


async def wait_message(client: Any, needle: str) -> types.ShowMessageParams:
    for _ in range(500):
        for message in client.messages:
            if needle in message.message:
                return message
        await asyncio.sleep(0.01)
    raise AssertionError(f"no showMessage with {needle!r}: {client.messages}")


async def test_invalid_initialization_options_keep_defaults(stub: Any, tmp_path: Path) -> None:
    options = remote_options(stub, maxNewTokens="many")  # the whole update is refused...
    async with running_server("visual_studio_code", options, tmp_path) as (client, _, statuses):
        message = await wait_message(client, "acepilot.maxNewTokens")
        assert message.type == types.MessageType.Error
        # ...so the backend stays the default local one, which finds no model here
        error = await wait_state(statuses, "error")
        assert status_field(error, "backend") == "local"
        assert "acepilot.model" in str(status_field(error, "message")) or "registry" in str(
            status_field(error, "message")
        )


async def test_did_change_configuration_push_and_pull(stub: Any, tmp_path: Path) -> None:
    async with running_server("visual_studio_code", remote_options(stub), tmp_path) as (
        client,
        _,
        statuses,
    ):
        await wait_state(statuses, "ready")
        uri = (tmp_path / "cfg.py").as_uri()
        open_doc(client, uri, "a = \nb = \nc = \nd = \n")
        await inline(client, uri, 0, 4)
        assert stub.bodies[-1]["max_tokens"] == 64
        # invalid: an error naming the setting; the previous configuration stays
        client.workspace_did_change_configuration(
            types.DidChangeConfigurationParams(
                settings={"acepilot": {"maxNewTokens": 7, "temperature": -1}}
            )
        )
        await wait_message(client, "acepilot.temperature")
        await inline(client, uri, 1, 4)
        assert stub.bodies[-1]["max_tokens"] == 64 and stub.bodies[-1]["temperature"] == 0.0
        # valid push
        client.workspace_did_change_configuration(
            types.DidChangeConfigurationParams(settings={"acepilot": {"maxNewTokens": 7}})
        )
        await inline(client, uri, 2, 4)
        assert stub.bodies[-1]["max_tokens"] == 7
        # pull: settings=null makes the server ask workspace/configuration
        client.set_configuration({**remote_options(stub), "maxNewTokens": 9}, section="acepilot")
        client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings=None))
        await asyncio.sleep(0.5)  # the server asks the client, then applies
        await inline(client, uri, 3, 4)
        assert stub.bodies[-1]["max_tokens"] == 9


async def test_disabled_language_gets_nothing(stub: Any, tmp_path: Path) -> None:
    options = remote_options(stub, languages={"python": False})
    async with running_server("neovim", options, tmp_path) as (client, _, statuses):
        await wait_state(statuses, "ready")
        open_doc(client, (tmp_path / "x.py").as_uri(), "x = \n")
        open_doc(client, (tmp_path / "x.md").as_uri(), "# t\n", language="markdown")
        open_doc(client, (tmp_path / "x.js").as_uri(), "let x = \n", language="javascript")
        await inline(client, (tmp_path / "x.py").as_uri(), 0, 4)
        await inline(client, (tmp_path / "x.md").as_uri(), 0, 3)
        assert stub.bodies == []
        await inline(client, (tmp_path / "x.js").as_uri(), 0, 8)
        assert stub.bodies[-1]["prompt"].startswith("// Path: x.js\n// Language: javascript\n")
