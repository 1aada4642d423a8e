"""Connections: a hard limit, and a deadline for each request head (uvicorn's h11 protocol).

uvicorn holds a connection that never sends a byte forever (its keep-alive
timer starts only after a first response, and any byte cancels it), and its
`limit_concurrency` answers 503 to requests but keeps the sockets. ~21,000
idle connections once used up the process's 20,000 file descriptors: no
probe or completion got through while they were held. `GuardedH11Protocol`
adds:

- a head deadline: a connection waiting for a request head (a new one, or a
  kept-alive one after its response) is closed when the head has not fully
  arrived within `head_timeout_s`, however slowly bytes trickle in
  (slowloris). The body has its own deadline in the application (408).
- a connection limit: past `max_connections`, the connection that has waited
  longest for a head is closed to make room (or, if every connection is in
  the middle of a request, the new one is closed). Idle sockets cannot keep
  a new client out, and the count never reaches the file limit:
  `fit_to_file_limit` derives both the limit and the listen backlog from
  RLIMIT_NOFILE.

Closed connections are counted (`closed(reason)`: "limit" or "timeout").
"""

from __future__ import annotations

import asyncio
import resource
import time
from collections.abc import Callable
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

MAX_HEAD_BYTES = 16 * 1024  # request line + headers (h11's default, set explicitly)
RESERVED_FILES = 64  # the process's own descriptors: model files, token database, pipes, logs


def fit_to_file_limit(max_connections: int, backlog: int) -> tuple[int, int]:
    """(connections, listen backlog) that fit the open-file limit with room to spare.

    asyncio accepts up to `backlog` sockets per wake-up, and a few wake-ups may
    pass before their connections are counted: keep three backlogs free.
    """
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return max_connections, backlog
    usable = max(16, soft - RESERVED_FILES)
    backlog = max(4, min(backlog, usable // 8))
    return max(1, min(max_connections, usable - 3 * backlog)), backlog


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a head deadline and a connection limit (see the module)."""

    max_connections = 1000
    head_timeout_s = 10.0

    @staticmethod
    def closed(reason: str) -> None:
        """Called for each connection the guard closes (set by `guarded_protocol`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None
        self._waiting_since: float | None = None  # waiting for a request head since

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._wait_for_head()
        if len(self.connections) > self.max_connections:
            waiting = [
                c
                for c in self.connections
                if isinstance(c, GuardedH11Protocol)
                and c is not self
                and c._waiting_since is not None
                and not c.transport.is_closing()
            ]
            victim = min(waiting, key=lambda c: c._waiting_since or 0.0, default=self)
            victim._drop("limit")

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def handle_events(self) -> None:
        super().handle_events()
        if self._waiting_since is not None and self.conn.their_state is not h11.IDLE:
            self._stop_head_timer()  # the head arrived: the request is under way

    def send_400_response(self, msg: str) -> None:
        """uvicorn answers a malformed request with 400; but when the body is the malformed
        part, the application is already answering, and its response then fails with an
        h11 error logged as a traceback (a client could fill the log with them). Close the
        connection instead; the application sees a client that left."""
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            self.logger.warning("Invalid HTTP request body received.")
            cycle.disconnected = True
            cycle.message_event.set()
            self._drop("invalid")
            return
        super().send_400_response(msg)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        closing = self.transport.is_closing()
        if not closing and self.conn.their_state is h11.IDLE and self._waiting_since is None:
            self._wait_for_head()  # kept alive: the next head has the same deadline

    def _wait_for_head(self) -> None:
        self._stop_head_timer()
        self._waiting_since = time.monotonic()
        self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_late)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        self._waiting_since = None

    def _head_late(self) -> None:
        self._head_timer = None
        if self._waiting_since is not None and self.conn.their_state is h11.IDLE:
            self._drop("timeout")

    def _drop(self, reason: str) -> None:
        self._stop_head_timer()
        if not self.transport.is_closing():
            self.closed(reason)
            self.transport.close()


def guarded_protocol(
    max_connections: int, head_timeout_s: float, closed: Callable[[str], None]
) -> type[GuardedH11Protocol]:
    """The protocol class to give uvicorn.Config(http=...), with these settings."""
    return type(
        "GuardedH11Protocol",
        (GuardedH11Protocol,),
        {
            "max_connections": max_connections,
            "head_timeout_s": head_timeout_s,
            "closed": staticmethod(closed),
        },
    )
