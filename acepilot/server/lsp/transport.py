"""Bounded JSON-RPC framing over stdio and TCP (replaces pygls' readers).

pygls reads `Content-Length` frames trusting the client: a header of 10^12
bytes allocates it (MemoryError kills the process), a negative or non-numeric
length is silently skipped while every later frame is mis-parsed (the server
goes deaf), a header line has no length limit, and over TCP every connection
shares one protocol object (a second client receives the first one's answers,
and any disconnect ends the server). Here:

- Header lines are bounded (MAX_HEADER_LINE bytes, MAX_HEADERS per frame) and
  frames are bounded (MAX_FRAME_BYTES).
- A header block without a usable Content-Length is answered with a JSON-RPC
  ParseError (id null); reading resumes at the next `Content-Length:` header,
  so the stream stays usable.
- A frame over the limit is answered the same way and the connection is closed
  (its body cannot be skipped safely): stdio then exits with status 1, a TCP
  server keeps listening.
- A body that is not JSON (or nests without end) is answered with ParseError.
- TCP: one editor session at a time, each with a server of its own (a fresh
  `AcepilotServer`: no state, no answers shared between connections). A second
  connection while one is active gets an error message and is closed; a
  connection's end (EOF, garbage, `exit`) ends only its session.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

log = logging.getLogger(__name__)

MAX_FRAME_BYTES = 256 << 20  # a 64 Mi-character document, JSON-escaped, fits
MAX_HEADER_LINE = 8192
MAX_HEADERS = 32
READ_CHUNK = 1 << 16
CONTENT_LENGTH = re.compile(rb"content-length[ \t]*:", re.IGNORECASE)
PARSE_ERROR = -32700
BUSY_WAIT_S = 2.0  # TCP: how long a new connection waits for the previous one to end


class ByteSource(Protocol):
    async def read(self, n: int) -> bytes:
        """Up to `n` bytes; b"" at the end of the stream."""


@dataclass(frozen=True)
class BadFrame:
    """A frame that could not be read: answered with `message`; `fatal` closes the stream."""

    message: str
    fatal: bool = False


class FrameReader:
    """`Content-Length` frames from a byte source, with every size bounded."""

    def __init__(self, source: ByteSource) -> None:
        self.source = source
        self.buffer = bytearray()
        self.eof = False
        self._resync = False  # after a bad frame: skip to the next Content-Length header

    async def _fill(self) -> bool:
        if self.eof:
            return False
        chunk = await self.source.read(READ_CHUNK)
        if not chunk:
            self.eof = True
            return False
        self.buffer += chunk
        return True

    async def _line(self) -> bytes | None:
        """One header line with its break; None at EOF; b"\\x00" for an overlong line."""
        start = 0
        while True:
            index = self.buffer.find(b"\n", start)
            if index >= 0:
                line = bytes(self.buffer[: index + 1])
                del self.buffer[: index + 1]
                return line if len(line) <= MAX_HEADER_LINE else b"\x00"
            if len(self.buffer) > MAX_HEADER_LINE:
                # Too long: drop what we have, keep dropping up to the line's end.
                start = 0
                self.buffer.clear()
                while True:
                    if not await self._fill():
                        return None
                    index = self.buffer.find(b"\n")
                    if index >= 0:
                        del self.buffer[: index + 1]
                        return b"\x00"
                    self.buffer.clear()
            start = len(self.buffer)
            if not await self._fill():
                return None

    async def next(self) -> bytes | BadFrame | None:
        """The next frame's body, a BadFrame to answer, or None at the end of the stream."""
        length: int | None = None
        problem = ""
        headers = 0
        while True:
            line = await self._line()
            if line is None:
                return None
            if self._resync:
                found = CONTENT_LENGTH.search(line)
                if found is None:
                    continue
                line = line[found.start() :]
                self._resync = False
            headers += 1
            if line == b"\x00":
                problem = problem or f"a header line over {MAX_HEADER_LINE} bytes"
            elif not line.strip():
                if headers == 1:
                    continue  # stray blank lines between frames
                break
            elif headers > MAX_HEADERS:
                problem = problem or f"more than {MAX_HEADERS} header lines"
            else:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    text = value.strip()
                    if text.isdigit() and len(text) <= 20:
                        length = int(text)
                    else:
                        problem = "a Content-Length that is not a non-negative integer"
        if problem or length is None:
            self._resync = True
            return BadFrame(f"malformed frame header: {problem or 'no Content-Length'}")
        if length > MAX_FRAME_BYTES:
            return BadFrame(
                f"frame of {length} bytes refused: the limit is {MAX_FRAME_BYTES} bytes",
                fatal=True,
            )
        while len(self.buffer) < length:
            if not await self._fill():
                return None
        body = bytes(self.buffer[:length])
        del self.buffer[:length]
        return body


def parse_error(message: str) -> bytes:
    body = json.dumps(
        {"jsonrpc": "2.0", "id": None, "error": {"code": PARSE_ERROR, "message": message}}
    ).encode()
    return b"Content-Length: %d\r\n\r\n" % len(body) + body


class Session(Protocol):
    """What the framing needs of a language-server session (AcepilotServer)."""

    exit_code: int | None

    def receive(self, body: bytes) -> None: ...

    def write_raw(self, data: bytes) -> None: ...

    async def close_session(self) -> None: ...


async def serve_stream(source: ByteSource, session: Session, ended: asyncio.Event) -> None:
    """Read frames into `session` until EOF, a fatal frame or `ended` (the `exit` notification)."""
    reader = FrameReader(source)
    while not ended.is_set():
        reading = asyncio.ensure_future(reader.next())
        stopping = asyncio.ensure_future(ended.wait())
        done, _ = await asyncio.wait({reading, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if reading not in done:
            reading.cancel()
            return
        item = reading.result()
        if item is None:
            log.info("the client closed the connection")
            return
        if isinstance(item, BadFrame):
            log.warning("bad frame from the client: %s", item.message)
            session.write_raw(parse_error(item.message))
            if item.fatal:
                log.error("closing the connection: %s", item.message)
                return
            continue
        session.receive(item)


# ---- stdio -------------------------------------------------------------------------


class StdinSource:
    """stdin read by a daemon thread with os.read (never blocks the loop or the exit)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=64)
        self.loop = asyncio.get_running_loop()
        threading.Thread(target=self._pump, name="acepilot-stdin", daemon=True).start()

    def _pump(self) -> None:
        while True:
            try:
                chunk = os.read(self.fd, READ_CHUNK)
            except OSError:
                chunk = b""
            future = asyncio.run_coroutine_threadsafe(self.queue.put(chunk), self.loop)
            try:
                future.result()
            except Exception:  # the loop is gone: the server is exiting
                return
            if not chunk:
                return

    async def read(self, n: int) -> bytes:
        return await self.queue.get()


class StdoutWriter:
    """pygls' writer interface on stdout's file descriptor."""

    def __init__(self) -> None:
        self.stream = sys.stdout.buffer
        self._lock = threading.Lock()

    def write(self, data: bytes) -> None:
        with self._lock:
            try:
                self.stream.write(data)
                self.stream.flush()
            except (BrokenPipeError, ValueError):  # the client is gone
                pass

    def close(self) -> None:
        pass


def run_stdio(make_session: Callable[[], Any]) -> int:
    """Serve one session on stdin/stdout; the process' exit status."""

    async def main() -> int:
        session = make_session()
        session.attach(StdoutWriter())
        try:
            await serve_stream(StdinSource(sys.stdin.fileno()), session, session.ended)
        finally:
            await session.close_session()
        code = session.exit_code
        return 1 if code is None else int(code)

    return asyncio.run(main())


# ---- TCP ---------------------------------------------------------------------------


class StreamSource:
    def __init__(self, reader: asyncio.StreamReader) -> None:
        self.reader = reader

    async def read(self, n: int) -> bytes:
        try:
            return await self.reader.read(n)
        except (ConnectionError, OSError):
            return b""


class StreamWriterAdapter:
    """pygls' writer interface on an asyncio StreamWriter (ignores a peer that went away)."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer

    def write(self, data: bytes) -> None:
        if not self.writer.is_closing():
            self.writer.write(data)

    def close(self) -> None:
        self.writer.close()


def run_tcp(host: str, port: int, make_session: Callable[[], Any]) -> int:
    """Listen on host:port; one session at a time, each with a fresh server (module docstring)."""
    busy = asyncio.Lock()

    async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:  # a client that just left may not have been noticed yet: wait a little
                await asyncio.wait_for(busy.acquire(), BUSY_WAIT_S)
            except TimeoutError:
                log.warning("refused a second connection: one editor session at a time")
                writer.write(
                    parse_error(
                        "another client is connected: this server serves one editor at a time"
                    )
                )
                await writer.drain()
                return
            await one_session(reader, writer)
        except Exception:  # one connection's failure never ends the server
            log.exception("a connection failed")
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    async def one_session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Holds `busy` (acquired) while the connection is open, not while cleaning up."""
        log.info("client connected")
        try:
            session = make_session()
            session.attach(StreamWriterAdapter(writer))
            await serve_stream(StreamSource(reader), session, session.ended)
        finally:
            busy.release()
        await session.close_session()
        log.info("session ended")

    async def main() -> None:
        server = await asyncio.start_server(connection, host, port)
        log.info("listening on %s:%s", host, port)
        async with server:
            await server.serve_forever()

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        return 130
    return 0
