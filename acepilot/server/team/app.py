"""The team server's HTTP API: a Starlette application.

- `POST /v1/completions`: the OpenAI completions API (model, prompt, suffix,
  max_tokens, temperature, top_p, stop, stream, n=1, seed, user), streamed as
  server-sent events when `stream` is true. Closing the stream (or the
  connection) cancels the generation at the next token boundary.
- `GET /v1/models`: the served model, with an "acepilot" object (fim, version).
- `POST /v1/telemetry`: editors' shown/accepted/rejected counts per language.
- `GET /healthz` (the process answers), `GET /readyz` (a model is loaded),
  `GET /metrics` (Prometheus text format).

Every /v1 request needs `Authorization: Bearer <token>` (401 otherwise).
Errors are JSON (`{"error": {"message", "type", "param", "code"}}`) and the
server keeps serving. Nothing here logs or exports prompt or completion text,
nor tokens: logs name the token's *name*.

Requests from one token share a KV cache row (keyed by token name and the
optional OpenAI `user` field), so a developer typing on prefills only what
changed since their last request.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from acepilot.server.engine.batch import BatchTicket, QueueFull
from acepilot.server.engine.generation import Generation, GenerationParams
from acepilot.server.team.limits import RateLimiter, retry_after
from acepilot.server.team.metrics import ServerMetrics
from acepilot.server.team.models import ModelManager, Served, entry_created
from acepilot.server.team.tokens import TokenStore

log = logging.getLogger(__name__)

FINISH = {"eos": "stop", "stop": "stop", "length": "length", "deadline": "length"}
TELEMETRY_EVENTS = ("shown", "accepted", "rejected")
LANGUAGE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+#-]{0,31}$")
MAX_LANGUAGES = 64  # distinct language labels in /metrics; more become "other"
MAX_TELEMETRY_EVENTS = 1000
MAX_STOP = 4
MAX_STOP_CHARS = 256
MAX_USER_CHARS = 256


@dataclass(frozen=True)
class Limits:
    """What one request may ask for, and how fast one token may ask."""

    max_body_bytes: int = 1 << 20
    max_prompt_tokens: int = 4096
    max_tokens: int = 512
    rate: float = 20.0  # requests per second per token, sustained
    burst: int = 40
    deadline_s: float = 30.0


class ApiError(Exception):
    """An HTTP error with an OpenAI-style JSON body."""

    def __init__(
        self,
        status: int,
        message: str,
        kind: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind
        self.param = param
        self.code = code
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        body = {
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": self.code,
            }
        }
        return JSONResponse(body, status_code=self.status, headers=self.headers)


@dataclass(frozen=True)
class CompletionRequest:
    """A validated /v1/completions body."""

    prompt: str | list[int]
    suffix: str | None
    max_tokens: int
    temperature: float
    top_p: float
    stop: tuple[str, ...]
    stream: bool
    include_usage: bool
    seed: int | None
    user: str


def bad(message: str, param: str | None = None) -> ApiError:
    return ApiError(400, message, param=param)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def parse_completion(body: Any, limits: Limits) -> tuple[str | None, CompletionRequest]:
    """(model field, request); ApiError 400 naming the bad field otherwise."""
    if not isinstance(body, dict):
        raise bad("the request body must be a JSON object")
    model = body.get("model")
    if model is not None and (not isinstance(model, str) or len(model) > 256):
        raise bad("'model' must be a string", "model")

    prompt_value = body.get("prompt", "")
    prompt: str | list[int]
    if isinstance(prompt_value, str):
        prompt = prompt_value
    elif (
        isinstance(prompt_value, list)
        and len(prompt_value) == 1
        and isinstance(prompt_value[0], str)
    ):
        prompt = prompt_value[0]
    elif isinstance(prompt_value, list) and prompt_value and all(map(_is_int, prompt_value)):
        prompt = [int(token) for token in prompt_value]
    else:
        raise bad(
            "'prompt' must be a string, a list of one string, or a list of token ids", "prompt"
        )

    suffix = body.get("suffix")
    if suffix is not None and not isinstance(suffix, str):
        raise bad("'suffix' must be a string or null", "suffix")

    max_tokens = body.get("max_tokens", 16)
    if max_tokens is None:
        max_tokens = 16
    if not _is_int(max_tokens) or max_tokens < 1:
        raise bad("'max_tokens' must be a positive integer", "max_tokens")
    if max_tokens > limits.max_tokens:
        raise bad(
            f"'max_tokens' is {max_tokens}; this server allows at most {limits.max_tokens}",
            "max_tokens",
        )

    temperature = body.get("temperature", 1.0)
    if temperature is None:
        temperature = 1.0
    if not _is_number(temperature) or not 0.0 <= temperature <= 2.0:
        raise bad("'temperature' must be a number between 0 and 2", "temperature")
    top_p = body.get("top_p", 1.0)
    if top_p is None:
        top_p = 1.0
    if not _is_number(top_p) or not 0.0 < top_p <= 1.0:
        raise bad("'top_p' must be a number in (0, 1]", "top_p")

    stop_value = body.get("stop")
    stops: list[Any]
    if stop_value is None:
        stops = []
    elif isinstance(stop_value, str):
        stops = [stop_value]
    elif isinstance(stop_value, list):
        stops = stop_value
    else:
        raise bad("'stop' must be a string or a list of strings", "stop")
    if len(stops) > MAX_STOP or not all(
        isinstance(s, str) and 0 < len(s) <= MAX_STOP_CHARS for s in stops
    ):
        raise bad(
            f"'stop' takes at most {MAX_STOP} non-empty strings of up to {MAX_STOP_CHARS} characters",
            "stop",
        )

    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise bad("'stream' must be true or false", "stream")
    options = body.get("stream_options")
    include_usage = False
    if options is not None:
        if not isinstance(options, dict) or not isinstance(
            options.get("include_usage", False), bool
        ):
            raise bad("'stream_options' must be an object such as {\"include_usage\": true}")
        include_usage = bool(options.get("include_usage", False))

    for key, allowed in (("n", 1), ("best_of", 1)):
        value = body.get(key)
        if value is not None and (not _is_int(value) or value != allowed):
            raise bad(f"'{key}' must be 1: this server returns one completion per request", key)
    if body.get("echo") not in (None, False):
        raise bad("'echo' is not supported", "echo")
    if body.get("logprobs") not in (None, 0):
        raise bad("'logprobs' is not supported", "logprobs")
    for key in ("presence_penalty", "frequency_penalty"):
        value = body.get(key)
        if value is not None and (not _is_number(value) or value != 0):
            raise bad(f"'{key}' is not supported (only 0)", key)
    if body.get("logit_bias") not in (None, {}):
        raise bad("'logit_bias' is not supported", "logit_bias")

    seed = body.get("seed")
    if seed is not None and (not _is_int(seed) or seed < 0):
        raise bad("'seed' must be a non-negative integer", "seed")
    user = body.get("user", "")
    if user is None:
        user = ""
    if not isinstance(user, str) or len(user) > MAX_USER_CHARS:
        raise bad(f"'user' must be a string of at most {MAX_USER_CHARS} characters", "user")

    return model, CompletionRequest(
        prompt,
        suffix,
        int(max_tokens),
        float(temperature),
        float(top_p),
        tuple(stops),
        stream,
        include_usage,
        seed,
        user,
    )


async def read_json(request: Request, limit: int) -> Any:
    """The body as JSON: 413 past `limit` bytes (checked while reading), 400 if not JSON."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise ApiError(413, f"the request body is larger than {limit} bytes", code="body_too_large")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(
                413, f"the request body is larger than {limit} bytes", code="body_too_large"
            )
        chunks.append(chunk)
    try:
        return json.loads(b"".join(chunks))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise bad("the request body is not valid JSON") from None


class TeamServer:
    """The application state and the endpoints (see the module docstring)."""

    def __init__(
        self,
        manager: ModelManager,
        tokens: TokenStore,
        metrics: ServerMetrics,
        limits: Limits,
    ) -> None:
        self.manager = manager
        self.tokens = tokens
        self.metrics = metrics
        self.limits = limits
        self.rate = RateLimiter(limits.rate, limits.burst)
        self._languages: set[str] = set()

    def app(self) -> Starlette:
        routes = [
            Route("/healthz", self.healthz, methods=["GET"]),
            Route("/readyz", self.readyz, methods=["GET"]),
            Route("/metrics", self.metrics_text, methods=["GET"]),
            Route("/v1/models", self.endpoint("models", self.models), methods=["GET"]),
            Route(
                "/v1/completions",
                self.endpoint("completions", self.completions),
                methods=["POST"],
            ),
            Route("/v1/telemetry", self.endpoint("telemetry", self.telemetry), methods=["POST"]),
        ]
        return Starlette(routes=routes)

    # ---- plumbing --------------------------------------------------------

    def endpoint(
        self, label: str, handler: Callable[[Request, str], Awaitable[Response]]
    ) -> Callable[[Request], Awaitable[Response]]:
        """Auth, JSON errors and the request counter around a /v1 handler."""

        async def wrapped(request: Request) -> Response:
            try:
                name = self.authenticate(request)
                response = await handler(request, name)
            except ApiError as exc:
                response = exc.response()
            except Exception:
                log.exception("%s failed", label)
                response = ApiError(500, "internal error", "server_error").response()
            self.metrics.requests.inc(endpoint=label, status=str(response.status_code))
            return response

        return wrapped

    def authenticate(self, request: Request) -> str:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        name = None
        if scheme.lower() == "bearer" and token.strip():
            name = self.tokens.check(token.strip())
        if name is None:
            self.metrics.auth_failures.inc()
            raise ApiError(
                401,
                "missing, unknown or revoked token: send Authorization: Bearer <token> "
                "(acepilot team-server token create NAME)",
                "authentication_error",
                code="invalid_api_key",
                headers={"WWW-Authenticate": "Bearer"},
            )
        return name

    def served_or_503(self) -> Served:
        served = self.manager.acquire()
        if served is None:
            raise ApiError(
                503,
                "no model loaded yet",
                "server_error",
                code="not_ready",
                headers={"Retry-After": "5"},
            )
        return served

    # ---- unauthenticated -------------------------------------------------

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        current = self.manager.current
        if current is None:
            return JSONResponse({"status": "loading"}, status_code=503)
        return JSONResponse(
            {"status": "ready", "model": self.manager.name, "version": current.version}
        )

    async def metrics_text(self, request: Request) -> Response:
        current = self.manager.current
        if current is not None:
            self.metrics.queued.set(current.batch.queue_length())
            self.metrics.active.set(current.batch.active())
            self.metrics.sessions.set(len(current.batch.sessions()))
        return PlainTextResponse(
            self.metrics.registry.render(), media_type="text/plain; version=0.0.4"
        )

    # ---- /v1 -------------------------------------------------------------

    async def models(self, request: Request, name: str) -> Response:
        current = self.manager.current
        data = []
        if current is not None:
            entry = current.entry
            data.append(
                {
                    "id": self.manager.name,
                    "object": "model",
                    "created": entry_created(entry),
                    "owned_by": "acepilot",
                    "acepilot": {
                        "fim": current.fim is not None,
                        "version": entry.version,
                        "precision": entry.manifest.get("precision"),
                        "context_length": current.batch.max_length,
                    },
                }
            )
        return JSONResponse({"object": "list", "data": data})

    async def telemetry(self, request: Request, name: str) -> Response:
        body = await read_json(request, self.limits.max_body_bytes)
        events = body.get("events") if isinstance(body, dict) else None
        if not isinstance(events, list):
            raise bad('the body must be {"events": [...]}', "events")
        if len(events) > MAX_TELEMETRY_EVENTS:
            raise bad(f"at most {MAX_TELEMETRY_EVENTS} events per request", "events")
        checked: list[tuple[str, str]] = []
        for index, event in enumerate(events):
            if not isinstance(event, dict):
                raise bad(f"events[{index}] must be an object", "events")
            kind = event.get("event")
            language = event.get("language")
            if kind not in TELEMETRY_EVENTS:
                raise bad(
                    f"events[{index}].event must be one of {', '.join(TELEMETRY_EVENTS)}", "events"
                )
            if not isinstance(language, str) or not LANGUAGE.match(language):
                raise bad(f"events[{index}].language must be a language id", "events")
            checked.append((str(kind), language))
        for kind, language in checked:
            self.metrics.telemetry.inc(token=name, event=kind, language=self._language(language))
        return JSONResponse({"received": len(checked)})

    def _language(self, language: str) -> str:
        language = language.lower()
        if language in self._languages:
            return language
        if len(self._languages) >= MAX_LANGUAGES:
            return "other"
        self._languages.add(language)
        return language

    async def completions(self, request: Request, name: str) -> Response:
        wait = self.rate.allow(name)
        if wait > 0:
            self.metrics.rate_limited.inc(token=name)
            raise ApiError(
                429,
                "rate limit reached for this token; retry later",
                "rate_limit_error",
                code="rate_limit_exceeded",
                headers={"Retry-After": retry_after(wait)},
            )
        body = await read_json(request, self.limits.max_body_bytes)
        model, completion = parse_completion(body, self.limits)
        if model is not None and model != self.manager.name:
            raise ApiError(
                404,
                f"the model {model!r} does not exist on this server "
                f"(it serves {self.manager.name!r}; see /v1/models)",
                param="model",
                code="model_not_found",
            )
        served = self.served_or_503()
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self.manager.release(served)

        try:
            return await self._complete(request, name, served, completion, release)
        except BaseException:
            release()
            raise

    async def _complete(
        self,
        request: Request,
        name: str,
        served: Served,
        completion: CompletionRequest,
        release: Callable[[], None],
    ) -> Response:
        batch = served.batch
        prompt = completion.prompt
        if served.fim is not None and completion.suffix and isinstance(prompt, str):
            prefix_token, suffix_token, middle_token = served.fim
            prompt = f"{prefix_token}{prompt}{suffix_token}{completion.suffix}{middle_token}"
        if isinstance(prompt, str):
            ids = await anyio.to_thread.run_sync(batch.encode, prompt)
        else:
            ids = prompt
        if len(ids) > self.limits.max_prompt_tokens:
            raise bad(
                f"the prompt has {len(ids)} tokens; this server allows at most "
                f"{self.limits.max_prompt_tokens}",
                "prompt",
            )
        max_new = min(completion.max_tokens, batch.max_length - 1)
        params = GenerationParams(
            max_new_tokens=max_new,
            temperature=completion.temperature,
            top_p=completion.top_p,
            stop=completion.stop,
            deadline=self.limits.deadline_s,
            seed=completion.seed,
        )
        loop = asyncio.get_running_loop()
        updates: asyncio.Queue[str | BatchTicket] = asyncio.Queue()

        def on_token(delta: str) -> None:
            loop.call_soon_threadsafe(updates.put_nowait, delta)

        abandoned = False  # the client closed the stream: nobody reads `updates` any more
        delivered = False  # the finished ticket was put into `updates`
        consumed = False  # ... and the stream read it (and observed it)
        settled = False

        def settle(ticket: BatchTicket) -> None:
            nonlocal settled
            if settled:
                return
            settled = True
            if ticket.result is not None and ticket.error is None:
                self.observe(name, ticket, ticket.result)
            release()

        def done_in_loop(ticket: BatchTicket) -> None:
            nonlocal delivered
            if abandoned:
                settle(ticket)
            else:
                delivered = True
                updates.put_nowait(ticket)

        def on_done(ticket: BatchTicket) -> None:
            loop.call_soon_threadsafe(done_in_loop, ticket)

        def consume() -> None:
            nonlocal consumed
            consumed = True

        def close_stream() -> None:
            """The stream ended, read to the end or not; safe to call twice, never awaits.

            A stream the client closed early stops the generation; its clean-up
            (metrics, release) runs when the scheduler reports the end.
            """
            nonlocal abandoned
            if consumed:
                release()
                return
            abandoned = True
            ticket.cancel.set()
            if delivered:  # finished, but its result sits unread in `updates`
                settle(ticket)

        try:
            ticket = batch.submit(
                ids,
                params,
                session=(name, completion.user),
                on_token=on_token if completion.stream else None,
                on_done=on_done,
            )
        except QueueFull:
            raise ApiError(
                503,
                "the server is busy (queue full); retry shortly",
                "server_error",
                code="queue_full",
                headers={"Retry-After": "1"},
            ) from None
        except ValueError as exc:
            raise bad(str(exc), "prompt") from None
        self.metrics.usage.inc(token=name)
        meta = {
            "id": "cmpl-" + secrets.token_hex(12),
            "created": int(time.time()),
            "model": self.manager.name,
            "system_fingerprint": f"{self.manager.name}-{served.version}",
        }
        if completion.stream:
            return ClosingStream(
                self._stream(name, ticket, updates, meta, completion, consume, close_stream),
                close_stream,
            )
        watcher = asyncio.ensure_future(watch_disconnect(request, ticket))
        try:
            while True:
                item = await updates.get()
                if isinstance(item, BatchTicket):
                    break
        except BaseException:
            ticket.cancel.set()
            raise
        finally:
            watcher.cancel()
            release()
        result = self._finished(name, ticket)
        body = {
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
        return JSONResponse(body)

    def _finished(self, name: str, ticket: BatchTicket) -> Generation:
        """Metrics and the log line for a finished ticket; errors for failed ones."""
        result = ticket.result
        if ticket.error is not None or result is None:
            raise ApiError(500, "generation failed", "server_error")
        if ticket.admitted is None and result.finish_reason == "deadline":
            raise ApiError(
                503,
                "the server is busy: the request's deadline passed while it waited",
                "server_error",
                code="queue_timeout",
                headers={"Retry-After": "1"},
            )
        self.observe(name, ticket, result)
        return result

    def observe(self, name: str, ticket: BatchTicket, result: Generation) -> None:
        metrics = self.metrics
        total = time.monotonic() - ticket.submitted
        metrics.finished.inc(reason=result.finish_reason)
        metrics.latency.observe(ticket.queue_s, phase="queue")
        metrics.latency.observe(result.prefill_ms / 1000, phase="prefill")
        metrics.latency.observe(result.decode_ms / 1000, phase="decode")
        metrics.latency.observe(total, phase="total")
        metrics.tokens.inc(result.prompt_tokens, direction="in")
        metrics.tokens.inc(len(result.token_ids), direction="out")
        metrics.reused.inc(result.reused_tokens)
        metrics.usage_tokens.inc(len(result.token_ids), token=name)
        log.info(
            "completion for %s: %s, %d prompt tokens (%d reused), %d out, %.0f ms",
            name,
            result.finish_reason,
            result.prompt_tokens,
            result.reused_tokens,
            len(result.token_ids),
            total * 1000,
        )

    async def _stream(
        self,
        name: str,
        ticket: BatchTicket,
        updates: asyncio.Queue[str | BatchTicket],
        meta: dict[str, Any],
        completion: CompletionRequest,
        consume: Callable[[], None],
        close: Callable[[], None],
    ) -> AsyncIterator[bytes]:
        """Server-sent events; Starlette cancels this generator when the client disconnects.

        A cancelled generator cannot await any more (anyio re-cancels every
        await), so `close` never waits: an abandoned stream hands its clean-up
        to the on_done callback. `ClosingStream` calls `close` too, for a
        generator cancelled before it ever ran.
        """

        def chunk(text: str, finish: str | None) -> bytes:
            body = {
                **meta,
                "object": "text_completion",
                "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish}],
            }
            return b"data: " + json.dumps(body).encode() + b"\n\n"

        try:
            while True:
                item = await updates.get()
                if isinstance(item, BatchTicket):
                    break
                yield chunk(item, None)
            consume()
            try:
                result = self._finished(name, ticket)
            except ApiError as exc:
                error = {"error": {"message": exc.message, "type": exc.kind, "code": exc.code}}
                yield b"data: " + json.dumps(error).encode() + b"\n\n"
                return
            yield chunk("", FINISH.get(result.finish_reason, "stop"))
            if completion.include_usage:
                body = {
                    **meta,
                    "object": "text_completion",
                    "choices": [],
                    "usage": usage(result),
                }
                yield b"data: " + json.dumps(body).encode() + b"\n\n"
            yield b"data: [DONE]\n\n"
        finally:
            close()


class ClosingStream(StreamingResponse):
    """A server-sent events response that always runs `on_close` when it ends.

    Starlette may cancel the response before the body generator ever started
    (the client left at once); the generator's own `finally` would then never
    run, and the generation would go on for nobody.
    """

    def __init__(self, content: AsyncIterator[bytes], on_close: Callable[[], None]) -> None:
        super().__init__(
            content,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
        self.on_close = on_close

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.on_close()


async def watch_disconnect(request: Request, ticket: BatchTicket) -> None:
    """Cancel the generation when the client disconnects (non-streamed requests)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            ticket.cancel.set()
            return


def usage(result: Generation) -> dict[str, int]:
    out = len(result.token_ids)
    return {
        "prompt_tokens": result.prompt_tokens,
        "completion_tokens": out,
        "total_tokens": result.prompt_tokens + out,
    }
