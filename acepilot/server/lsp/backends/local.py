"""The local backend: the registry's model run by `acepilot.server.engine` in this process.

`Engine.generate` blocks, so it runs on a dedicated worker thread, never on
the event loop; the ticket's threading.Event stops it within one token; one
engine session per document keeps its KV cache across keystrokes. A model
named in the registry follows its production pointer (acepilot/server/production.py;
the session swaps backends, see acepilot/server/lsp/session.py).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Callable
from typing import Any

from acepilot.server.lsp.backends.base import Observer, Request, Result, Ticket
from acepilot.server.lsp.config import Config
from acepilot.server.production import ProductionFollower, default_model


class LocalBackend:
    """The engine in this process, on one worker thread (see the module docstring)."""

    kind = "local"
    suffix_field = False

    def __init__(self, engine: Any, follower: ProductionFollower | None = None) -> None:
        self.engine = engine
        self.follower = follower  # the production pointer this model came from, if any
        self.model = f"{engine.entry.name} {engine.entry.version}"
        self.device = str(getattr(engine, "device", "cpu"))
        self.fim = engine.entry.fim
        self.repo_format = getattr(engine.entry, "repo_format", None)
        self.in_flight_tokens = 0
        self.observer: Observer | None = None
        self._idle_cancel: threading.Event | None = None  # the idle prefill in progress
        self._executor = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix="acepilot-engine"
        )

    @classmethod
    def load(cls, config: Config) -> LocalBackend:
        """Resolve and load the model (blocking: call it off the event loop)."""
        from acepilot.server.engine import Engine
        from acepilot.server.registry import Registry

        registry = Registry(config.registry)
        name = default_model(registry, config.model, "set acepilot.model")
        entry = registry.resolve(name)
        # A registry name (not an entry directory) follows its production pointer.
        follower = None
        if name in registry.names():
            follower = ProductionFollower(registry, name, serving=entry.version)
        return cls(Engine.load(entry, threads=config.threads), follower)

    def successor(self, entry: Any, config: Config) -> LocalBackend:
        """A backend for another version of the same model (blocking: loads and checks it)."""
        from acepilot.server.engine import Engine

        return LocalBackend(Engine.load(entry, threads=config.threads), self.follower)

    def retire(self) -> None:
        """Stop taking work; what was submitted still finishes (a swap fails no request)."""
        self._executor.shutdown(wait=False)

    def count_tokens(self, text: str) -> int:
        return len(self.engine.tokenizer.encode(text, add_special_tokens=False).ids)

    async def prepare(self) -> None:
        return None

    async def prefill(
        self, prompt: str, session: str, max_new_tokens: int, cancel: threading.Event
    ) -> Any:
        """Idle prefill of a document's KV cache (engine.prefill) on the engine's thread.

        Stopped by `cancel` or by the next `generate`, within one small chunk.
        """
        self._idle_cancel = cancel

        def run() -> Any:
            return self.engine.prefill(
                prompt, session=session, max_new_tokens=max_new_tokens, cancel=cancel
            )

        return await asyncio.get_running_loop().run_in_executor(self._executor, run)

    async def generate(
        self, request: Request, ticket: Ticket, watch: Callable[[str], bool] | None = None
    ) -> Result:
        from acepilot.server.engine import GenerationParams

        idle = self._idle_cancel
        if idle is not None:
            idle.set()  # a request goes first: an idle prefill ahead of it stops

        params = GenerationParams(
            max_new_tokens=min(request.max_new_tokens, self.engine.max_length - 1),
            temperature=request.temperature,
            top_p=request.top_p,
            stop=request.stop,
            deadline=request.deadline,
        )
        pieces: list[str] = []

        def on_token(delta: str) -> None:  # on the engine's thread
            pieces.append(delta)
            self.in_flight_tokens = len(pieces)
            if watch is not None and watch("".join(pieces)):
                ticket.stop.set()  # enough text: stop like a cancel, keep the text

        def run() -> Any:
            self.in_flight_tokens = 0
            try:
                return self.engine.generate(
                    request.prompt,
                    params,
                    session=request.session,
                    cancel=ticket.stop,
                    on_token=on_token,
                )
            finally:
                self.in_flight_tokens = 0

        loop = asyncio.get_running_loop()
        job = self._executor.submit(run)
        # Report every generation, also one whose request was cancelled meanwhile:
        # the thread finishes it (within a token) after the request is gone.
        job.add_done_callback(lambda done: self._report(loop, done))
        try:
            generation = await asyncio.wrap_future(job)
        except asyncio.CancelledError:
            ticket.cancel()  # the thread stops within one token
            raise
        return result_of(generation)

    def _report(self, loop: asyncio.AbstractEventLoop, job: concurrent.futures.Future[Any]) -> None:
        observer = self.observer
        if observer is None or job.cancelled() or job.exception() is not None:
            return
        result = result_of(job.result())
        with contextlib.suppress(RuntimeError):  # a closed loop: the server is exiting
            loop.call_soon_threadsafe(observer, result)

    async def drop_session(self, session: str) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self.engine.drop_session, session)

    async def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def result_of(generation: Any) -> Result:
    """The engine's Generation as a backend Result."""
    return Result(
        text=generation.text,
        finish_reason=generation.finish_reason,
        prompt_tokens=generation.prompt_tokens,
        reused_tokens=generation.reused_tokens,
        prefill_ms=generation.prefill_ms,
        decode_ms=generation.decode_ms,
        generated_tokens=len(generation.token_ids),
        ran=generation.prefill_ms > 0 or bool(generation.token_ids),
    )
