"""One generation between the batch scheduler's thread and the HTTP response reading it.

The scheduler calls `on_token` and `on_done` on its own thread; the response
(a server-sent event stream, or one JSON body) reads on the event loop. Two
things can end first: the generation, or the reader (the client closed the
stream). Whichever comes second does the clean-up, exactly once: observe the
finished generation in the metrics and release the served model version (so
a drained version is freed only when its last generation is over). The
states, all changed on the event loop:

    RUNNING ──scheduler done──▶ DELIVERED ──reader takes the end──▶ READ ──close──▶ CLOSED
       │                            │
       └──reader closes──▶ ABANDONED (cancel sent) ──scheduler done──▶ CLOSED
                                    └──reader closes (result unread)──▶ CLOSED

`close()` never awaits: Starlette cancels a stream's body when the client
leaves, and a cancelled task cannot await any more.
"""

from __future__ import annotations

import asyncio
import enum
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import StreamingResponse

from acepilot.server.engine.batch import BatchTicket
from acepilot.server.engine.generation import Generation

FINISH = {"eos": "stop", "stop": "stop", "length": "length", "deadline": "length"}


class Phase(enum.Enum):
    RUNNING = "running"  # submitted: pieces may arrive
    DELIVERED = "delivered"  # the scheduler finished; the end waits in the queue
    READ = "read"  # the reader took the end (and reported it)
    ABANDONED = "abandoned"  # the reader left first; the generation was told to stop
    CLOSED = "closed"  # observed (if it finished well) and released


class CompletionRun:
    """The state of one submitted generation (see the module docstring)."""

    def __init__(
        self,
        observe: Callable[[BatchTicket], None],
        release: Callable[[], None],
        version: str = "",
    ) -> None:
        self.phase = Phase.RUNNING
        self.version = version  # the model version generating it (for the usage reports)
        self.ticket: BatchTicket | None = None  # set by the caller right after submit
        self._observe = observe
        self._release = release
        self._loop = asyncio.get_running_loop()
        self._updates: asyncio.Queue[str | BatchTicket] = asyncio.Queue()

    # ---- the scheduler's thread ----------------------------------------------

    def on_token(self, delta: str) -> None:
        self._loop.call_soon_threadsafe(self._updates.put_nowait, delta)

    def on_done(self, ticket: BatchTicket) -> None:
        self._loop.call_soon_threadsafe(self._done, ticket)

    # ---- the event loop ------------------------------------------------------

    def _done(self, ticket: BatchTicket) -> None:
        if self.phase is Phase.RUNNING:
            self.phase = Phase.DELIVERED
            self._updates.put_nowait(ticket)
        elif self.phase is Phase.ABANDONED:
            self._settle(ticket)

    async def pieces(self) -> AsyncIterator[str]:
        """The decoded pieces as they come; ends when the generation has ended."""
        while True:
            item = await self._updates.get()
            if isinstance(item, BatchTicket):
                self.phase = Phase.READ
                return
            yield item

    def close(self) -> None:
        """The reader is done, at the end or not; safe to call again."""
        if self.phase is Phase.READ:
            self.phase = Phase.CLOSED
            self._release()
        elif self.phase is Phase.RUNNING:
            self.phase = Phase.ABANDONED
            assert self.ticket is not None
            self.ticket.cancel.set()
        elif self.phase is Phase.DELIVERED:  # finished, but nobody read the end
            assert self.ticket is not None
            self._settle(self.ticket)

    def _settle(self, ticket: BatchTicket) -> None:
        self.phase = Phase.CLOSED
        if ticket.result is not None and ticket.error is None:
            self._observe(ticket)
        self._release()


def chunk(meta: dict[str, Any], text: str, finish: str | None) -> bytes:
    body = {
        **meta,
        "object": "text_completion",
        "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish}],
    }
    return event(body)


def event(body: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(body).encode() + b"\n\n"


def usage(result: Generation) -> dict[str, int]:
    out = len(result.token_ids)
    return {
        "prompt_tokens": result.prompt_tokens,
        "completion_tokens": out,
        "total_tokens": result.prompt_tokens + out,
    }


def plain_body(meta: dict[str, Any], result: Generation) -> dict[str, Any]:
    return {
        **meta,
        "object": "text_completion",
        "choices": [
            {
                "text": result.text,
                "index": 0,
                "logprobs": None,
                "finish_reason": FINISH.get(result.finish_reason, "stop"),
            }
        ],
        "usage": usage(result),
    }


class ClosingStream(StreamingResponse):
    """A server-sent events response that always closes its run when it ends.

    Starlette may cancel the response before the body generator ever started
    (the client left at once); the generator's own `finally` would then never
    run, and the generation would go on for nobody.
    """

    def __init__(self, content: AsyncIterator[bytes], run: CompletionRun) -> None:
        super().__init__(
            content,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
        self.run = run

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.run.close()


async def watch_disconnect(request: Request, ticket: BatchTicket) -> None:
    """Cancel the generation when the client disconnects (non-streamed requests)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            ticket.cancel.set()
            return
