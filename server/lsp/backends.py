"""Where completions come from: the local engine, or a remote OpenAI-compatible server.

Both take a `Request` and a `Ticket` and return a `Result`; both stop when the
ticket is cancelled (a newer request for the document, `$/cancelRequest`).

- `LocalBackend`: the registry entry run by `server.engine` in this process.
  `Engine.generate` blocks, so it runs on a dedicated worker thread, never on
  the event loop; the ticket's threading.Event stops it within one token; one
  engine session per document keeps its KV cache across keystrokes.
- `RemoteBackend`: POST {url}/completions (OpenAI completions API: vLLM,
  llama.cpp, TGI, Ollama, Acepilot's team server) with a bearer token,
  through httpx's async client; cancelling the ticket abandons the request.

Neither logs prompts or completions.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from server.errors import AcepilotError
from server.lsp.config import Config
from server.lsp.prompt import Fim, estimate_tokens

log = logging.getLogger(__name__)


class BackendError(AcepilotError):
    """The backend cannot complete (model missing, server unreachable, bad answer)."""


class Ticket:
    """One completion request's cancellation: for the event loop and for worker threads."""

    def __init__(self) -> None:
        # The engine polls `stop` between tokens. It is also set when the completion
        # already has enough text (the block ended): that is not a cancellation.
        self.stop = threading.Event()
        self._cancelled = False
        self._async = asyncio.Event()

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


@dataclass(frozen=True)
class Request:
    prompt: str
    max_new_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    deadline: float | None = None  # seconds
    session: str | None = None  # the document: KV reuse across keystrokes


@dataclass(frozen=True)
class Result:
    text: str
    finish_reason: str
    prompt_tokens: int = 0
    reused_tokens: int = 0
    prefill_ms: float = 0.0
    decode_ms: float = 0.0


class Backend(Protocol):
    kind: str  # "local" or "remote"
    model: str  # what the status bar shows
    device: str
    fim: Fim | None

    def count_tokens(self, text: str) -> int: ...

    async def generate(
        self, request: Request, ticket: Ticket, watch: Callable[[str], bool] | None = None
    ) -> Result: ...

    async def drop_session(self, session: str) -> None: ...

    async def close(self) -> None: ...


# ---- local -------------------------------------------------------------------


class LocalBackend:
    """The engine in this process, on one worker thread (see the module docstring)."""

    kind = "local"

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.model = f"{engine.entry.name} {engine.entry.version}"
        self.device = str(getattr(engine, "device", "cpu"))
        self.fim = Fim.from_manifest(engine.entry.manifest.get("tokenizer", {}).get("fim"))
        self._executor = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix="acepilot-engine"
        )

    @classmethod
    def load(cls, config: Config) -> LocalBackend:
        """Resolve and load the model (blocking: call it off the event loop)."""
        from server.engine import Engine
        from server.registry import Registry

        registry = Registry(config.registry)
        name = config.model or os.environ.get("ACEPILOT_MODEL") or only_model(registry)
        entry = registry.resolve(name)
        return cls(Engine.load(entry, threads=config.threads))

    def count_tokens(self, text: str) -> int:
        return len(self.engine.tokenizer.encode(text, add_special_tokens=False).ids)

    async def generate(
        self, request: Request, ticket: Ticket, watch: Callable[[str], bool] | None = None
    ) -> Result:
        from server.engine import GenerationParams

        params = GenerationParams(
            max_new_tokens=min(request.max_new_tokens, self.engine.max_length - 1),
            temperature=request.temperature,
            top_p=request.top_p,
            stop=request.stop,
            deadline=request.deadline,
        )
        on_token = None
        if watch is not None:
            pieces: list[str] = []

            def on_token(delta: str) -> None:
                pieces.append(delta)
                if watch("".join(pieces)):
                    ticket.stop.set()  # enough text: stop like a cancel, keep the text

        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(
            self._executor,
            lambda: self.engine.generate(
                request.prompt,
                params,
                session=request.session,
                cancel=ticket.stop,
                on_token=on_token,
            ),
        )
        try:
            generation = await future
        except asyncio.CancelledError:
            ticket.cancel()  # the thread stops within one token
            raise
        return Result(
            generation.text,
            generation.finish_reason,
            generation.prompt_tokens,
            generation.reused_tokens,
            generation.prefill_ms,
            generation.decode_ms,
        )

    async def drop_session(self, session: str) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self.engine.drop_session, session)

    async def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def only_model(registry: Any) -> str:
    names = registry.names()
    if len(names) == 1:
        return str(names[0])
    if not names:
        raise BackendError(
            f"no models in the registry {registry.root}: build one with "
            "`acepilot model build`, or set acepilot.model"
        )
    raise BackendError(
        f"several models in the registry {registry.root} ({', '.join(names)}): set acepilot.model"
    )


# ---- remote ------------------------------------------------------------------


def completions_url(url: str) -> str:
    """http://host:8000 or .../v1 or .../v1/completions -> the completions endpoint."""
    url = url.rstrip("/")
    if url.endswith("/completions"):
        return url
    if url.endswith("/v1"):
        return url + "/completions"
    return url + "/v1/completions"


def build_body(request: Request, model: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "prompt": request.prompt,
        "max_tokens": request.max_new_tokens,
        "temperature": request.temperature,
        "top_p": request.top_p,
        "n": 1,
        "stream": False,
    }
    if request.stop:
        body["stop"] = list(request.stop)[:4]  # the OpenAI API allows at most 4
    if model:
        body["model"] = model
    return body


def parse_response(data: Any) -> tuple[str, str, int]:
    """(text, finish_reason, prompt_tokens) from an OpenAI completions response."""
    try:
        choice = data["choices"][0]
        text = choice["text"]
        if not isinstance(text, str):
            raise TypeError
    except (KeyError, IndexError, TypeError):
        raise BackendError("the remote backend's answer is not an OpenAI completion") from None
    reason = choice.get("finish_reason") or "stop"
    usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
    prompt_tokens = usage.get("prompt_tokens", 0)
    return text, str(reason), prompt_tokens if isinstance(prompt_tokens, int) else 0


class RemoteBackend:
    """An OpenAI-compatible completions endpoint over HTTP (see the module docstring)."""

    kind = "remote"
    device = "remote"
    fim: Fim | None = None

    def __init__(self, config: Config) -> None:
        import httpx

        assert config.remote_url is not None
        self.url = completions_url(config.remote_url)
        self.model = config.remote_model or self.url
        self.model_field = config.remote_model
        headers = {"User-Agent": "acepilot-lsp"}
        if config.remote_token:
            headers["Authorization"] = f"Bearer {config.remote_token}"
        timeout = config.timeout_ms / 1000 if config.timeout_ms else None
        self._client = httpx.AsyncClient(headers=headers, timeout=timeout)

    def count_tokens(self, text: str) -> int:
        return estimate_tokens(text)

    async def generate(
        self, request: Request, ticket: Ticket, watch: Callable[[str], bool] | None = None
    ) -> Result:
        import httpx

        started = time.perf_counter()
        post = asyncio.ensure_future(
            self._client.post(self.url, json=build_body(request, self.model_field))
        )
        stop = asyncio.ensure_future(ticket.wait(None))
        try:
            await asyncio.wait({post, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            if not post.done():
                post.cancel()
        if not post.done() or post.cancelled():
            return Result("", "cancelled")
        try:
            response = post.result()
        except httpx.TimeoutException:
            return Result("", "deadline")
        except httpx.HTTPError as exc:
            raise BackendError(
                f"cannot reach the remote backend {self.url} ({type(exc).__name__})"
            ) from None
        if response.status_code in (401, 403):
            raise BackendError(
                f"the remote backend refused the token (HTTP {response.status_code})"
            )
        if response.status_code != 200:
            raise BackendError(f"the remote backend answered HTTP {response.status_code}")
        try:
            data = response.json()
        except ValueError:
            raise BackendError("the remote backend's answer is not JSON") from None
        text, reason, prompt_tokens = parse_response(data)
        elapsed = (time.perf_counter() - started) * 1000
        return Result(text, reason, prompt_tokens, 0, 0.0, elapsed)

    async def drop_session(self, session: str) -> None:
        return None

    async def close(self) -> None:
        await self._client.aclose()


def load_backend(config: Config) -> Backend:
    """A backend for `config` (blocking for the local engine: call it off the loop)."""
    if config.backend == "remote":
        return RemoteBackend(config)
    return LocalBackend.load(config)
