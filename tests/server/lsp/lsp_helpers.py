"""Helpers of the language-server tests (tests/server/lsp/): a stub backend, a real server process.

End-to-end tests run the real server process (`python -m acepilot.server.cli serve`)
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

from acepilot.server.protocol import STATS, STATUS

CLIENTS = ["neovim", "visual_studio_code"]
CLI = [sys.executable, "-m", "acepilot.server.cli"]


class Stub:
    """A small OpenAI-compatible server on 127.0.0.1: what the team server looks like.

    POST /v1/completions answers with server-sent events when the body asks for
    `stream` (one `data:` chunk per `chunk_chars` characters, then `data: [DONE]`,
    chunked transfer encoding on a keep-alive HTTP/1.1 connection), else with one
    JSON object; GET /v1/models lists `models`; POST /v1/telemetry records its
    body. Requests, headers and the client's port (to see connection reuse) are
    recorded; a stream the client closes early is counted in `aborted`.
    """

    def __init__(self) -> None:
        self.reply: Callable[[dict[str, Any]], str] = lambda body: "42"
        self.delay = 0.0  # seconds before answering (cancellation tests)
        self.chunk_delay = 0.0  # seconds between streamed chunks
        self.chunk_chars = 3
        self.status = 200
        self.bodies: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.ports: list[int] = []  # the client's port per completion request
        self.models: list[dict[str, Any]] = [{"id": "stub", "object": "model"}]
        self.model_gets = 0
        self.telemetry: list[dict[str, Any]] = []
        self.telemetry_headers: list[dict[str, str]] = []
        self.finished = 0  # requests whose answer was written completely
        self.aborted = 0  # streams the client closed before the end
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive

            def do_GET(self) -> None:
                if self.path.rstrip("/") != "/v1/models":
                    self.send_json(404, {"error": {"message": "not found"}})
                    return
                stub.model_gets += 1
                self.send_json(stub.status, {"object": "list", "data": stub.models})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length))
                if self.path.rstrip("/") == "/v1/telemetry":
                    stub.telemetry.append(body)
                    stub.telemetry_headers.append(dict(self.headers))
                    self.send_json(stub.status, {"accepted": len(body.get("events", []))})
                    return
                stub.bodies.append(body)
                stub.headers.append(dict(self.headers))
                stub.ports.append(self.client_address[1])
                deadline = time.monotonic() + stub.delay
                while time.monotonic() < deadline:
                    time.sleep(0.01)
                text = stub.reply(body)
                try:
                    if stub.status != 200:
                        self.send_json(stub.status, {"error": {"message": "refused"}})
                    elif body.get("stream"):
                        self.send_stream(text)
                    else:
                        self.send_json(200, completion(text))
                    stub.finished += 1
                except (BrokenPipeError, ConnectionResetError):
                    stub.aborted += 1
                    self.close_connection = True

            def send_json(self, status: int, data: Any) -> None:
                payload = json.dumps(data).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def send_stream(self, text: str) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                size = max(1, stub.chunk_chars)
                pieces = [text[i : i + size] for i in range(0, len(text), size)]
                for index, piece in enumerate(pieces):
                    last = index == len(pieces) - 1
                    chunk = {
                        "id": "cmpl-1",
                        "object": "text_completion",
                        "choices": [
                            {"index": 0, "text": piece, "finish_reason": "stop" if last else None}
                        ],
                    }
                    self.write_chunk(f"data: {json.dumps(chunk)}\n\n")
                    if stub.chunk_delay:
                        time.sleep(stub.chunk_delay)
                usage = {"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 1}}
                self.write_chunk(f": keep-alive comment\n\ndata: {json.dumps(usage)}\n\n")
                self.write_chunk("data: [DONE]\n\n")
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()

            def write_chunk(self, text: str) -> None:
                data = text.encode()
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.flush()

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


def completion(text: str) -> dict[str, Any]:
    """A non-streamed OpenAI completions answer."""
    return {
        "id": "cmpl-1",
        "object": "text_completion",
        "choices": [{"index": 0, "text": text, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 7, "completion_tokens": 1},
    }


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


def change(
    uri: str, version: int, start: tuple[int, int], end: tuple[int, int], text: str
) -> types.DidChangeTextDocumentParams:
    """An incremental didChange: replace start..end (line, character) with text."""
    return types.DidChangeTextDocumentParams(
        text_document=types.VersionedTextDocumentIdentifier(version=version, uri=uri),
        content_changes=[
            types.TextDocumentContentChangePartial(
                range=types.Range(types.Position(*start), types.Position(*end)), text=text
            )
        ],
    )


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


def plain(value: Any) -> Any:
    """pygls' client turns JSON objects into namedtuples: back to dicts and lists."""
    if hasattr(value, "_asdict"):
        return {key: plain(item) for key, item in value._asdict().items()}
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    return value


async def get_stats(client: LanguageClient, reset: bool = False) -> dict[str, Any]:
    """`acepilot/stats` as a plain dict."""
    params = {"reset": True} if reset else {}
    result: dict[str, Any] = plain(await client.protocol.send_request_async(STATS, params))
    return result
