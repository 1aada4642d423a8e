"""Idle prefill (llama.vim's idea): while the user pauses, the next prompt's head goes into the KV cache.

    didChange ──(idlePrefillMs without a change or a request)──> build the prompt at the
      edit's position (pipeline.build) ──> its head, up to the cursor line ──> the local
      engine's `prefill` into the document's session

A request after the pause then prefills only what is new (the cursor line and
whatever changed), not a context head that a save, an edit in another file or
a new cursor block changed. It is armed again after each completion request
(one answered from the cache or typing-ahead leaves the KV cache behind).

It never slows a request: a request disarms the timer and cancels a prefill in
progress (the engine stops within one chunk of 32 tokens, and never queues
for its lock); it does not start while a request is in flight; one runs at a
time, for the document last touched. Off with `idlePrefillMs` 0, with
`kvReuse` off, and with the remote backend (its server has its own cache:
nothing is sent).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger(__name__)

# What the timer calls: (uri, line, character, cancel) -> the engine's Prefilled, or None.
Runner = Callable[[str, int, int, threading.Event], Awaitable[Any]]


class IdlePrefill:
    """One timer and at most one prefill in progress for a session (see the module docstring)."""

    def __init__(self, run: Runner) -> None:
        self._run = run
        self._timer: asyncio.TimerHandle | None = None
        self._cancel: threading.Event | None = None  # of the prefill in progress
        self._task: asyncio.Task[None] | None = None
        # counts for `acepilot/stats` (never code or paths)
        self.runs = 0  # prefills that fed the engine (or were stopped doing so)
        self.prefilled_tokens = 0  # tokens they fed (the next request's reused_tokens)
        self.cancelled = 0  # stopped by a request (what they fed is kept)
        self.busy = 0  # the engine was generating: nothing done

    def arm(self, uri: str, line: int, character: int, delay_ms: int) -> None:
        """(Re)start the timer: after `delay_ms` of quiet, prefill at this position."""
        self.disarm()
        if delay_ms <= 0:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no event loop (a headless caller outside asyncio): nothing to do
            return
        self._timer = loop.call_later(delay_ms / 1000, self._fire, uri, line, character)

    def disarm(self) -> None:
        """A change or a request: no prefill now, and one in progress stops."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._cancel is not None:
            self._cancel.set()
            self._cancel = None

    def _fire(self, uri: str, line: int, character: int) -> None:
        self._timer = None
        if self._task is not None and not self._task.done():
            return  # the previous one is still stopping
        cancel = self._cancel = threading.Event()
        self._task = asyncio.ensure_future(self._prefill(uri, line, character, cancel))

    async def _prefill(self, uri: str, line: int, character: int, cancel: threading.Event) -> None:
        try:
            done = await self._run(uri, line, character, cancel)
        except Exception:  # an idle optimisation must never take the server down
            log.exception("idle prefill failed")
            return
        if done is None:
            return
        if done.finish_reason == "busy":
            self.busy += 1
            return
        if not done.prefilled_tokens and done.finish_reason != "cancelled":
            return  # the head was cached already (the request before the pause fed it)
        self.runs += 1
        self.prefilled_tokens += done.prefilled_tokens
        self.cancelled += done.finish_reason == "cancelled"
        log.debug(
            "idle prefill: %d tokens fed (%d cached), %s",
            done.prefilled_tokens,
            done.reused_tokens,
            done.finish_reason,
        )

    def close(self) -> None:
        self.disarm()
        if self._task is not None:
            self._task.cancel()

    def counts(self) -> dict[str, int]:
        return {
            "runs": self.runs,
            "prefilled_tokens": self.prefilled_tokens,
            "cancelled": self.cancelled,
            "busy": self.busy,
        }
