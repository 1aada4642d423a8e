"""Helpers of the language-server tests (tests/lsp/): a stub backend, a real server process.

End-to-end tests run the real server process (`python -m server.cli serve`)
through pytest-lsp's client, under the Neovim and the VS Code client
capability sets. The backend is either the local engine with the tiny trained
CodeGen (when the session fixtures of tests/conftest.py exist) or a stub
OpenAI-compatible HTTP server started by the test (`stub`), which is how a
team server or vLLM looks to the remote backend.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import os
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from lsprotocol import types
from pytest_lsp import LanguageClient, client_capabilities
from pytest_lsp.client import make_test_lsp_client

STATUS = "acepilot/status"
CLIENTS = ["neovim", "visual_studio_code"]
CLI = [sys.executable, "-m", "server.cli"]


class Stub:
    """An OpenAI-compatible /v1/completions endpoint: canned replies, recorded requests."""

    def __init__(self) -> None:
        self.reply: Callable[[dict[str, Any]], str] = lambda body: "42"
        self.delay = 0.0  # seconds before answering (cancellation tests)
        self.status = 200
        self.bodies: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.finished = 0  # requests whose answer was written
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length))
                stub.bodies.append(body)
                stub.headers.append(dict(self.headers))
                deadline = time.monotonic() + stub.delay
                while time.monotonic() < deadline:
                    time.sleep(0.01)
                payload = json.dumps(
                    {
                        "id": "cmpl-1",
                        "object": "text_completion",
                        "choices": [
                            {"index": 0, "text": stub.reply(body), "finish_reason": "stop"}
                        ],
                        "usage": {"prompt_tokens": 7, "completion_tokens": 1},
                    }
                ).encode()
                try:
                    self.send_response(stub.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    stub.finished += 1
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def remote_options(stub: Stub, **extra: Any) -> dict[str, Any]:
    return {
        "backend": "remote",
        "remoteUrl": stub.url,
        "remoteToken": "test-token",
        "remoteModel": "stub",
        "debounceMs": 0,
        **extra,
    }


@contextlib.asynccontextmanager
async def running_server(
    client_name: str,
    options: dict[str, Any] | None,
    root: Path,
    args: tuple[str, ...] = (),
    verbose: int = 0,
    env: dict[str, str] | None = None,
    configuration: dict[str, Any] | None = None,
) -> AsyncIterator[tuple[LanguageClient, types.InitializeResult, list[Any]]]:
    """Start `acepilot serve`, initialize it as `client_name`, yield (client, result, statuses)."""
    client = make_test_lsp_client()
    statuses: list[Any] = []

    @client.feature(STATUS)
    def on_status(params: Any) -> None:
        statuses.append(params)

    if configuration is not None:
        client.set_configuration(configuration, section="acepilot")
    # An empty default registry, unless the test says otherwise: no user models leak in.
    environment = {**os.environ, "ACEPILOT_REGISTRY": str(root / "no-registry"), **(env or {})}
    environment.pop("ACEPILOT_MODEL", None)
    verbosity = ["-" + "v" * verbose] if verbose else []
    await client.start_io(*CLI, *verbosity, "serve", *args, env=environment)
    try:
        result = await client.initialize_session(
            types.InitializeParams(
                capabilities=client_capabilities(client_name),
                initialization_options=options,
                root_uri=root.as_uri(),
                workspace_folders=[types.WorkspaceFolder(uri=root.as_uri(), name="ws")],
            )
        )
        yield client, result, statuses
        await asyncio.wait_for(client.shutdown_session(), 30)
    finally:
        process = client._server
        if process is not None and process.returncode is None:
            process.kill()  # the test failed before a clean shutdown: do not hang
        await client.stop()


def status_field(status: Any, name: str) -> Any:
    return status[name] if isinstance(status, dict) else getattr(status, name)


async def wait_state(statuses: list[Any], state: str, timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for status in statuses:
            if status_field(status, "state") == state:
                return status
        await asyncio.sleep(0.02)
    raise AssertionError(f"no {state!r} status within {timeout} s: {statuses}")


def open_doc(client: LanguageClient, uri: str, text: str, language: str = "python") -> None:
    client.text_document_did_open(
        types.DidOpenTextDocumentParams(types.TextDocumentItem(uri, language, 1, text))
    )


async def inline(
    client: LanguageClient, uri: str, line: int, character: int
) -> types.InlineCompletionList | list[types.InlineCompletionItem] | None:
    return await client.text_document_inline_completion_async(
        types.InlineCompletionParams(
            context=types.InlineCompletionContext(
                trigger_kind=types.InlineCompletionTriggerKind.Automatic
            ),
            text_document=types.TextDocumentIdentifier(uri),
            position=types.Position(line, character),
        )
    )


def items_of(result: Any) -> list[types.InlineCompletionItem]:
    if result is None:
        return []
    return list(result.items if isinstance(result, types.InlineCompletionList) else result)


def send_raw(client: LanguageClient, payload: Any) -> None:
    """Write a JSON-RPC message as it is (the client would refuse to serialize bad params)."""
    body = json.dumps(payload).encode()
    writer: Any = client.protocol.writer
    writer.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)


async def raw_request(client: LanguageClient, method: str, params: Any, msg_id: str) -> Any:
    future: concurrent.futures.Future[Any] = concurrent.futures.Future()
    client.protocol._request_futures[msg_id] = future
    send_raw(client, {"jsonrpc": "2.0", "id": msg_id, "method": method, "params": params})
    return await asyncio.wait_for(asyncio.wrap_future(future), 10)


def raw_notify(client: LanguageClient, method: str, params: Any) -> None:
    send_raw(client, {"jsonrpc": "2.0", "method": method, "params": params})
