"""A from-scratch JSON-RPC client for attacks on the framing: bytes in, frames out.

pytest-lsp's client refuses to send malformed frames, so the framing tests
(tests/server/lsp/test_lsp_attacks.py) talk to a real `acepilot serve` process
through this one: over its stdin/stdout (`StdioClient`) or a TCP socket
(`TcpClient`). A reader thread parses the server's frames into a queue.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

CLI = [sys.executable, "-m", "acepilot.server.cli"]
CLOSED = object()  # queued when the server closed its end


def frame(payload: Any) -> bytes:
    body = json.dumps(payload).encode()
    return b"Content-Length: %d\r\n\r\n" % len(body) + body


def read_frames(read: Any, out: queue.Queue[Any]) -> None:
    """Parse `Content-Length` frames from `read(n)` into `out` until EOF (then CLOSED)."""
    buffer = b""
    while True:
        while b"\r\n\r\n" not in buffer:
            chunk = read(65536)
            if not chunk:
                out.put(CLOSED)
                return
            buffer += chunk
        header, _, buffer = buffer.partition(b"\r\n\r\n")
        length = 0
        for line in header.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        while len(buffer) < length:
            chunk = read(65536)
            if not chunk:
                out.put(CLOSED)
                return
            buffer += chunk
        out.put(json.loads(buffer[:length]))
        buffer = buffer[length:]


class RawClient:
    """Send raw bytes and JSON-RPC messages; receive the server's messages in order."""

    def __init__(self) -> None:
        self.messages: queue.Queue[Any] = queue.Queue()
        self.closed = False

    def send_bytes(self, data: bytes) -> None:
        raise NotImplementedError

    def send(self, payload: Any) -> None:
        self.send_bytes(frame(payload))

    def receive(self, timeout: float = 20) -> Any:
        """The next message from the server (CLOSED when it closed the stream)."""
        if self.closed:
            return CLOSED
        message = self.messages.get(timeout=timeout)
        if message is CLOSED:
            self.closed = True
        return message

    def response(self, msg_id: Any, timeout: float = 30) -> Any:
        """The response to `msg_id`, skipping notifications and server requests."""
        deadline = time.monotonic() + timeout
        while True:
            message = self.receive(max(0.1, deadline - time.monotonic()))
            if message is CLOSED:
                raise AssertionError(f"the server closed the stream before answering {msg_id!r}")
            if "method" not in message and message.get("id") == msg_id:
                return message

    def request(self, method: str, params: Any, msg_id: Any, timeout: float = 30) -> Any:
        self.send({"jsonrpc": "2.0", "id": msg_id, "method": method, "params": params})
        return self.response(msg_id, timeout)

    def notify(self, method: str, params: Any) -> None:
        self.send({"jsonrpc": "2.0", "method": method, "params": params})

    def initialize(self, root: Path, options: Any = None) -> Any:
        result = self.request(
            "initialize",
            {
                "processId": None,
                "rootUri": root.as_uri(),
                "capabilities": {},
                "initializationOptions": options,
            },
            "init",
        )
        self.notify("initialized", {})
        return result

    def errors_until(self, msg_id: Any, timeout: float = 30) -> tuple[list[Any], Any]:
        """Messages without an id match before the response to `msg_id`, and that response."""
        seen: list[Any] = []
        deadline = time.monotonic() + timeout
        while True:
            message = self.receive(max(0.1, deadline - time.monotonic()))
            if message is CLOSED:
                raise AssertionError(f"closed before answering {msg_id!r}; got {seen}")
            if "method" in message:
                continue
            if message.get("id") == msg_id:
                return seen, message
            seen.append(message)


class StdioClient(RawClient):
    """`acepilot serve` as a subprocess; its stderr goes to a file (the log)."""

    def __init__(self, tmp: Path, env: dict[str, str] | None = None, args: tuple[str, ...] = ()):
        super().__init__()
        self.log = tmp / f"serve-{time.monotonic_ns()}.log"
        environment = {**os.environ, "ACEPILOT_REGISTRY": str(tmp / "no-registry"), **(env or {})}
        environment.pop("ACEPILOT_MODEL", None)
        self._stderr = self.log.open("wb")
        self.process = subprocess.Popen(
            [*CLI, "serve", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=environment,
        )
        assert self.process.stdout is not None
        stdout = self.process.stdout
        self._reader = threading.Thread(
            target=read_frames, args=(lambda n: os.read(stdout.fileno(), n), self.messages)
        )
        self._reader.daemon = True
        self._reader.start()

    def send_bytes(self, data: bytes) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(data)
        self.process.stdin.flush()

    def close_stdin(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()

    def wait(self, timeout: float = 30) -> int:
        return self.process.wait(timeout)

    def stderr(self) -> str:
        self._stderr.flush()
        return self.log.read_text("utf-8", "replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self._stderr.close()

    def rss_mb(self) -> float:
        """The server process' resident memory (Linux /proc)."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmRSS")

    def threads(self) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("Threads:"):
                return int(line.split()[1])
        raise AssertionError("no Threads")


class TcpClient(RawClient):
    """One TCP connection to `acepilot serve --tcp`."""

    def __init__(self, port: int) -> None:
        super().__init__()
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.sock.settimeout(None)
        self._reader = threading.Thread(
            target=read_frames, args=(self._recv, self.messages), daemon=True
        )
        self._reader.start()

    def _recv(self, n: int) -> bytes:
        try:
            return self.sock.recv(n)
        except OSError:
            return b""

    def send_bytes(self, data: bytes) -> None:
        self.sock.sendall(data)

    def close(self) -> None:
        # shutdown first: a close() while the reader thread sits in recv() sends no FIN
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, timeout: float = 60) -> None:
    """Until something listens on `port` (read from /proc: a probe connection is itself an attack)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            with contextlib.suppress(OSError):
                for row in Path(table).read_text().splitlines()[1:]:
                    fields = row.split()
                    if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                        return
        time.sleep(0.1)
    raise AssertionError(f"nothing listens on {port}")
