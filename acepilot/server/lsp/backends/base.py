"""What every backend is: a `Request` and a `Ticket` in, a `Result` out (the pipeline's stage 4).

Both backends (local.py: the engine in this process; remote.py: an
OpenAI-compatible server) stop when the ticket is cancelled (a newer request
for the document, `$/cancelRequest`). Neither logs prompts or completions.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from acepilot.server.errors import AcepilotError
from acepilot.server.fim import FimFormat, RepoFormat

log = logging.getLogger(__name__)


class BackendError(AcepilotError):
    """The backend cannot complete (model missing, server unreachable, bad answer).

    `kind` groups errors for the user: "unreachable" (no connection), "unauthorized"
    (HTTP 401/403: the token), "error" (anything else). The server tells the user
    once per kind, not once per keystroke.
    """

    def __init__(self, message: str, kind: str = "error") -> None:
        super().__init__(message)
        self.kind = kind


class Ticket:
    """One completion request's cancellation: for the event loop and for worker threads."""

    def __init__(self) -> None:
        # The engine polls `stop` between tokens. It is also set when the completion
        # already has enough text (the block ended): that is not a cancellation.
        self.stop = threading.Event()
        self._cancelled = False
        self._async = asyncio.Event()
        # For stats: time spent waiting (model load, debounce, the backend), and
        # whether the request went through prompt building (else no overhead to count).
        self.waited_ms = 0.0
        self.prompt_built = False
        # What answered it: "model" (with its generation's tokens and finish reason) or "cache".
        self.source = "model"
        self.generated_tokens = 0
        self.finish_reason = ""

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def cancel(self) -> None:
        self._cancelled = True
        self.stop.set()
        self._async.set()

    async def wait(self, timeout: float | None) -> bool:
        """Sleep up to `timeout` seconds (None: until cancelled); True if cancelled."""
        if timeout is not None and timeout <= 0:
            return self.cancelled
        try:
            await asyncio.wait_for(self._async.wait(), timeout)
        except TimeoutError:
            return self.cancelled
        return True


@dataclass(frozen=True, kw_only=True)
class Request:
    prompt: str
    max_new_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    deadline: float | None = None  # seconds
    session: str | None = None  # the document: KV reuse across keystrokes (None: cold)
    suffix: str | None = None  # remote FIM: the API's `suffix` field


@dataclass(frozen=True, kw_only=True)
class Result:
    text: str
    finish_reason: str
    prompt_tokens: int = 0
    reused_tokens: int = 0
    prefill_ms: float = 0.0
    decode_ms: float = 0.0
    generated_tokens: int = 0
    # False: stopped before the model did any work (cancelled while waiting for the
    # engine, or before the server answered): it cost no tokens, stats skip it.
    ran: bool = True


Observer = Callable[[Result], None]


class Backend(Protocol):
    kind: str  # "local" or "remote"
    model: str  # what the status bar shows
    device: str
    fim: FimFormat | None  # FIM special tokens written into the prompt (local models)
    repo_format: RepoFormat | None  # repository-level format of workspace context (local models)
    suffix_field: bool  # FIM through the API's `suffix` field (remote)
    in_flight_tokens: int  # pieces streamed by the generation in progress (stats)
    # Called on the event loop with every generation's Result, also one that was
    # cancelled or abandoned by its request (the tokens it cost still count).
    observer: Observer | None

    def count_tokens(self, text: str) -> int: ...

    async def prepare(self) -> None:
        """Learn what the backend supports (remote: GET /v1/models); cheap once done."""

    async def generate(
        self, request: Request, ticket: Ticket, watch: Callable[[str], bool] | None = None
    ) -> Result: ...

    async def drop_session(self, session: str) -> None: ...

    async def close(self) -> None: ...
