"""Adversarial clients written from scratch (tests/server/lsp/raw_client.py) against a real server.

Issue 13's language-server findings, each a test that failed before its fix,
and more attacks of the same classes: the framing (Content-Length huge,
negative, not a number, overlong header lines, bodies that are not JSON or
nest without end), the lifecycle (requests before `initialize` and after
`shutdown`, `exit` without `shutdown`), TCP sessions (a bare connect, garbage,
a second client), and resource bounds (one enormous line, memory after
didClose, thousands of documents, invalid positions).

Every attack must be answered (an error or an empty result) or end the
connection with a message; none may crash the server or leave it deaf.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lsp_helpers import Stub, remote_options
from raw_client import CLI, CLOSED, StdioClient, TcpClient, free_port, wait_port

from acepilot.server.protocol import STATS

pytestmark = pytest.mark.timeout(300)
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
SERVER_NOT_INITIALIZED = -32002


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[StdioClient]:
    client = StdioClient(tmp_path)
    yield client
    client.stop()


def alive(client: Any, msg_id: str = "alive") -> None:
    """The server still answers a request on this stream."""
    reply = client.request(STATS, {}, msg_id)
    assert "result" in reply, reply


def complete(client: Any, uri: str, line: int, character: int, msg_id: Any) -> Any:
    return client.request(
        "textDocument/inlineCompletion",
        {
            "textDocument": {"uri": uri},
            "position": {"line": line, "character": character},
            "context": {"triggerKind": 2},
        },
        msg_id,
    )


def open_text(client: Any, uri: str, text: str, language: str = "python") -> None:
    client.notify(
        "textDocument/didOpen",
        {"textDocument": {"uri": uri, "languageId": language, "version": 1, "text": text}},
    )


# ---- framing -----------------------------------------------------------------


def test_huge_content_length_is_refused_with_a_message(serve: StdioClient) -> None:
    serve.send_bytes(b"Content-Length: 1000000000000\r\n\r\n{}")
    message = serve.receive()
    assert message is not CLOSED, serve.stderr()
    assert message["id"] is None
    assert "limit" in message["error"]["message"]
    # the stream cannot be resynchronised after an impossible length: closed, with a log line
    assert serve.receive() is CLOSED
    assert serve.wait() == 1
    log = serve.stderr()
    assert "MemoryError" not in log and "Traceback" not in log
    assert "frame" in log


@pytest.mark.parametrize("length", [b"-5", b"abc", b"", b"1e3"])
def test_bad_content_length_is_answered_and_the_stream_stays_usable(
    serve: StdioClient, tmp_path: Path, length: bytes
) -> None:
    serve.send_bytes(b"Content-Length: " + length + b"\r\n\r\n{}")
    serve.initialize(tmp_path)  # the next well-formed frame is read and answered
    alive(serve)
    assert serve.process.poll() is None


def test_a_bad_frame_gets_an_error_reply(serve: StdioClient, tmp_path: Path) -> None:
    serve.send_bytes(b"Content-Length: -1\r\n\r\n")
    serve.send(
        {"jsonrpc": "2.0", "id": "init", "method": "initialize", "params": {"capabilities": {}}}
    )
    errors, reply = serve.errors_until("init")
    assert [e["error"]["code"] for e in errors] == [PARSE_ERROR]
    assert "result" in reply


def test_overlong_header_line_and_many_headers(serve: StdioClient, tmp_path: Path) -> None:
    serve.send_bytes(b"X-Junk: " + b"a" * (1 << 20) + b"\r\n")
    serve.send_bytes(b"".join(b"X-%d: 1\r\n" % i for i in range(5000)) + b"\r\n")
    serve.initialize(tmp_path)
    alive(serve)


@pytest.mark.parametrize(
    "body",
    [b"{not json", b"\xff\xfe\x00", b"[" * 200_000 + b"]" * 200_000, b'{"a":' * 100_000 + b"1"],
    ids=["syntax", "not-utf8", "deep-array", "deep-object"],
)
def test_a_body_that_is_not_json_gets_a_parse_error(
    serve: StdioClient, tmp_path: Path, body: bytes
) -> None:
    serve.initialize(tmp_path)
    serve.send_bytes(b"Content-Length: %d\r\n\r\n" % len(body) + body)
    serve.send({"jsonrpc": "2.0", "id": "after", "method": STATS, "params": {}})
    errors, reply = serve.errors_until("after")
    assert [e["error"]["code"] for e in errors] == [PARSE_ERROR]
    assert "result" in reply


# ---- lifecycle -----------------------------------------------------------------


def test_requests_before_initialize_get_server_not_initialized(serve: StdioClient) -> None:
    reply = serve.request(STATS, {}, "early")
    assert reply["error"]["code"] == SERVER_NOT_INITIALIZED
    reply = complete(serve, "file:///x.py", 0, 0, "early-2")
    assert reply["error"]["code"] == SERVER_NOT_INITIALIZED


def test_requests_after_shutdown_get_invalid_request(serve: StdioClient, tmp_path: Path) -> None:
    serve.initialize(tmp_path)
    assert serve.request("shutdown", None, "down")["result"] is None
    reply = serve.request(STATS, {}, "late", timeout=10)
    assert reply["error"]["code"] == INVALID_REQUEST
    serve.notify("exit", None)
    assert serve.wait() == 0


def test_exit_without_shutdown_exits_1(serve: StdioClient, tmp_path: Path) -> None:
    serve.initialize(tmp_path)
    serve.notify("exit", None)
    assert serve.wait() == 1


def test_end_of_input_ends_the_server(serve: StdioClient, tmp_path: Path) -> None:
    serve.initialize(tmp_path)
    serve.close_stdin()
    assert serve.wait() == 1  # the client went away without shutdown/exit


# ---- TCP sessions ----------------------------------------------------------------


@contextlib.contextmanager
def tcp_server(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    port = free_port()
    log = (tmp_path / "tcp.log").open("wb")
    env = {**os.environ, "ACEPILOT_REGISTRY": str(tmp_path / "no-registry")}
    process = subprocess.Popen([*CLI, "serve", "--tcp", f"127.0.0.1:{port}"], stderr=log, env=env)
    try:
        wait_port(port)
        yield process, port
    finally:
        process.kill()
        process.wait(10)
        log.close()


def test_tcp_bare_connect_and_garbage_do_not_end_the_server(tmp_path: Path) -> None:
    with tcp_server(tmp_path) as (process, port):
        TcpClient(port).close()  # connect and close at once
        garbage = TcpClient(port)
        garbage.send_bytes(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + bytes(range(256)) * 100)
        garbage.close()
        time.sleep(0.5)
        assert process.poll() is None
        client = TcpClient(port)
        client.initialize(tmp_path)
        alive(client)
        client.close()


def test_tcp_second_client_is_refused_and_never_gets_the_first_ones_answers(
    tmp_path: Path, stub: Stub
) -> None:
    stub.reply = lambda body: "first_answer"
    with tcp_server(tmp_path) as (process, port):
        first = TcpClient(port)
        first.initialize(tmp_path, remote_options(stub))
        second = TcpClient(port)
        refused = second.receive()
        assert refused is not CLOSED and "another" in str(refused)
        assert second.receive() is CLOSED
        uri = (tmp_path / "a.py").as_uri()
        open_text(first, uri, "x = \n")
        reply = complete(first, uri, 0, 4, 1)
        assert reply["result"]["items"][0]["insertText"] == "first_answer"
        first.close()  # one client's disconnect does not end the server
        time.sleep(0.5)
        assert process.poll() is None
        third = TcpClient(port)
        third.initialize(tmp_path, remote_options(stub))
        open_text(third, uri, "x = \n")
        assert complete(third, uri, 0, 4, 1)["result"]["items"][0]["insertText"] == "first_answer"
        third.close()


# ---- documents and resources -------------------------------------------------------


def test_invalid_positions_and_out_of_range_changes(
    serve: StdioClient, tmp_path: Path, stub: Stub
) -> None:
    serve.initialize(tmp_path, remote_options(stub))
    uri = (tmp_path / "p.py").as_uri()
    open_text(serve, uri, "x = \n")
    for index, (line, character) in enumerate([(-1, 0), (0, -3), (2**31, 2**31), (0, 2**40)]):
        reply = complete(serve, uri, line, character, f"pos-{index}")
        assert "result" in reply or reply["error"]["code"] == -32602, reply
        assert "traceback" not in str(reply).lower()
    serve.notify(
        "textDocument/didChange",
        {
            "textDocument": {"uri": uri, "version": 2},
            "contentChanges": [
                {
                    "range": {
                        "start": {"line": 99, "character": 0},
                        "end": {"line": 0, "character": 0},
                    },
                    "text": "y",
                }
            ],
        },
    )
    alive(serve)


def test_thousands_of_documents(serve: StdioClient, tmp_path: Path, stub: Stub) -> None:
    serve.initialize(tmp_path, remote_options(stub))
    for index in range(3000):
        open_text(serve, (tmp_path / f"d{index}.py").as_uri(), f"value_{index} = {index}\n" * 20)
    uri = (tmp_path / "d0.py").as_uri()
    reply = complete(serve, uri, 20, 0, "many")
    assert reply["result"]["items"][0]["insertText"] == "42"


def test_one_enormous_line_costs_memory_bounded_by_the_budget(
    serve: StdioClient, tmp_path: Path, stub: Stub
) -> None:
    """40 keystrokes at the end of a 2 MB line: memory must not grow with line x keystrokes."""
    serve.initialize(tmp_path, remote_options(stub))
    uri = (tmp_path / "long.py").as_uri()
    line = "x = [" + "1, " * 700_000
    open_text(serve, uri, line)
    complete(serve, uri, 0, len(line), "warm")
    before = serve.rss_mb()
    for index in range(40):
        serve.notify(
            "textDocument/didChange",
            {
                "textDocument": {"uri": uri, "version": index + 2},
                "contentChanges": [
                    {
                        "range": {
                            "start": {"line": 0, "character": len(line) + index},
                            "end": {"line": 0, "character": len(line) + index},
                        },
                        "text": "2",
                    }
                ],
            },
        )
        reply = complete(serve, uri, 0, len(line) + index + 1, f"k{index}")
        assert "result" in reply
    body = stub.bodies[-1]["prompt"]
    assert len(body) < 16_000  # the prompt is cut to the budget
    grown = serve.rss_mb() - before
    assert grown < 40, f"memory grew {grown:.0f} MB over 40 keystrokes on one long line"


def test_memory_returns_after_did_close(serve: StdioClient, tmp_path: Path, stub: Stub) -> None:
    """Open, complete in and close 50 documents of 100 KB, ten times: no growth per cycle."""
    serve.initialize(tmp_path, remote_options(stub, snippetTokens=128))
    text = "".join(f"def function_{i}(argument):\n    return argument * {i}\n" for i in range(2000))
    samples = []
    for cycle in range(10):
        uris = [(tmp_path / f"c{cycle}_{i}.py").as_uri() for i in range(50)]
        for index, uri in enumerate(uris):
            open_text(serve, uri, text.replace("argument", f"arg{cycle}_{index}"))
        for index, uri in enumerate(uris[:10]):
            complete(serve, uri, 1000, 0, f"c{cycle}-{index}")
        for uri in uris:
            serve.notify("textDocument/didClose", {"textDocument": {"uri": uri}})
        alive(serve, f"alive-{cycle}")
        samples.append(serve.rss_mb())
    grown = samples[-1] - samples[2]
    assert grown < 15, f"memory grew {grown:.0f} MB over 7 open/close cycles: {samples}"


# ---- with the tiny local model (a real tokenizer) ------------------------------------


def tiny_options(registry: Path, **extra: Any) -> dict[str, Any]:
    return {
        "backend": "local",
        "registry": str(registry),
        "model": "tiny",
        "debounceMs": 0,
        "maxNewTokens": 8,
        "threads": 1,
        **extra,
    }


def test_a_lone_surrogate_is_isolated_and_errors_carry_no_traceback(
    serve: StdioClient, tmp_path: Path, built_tiny_registry: Path
) -> None:
    serve.initialize(tmp_path, tiny_options(built_tiny_registry))
    bad = (tmp_path / "bad.py").as_uri()
    good = (tmp_path / "good.py").as_uri()
    open_text(serve, bad, "def broken():\n    return '\ud83d'\n")
    open_text(serve, good, "def broken_too():\n    return 1\n\n\ndef other():\n    ")
    replies = [complete(serve, good, 5, 4, "good"), complete(serve, bad, 1, 12, "bad")]
    for reply in replies:
        assert "error" not in reply, reply
        text = str(reply)
        assert "Traceback" not in text and '.py"' not in text and "/work" not in text
    alive(serve)


def test_threads_are_bounded_by_the_machine(
    serve: StdioClient, tmp_path: Path, built_tiny_registry: Path
) -> None:
    serve.initialize(tmp_path, tiny_options(built_tiny_registry, threads=1024))
    uri = (tmp_path / "t.py").as_uri()
    open_text(serve, uri, "def f():\n    ")
    assert "result" in complete(serve, uri, 1, 4, "t")
    assert serve.threads() < 64 + (os.cpu_count() or 1)


def test_internal_errors_reach_the_client_without_traceback() -> None:
    """Whatever fails inside a handler, the reply names the exception type only."""
    import sys

    from pygls.exceptions import JsonRpcInternalError

    from acepilot.server.lsp.server import create_server

    class Buffer:
        def __init__(self) -> None:
            self.data = b""

        def write(self, data: bytes) -> None:
            self.data += data

    server = create_server()
    buffer = Buffer()
    server.attach(buffer)
    try:
        raise TypeError("TextInputSequence must be str: secret_code_here")
    except TypeError:
        error = JsonRpcInternalError.of(sys.exc_info()).to_response_error()
    assert error.data is not None  # pygls puts the traceback there
    server.protocol._send_response("1", error=error)
    reply = buffer.data.decode()
    assert "internal error (TypeError)" in reply
    assert "Traceback" not in reply and "File " not in reply and "secret_code_here" not in reply
