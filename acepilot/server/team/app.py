"""The team server's HTTP API: a Starlette application.

- `POST /v1/completions`: the OpenAI completions API (model, prompt, suffix,
  max_tokens, temperature, top_p, stop, stream, n=1, seed, user), streamed as
  server-sent events when `stream` is true. Closing the stream (or the
  connection) cancels the generation at the next token boundary. With a
  `suffix`, a fill-in-the-middle model gets its FIM prompt (the manifest's
  tokens, in its PSM or SPM order).
- `GET /v1/models`: the served model, with an "acepilot" object (fim, family, version).
- `POST /v1/telemetry`: editors' shown/accepted/rejected counts per language, and
  how many accepted characters were still there 30 s and 2 min later.
- `/dashboard`: the operator's pages (sign-in, tokens, usage reports; `dashboard.py`),
  fed by the usage store (`store.py`, SQLite) that this module counts into.
- `GET /healthz` (the process answers), `GET /readyz` (a model is loaded),
  `GET /metrics` (Prometheus text format; optionally for one token only),
  `GET /openapi.json` (this API, generated from the request schema).

Every /v1 request needs `Authorization: Bearer <token>` (401 otherwise).
Request bodies are declared and checked in `schema.py`; errors are JSON
(`errors.py`) and the server keeps serving. Expensive work is bounded before
it starts (`prompts.py`). Nothing here logs or exports prompt or completion
text, nor tokens: logs name the token's *name*.

Requests from one token share a KV cache row (keyed by token name and the
optional OpenAI `user` field), so a developer typing on prefills only what
changed since their last request.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from typing import TYPE_CHECKING, Any

import anyio
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from acepilot.server.engine.batch import BatchTicket, QueueFull
from acepilot.server.engine.generation import Generation, GenerationParams
from acepilot.server.team.completion import (
    FINISH,
    ClosingStream,
    CompletionRun,
    chunk,
    event,
    plain_body,
    usage,
    watch_disconnect,
)
from acepilot.server.team.errors import ApiError, bad, busy
from acepilot.server.team.labels import LanguageLabels
from acepilot.server.team.limits import Limits, RateLimiter, retry_after
from acepilot.server.team.metrics import ServerMetrics
from acepilot.server.team.models import ModelManager, Served, entry_created
from acepilot.server.team.openapi import openapi_document
from acepilot.server.team.prompts import PromptGate, check_characters
from acepilot.server.team.schema import CompletionBody, TelemetryBody, parse
from acepilot.server.team.store import NO_TOKEN, UsageStore
from acepilot.server.team.tokens import TokenStore

if TYPE_CHECKING:
    from acepilot.server.team.dashboard import Dashboard

__all__ = ["ApiError", "Limits", "TeamServer"]

log = logging.getLogger(__name__)

CLIENT_CLOSED = "499"  # nginx's status for "the client closed the request"


class TeamServer:
    """The application state and the endpoints (see the module docstring).

    `metrics_token`: the name of the only token that may read /metrics (None: open).
    """

    def __init__(
        self,
        manager: ModelManager,
        tokens: TokenStore,
        metrics: ServerMetrics,
        limits: Limits,
        metrics_token: str | None = None,
        usage: UsageStore | None = None,
        dashboard: Dashboard | None = None,
    ) -> None:
        self.manager = manager
        self.usage = usage
        self.dashboard = dashboard
        self.tokens = tokens
        self.metrics = metrics
        self.limits = limits
        self.metrics_token = metrics_token
        self.rate = RateLimiter(limits.rate, limits.burst)
        self.gate = PromptGate()
        self.languages = LanguageLabels()
        self._openapi: dict[str, Any] | None = None

    def app(self) -> Starlette:
        routes = [
            Route("/healthz", self.healthz, methods=["GET"]),
            Route("/readyz", self.readyz, methods=["GET"]),
            Route("/metrics", self.metrics_text, methods=["GET"]),
            Route("/openapi.json", self.openapi, methods=["GET"]),
            Route("/v1/models", self.endpoint("models", self.models), methods=["GET"]),
            Route(
                "/v1/completions",
                self.endpoint("completions", self.completions),
                methods=["POST"],
            ),
            Route("/v1/telemetry", self.endpoint("telemetry", self.telemetry), methods=["POST"]),
        ]
        if self.dashboard is not None:
            routes += self.dashboard.routes()
        return Starlette(routes=routes)

    def version(self) -> str:
        current = self.manager.current
        return current.version if current is not None else ""

    def count_error(self, name: str | None, kind: str) -> None:
        if self.usage is not None:
            self.usage.error(name or NO_TOKEN, self.version(), kind)

    # ---- plumbing --------------------------------------------------------

    def endpoint(
        self, label: str, handler: Callable[[Request, str], Awaitable[Response]]
    ) -> Callable[[Request], Awaitable[Response]]:
        """Auth, JSON errors and the request counter around a /v1 handler."""

        async def wrapped(request: Request) -> Response:
            name: str | None = None
            try:
                name = self.authenticate(request)
                response = await handler(request, name)
            except ApiError as exc:
                self.count_error(name, exc.code or exc.kind)
                response = exc.response()
            except ClientDisconnect:  # the client's doing, not a server error
                self.metrics.client_disconnects.inc(endpoint=label)
                log.info("%s: the client left before its request body was read", label)
                self.metrics.requests.inc(endpoint=label, status=CLIENT_CLOSED)
                self.count_error(name, "client_closed")
                return Response(status_code=int(CLIENT_CLOSED))
            except Exception:
                log.exception("%s failed", label)
                self.count_error(name, "server_error")
                response = ApiError(500, "internal error", "server_error").response()
            self.metrics.requests.inc(endpoint=label, status=str(response.status_code))
            return response

        return wrapped

    def token_name(self, request: Request) -> str | None:
        """The name of the request's bearer token, if it is an active one."""
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return self.tokens.check(token.strip())
        return None

    def authenticate(self, request: Request) -> str:
        name = self.token_name(request)
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

    async def read_body(self, request: Request) -> bytes:
        """The body: 413 past the size limit (checked while reading), 408 when too slow."""
        limit = self.limits.max_body_bytes
        close = {"Connection": "close"}  # the rest of the body is never read
        too_large = ApiError(
            413,
            f"the request body is larger than {limit} bytes",
            code="body_too_large",
            headers=close,
        )
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            raise too_large
        chunks: list[bytes] = []
        size = 0
        try:
            with anyio.fail_after(self.limits.client_timeout_s):
                async for piece in request.stream():
                    size += len(piece)
                    if size > limit:
                        raise too_large
                    chunks.append(piece)
        except TimeoutError:
            raise ApiError(
                408,
                f"the request body did not arrive within {self.limits.client_timeout_s:g} s",
                code="body_timeout",
                headers=close,
            ) from None
        return b"".join(chunks)

    def served_or_503(self) -> Served:
        served = self.manager.acquire()
        if served is None:
            raise busy("no model loaded yet", "not_ready", retry_after="5")
        return served

    # ---- unauthenticated (or the metrics token) ---------------------------

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        current = self.manager.current
        if current is None:
            return JSONResponse({"status": "loading"}, status_code=503)
        return JSONResponse(
            {"status": "ready", "model": self.manager.name, "version": current.version}
        )

    async def openapi(self, request: Request) -> Response:
        if self._openapi is None:
            self._openapi = openapi_document()
        return JSONResponse(self._openapi)

    async def metrics_text(self, request: Request) -> Response:
        if self.metrics_token is not None:
            name = self.token_name(request)
            if name is None:
                self.metrics.auth_failures.inc()
                error = ApiError(
                    401,
                    f"/metrics needs Authorization: Bearer <the token named {self.metrics_token}>",
                    "authentication_error",
                    code="invalid_api_key",
                    headers={"WWW-Authenticate": "Bearer"},
                )
                return error.response()
            if name != self.metrics_token:
                message = f"/metrics is only for the token named {self.metrics_token}"
                return ApiError(403, message, "permission_error").response()
        current = self.manager.current
        if current is not None:
            self.metrics.queued.set(current.batch.queue_length())
            self.metrics.active.set(current.batch.active())
            self.metrics.sessions.set(len(current.batch.sessions()))
        self.metrics.preparing.set(self.gate.preparing())
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
                        "fim_order": current.fim.order if current.fim is not None else None,
                        "family": current.family,
                        "version": entry.version,
                        "precision": entry.manifest.get("precision"),
                        "context_length": current.batch.max_length,
                    },
                }
            )
        return JSONResponse({"object": "list", "data": data})

    async def telemetry(self, request: Request, name: str) -> Response:
        body = parse(TelemetryBody, await self.read_body(request))
        version = self.version()
        for item in body.events:
            language = self.languages.label(name, item.language)
            if item.event == "retained":
                after = f"{item.after_s}s"
                self.metrics.telemetry_chars.inc(
                    item.chars or 0, token=name, kind="checked_" + after
                )
                self.metrics.telemetry_chars.inc(
                    item.retained_chars or 0, token=name, kind="retained_" + after
                )
            else:
                self.metrics.telemetry.inc(token=name, event=item.event, language=language)
                if item.event == "accepted" and item.chars:
                    self.metrics.telemetry_chars.inc(item.chars, token=name, kind="accepted")
            if self.usage is not None:
                self.usage.event(
                    name,
                    language,
                    version,
                    item.event,
                    chars=item.chars or 0,
                    after_s=item.after_s,
                    retained_chars=item.retained_chars or 0,
                )
        return JSONResponse({"received": len(body.events)})

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
        body = parse(CompletionBody, await self.read_body(request), self.limits)
        if body.model is not None and body.model != self.manager.name:
            raise ApiError(
                404,
                f"the model {body.model!r} does not exist on this server "
                f"(it serves {self.manager.name!r}; see /v1/models)",
                param="model",
                code="model_not_found",
            )
        served = self.served_or_503()
        run: CompletionRun | None = None
        try:
            ids = await self.prompt_ids(name, served, body)
            run = CompletionRun(
                partial(self.observe, name, served.version),
                partial(self.manager.release, served),
                version=served.version,
            )
            run.ticket = self.submit(served, name, body, ids, run)
        except BaseException:
            if run is None or run.ticket is None:  # nothing owns the served version yet
                self.manager.release(served)
            raise
        self.metrics.usage.inc(token=name)
        if self.usage is not None:
            self.usage.request(name, served.version)
        meta = {
            "id": "cmpl-" + secrets.token_hex(12),
            "created": int(time.time()),
            "model": self.manager.name,
            "system_fingerprint": f"{self.manager.name}-{served.version}",
        }
        if body.stream:
            return ClosingStream(self.stream(name, run, meta, body), run)
        return await self.plain(request, name, run, meta)

    async def prompt_ids(self, name: str, served: Served, body: CompletionBody) -> list[int]:
        """The prompt's token ids: FIM template, character limit, bounded tokenizing."""
        prompt = body.prompt
        if not isinstance(prompt, str):  # token ids, counted by the schema
            return [int(token) for token in prompt]
        suffix = body.suffix or ""
        limit = self.limits.max_prompt_tokens
        check_characters(len(prompt) + len(suffix), limit, served.token_chars)
        if served.fim is not None and suffix:
            prompt = served.fim.render(prompt, suffix)
        ids = await self.gate.encode(name, served.batch, prompt)
        if len(ids) > limit:
            raise bad(
                f"the prompt has {len(ids)} tokens; this server allows at most {limit}", "prompt"
            )
        return ids

    def submit(
        self, served: Served, name: str, body: CompletionBody, ids: list[int], run: CompletionRun
    ) -> BatchTicket:
        batch = served.batch
        params = GenerationParams(
            max_new_tokens=min(body.max_tokens, batch.max_length - 1),
            temperature=body.temperature,
            top_p=body.top_p,
            stop=tuple(body.stop),
            deadline=self.limits.deadline_s,
            seed=body.seed,
        )
        try:
            return batch.submit(
                ids,
                params,
                session=(name, body.user),
                on_token=run.on_token if body.stream else None,
                on_done=run.on_done,
            )
        except QueueFull:
            raise busy("the server is busy (queue full); retry shortly", "queue_full") from None
        except ValueError as exc:
            raise bad(str(exc), "prompt") from None

    async def plain(
        self, request: Request, name: str, run: CompletionRun, meta: dict[str, Any]
    ) -> Response:
        assert run.ticket is not None
        watcher = asyncio.ensure_future(watch_disconnect(request, run.ticket))
        try:
            async for _ in run.pieces():
                pass
        finally:
            watcher.cancel()
            run.close()
        return JSONResponse(plain_body(meta, self.finished(name, run.version, run.ticket)))

    async def stream(
        self, name: str, run: CompletionRun, meta: dict[str, Any], body: CompletionBody
    ) -> AsyncIterator[bytes]:
        """Server-sent events; Starlette cancels this generator when the client disconnects."""
        assert run.ticket is not None
        try:
            async for piece in run.pieces():
                yield chunk(meta, piece, None)
            try:
                result = self.finished(name, run.version, run.ticket)
            except ApiError as exc:
                self.count_error(name, exc.code or exc.kind)
                yield event({"error": {"message": exc.message, "type": exc.kind, "code": exc.code}})
                return
            yield chunk(meta, "", FINISH.get(result.finish_reason, "stop"))
            if body.include_usage:
                yield event(
                    {**meta, "object": "text_completion", "choices": [], "usage": usage(result)}
                )
            yield b"data: [DONE]\n\n"
        finally:
            run.close()

    def finished(self, name: str, version: str, ticket: BatchTicket) -> Generation:
        """Metrics and the log line for a finished ticket; errors for failed ones."""
        result = ticket.result
        if ticket.error is not None or result is None:
            raise ApiError(500, "generation failed", "server_error")
        if ticket.admitted is None and result.finish_reason == "deadline":
            raise busy(
                "the server is busy: the request's deadline passed while it waited",
                "queue_timeout",
            )
        self.observe(name, version, ticket)
        return result

    def observe(self, name: str, version: str, ticket: BatchTicket) -> None:
        result = ticket.result
        assert result is not None
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
        if self.usage is not None:
            self.usage.finished(
                name,
                version,
                cancelled=result.finish_reason == "cancelled",
                latency_ms=total * 1000,
                tokens_in=result.prompt_tokens,
                tokens_out=len(result.token_ids),
            )
        log.info(
            "completion for %s: %s, %d prompt tokens (%d reused), %d out, %.0f ms",
            name,
            result.finish_reason,
            result.prompt_tokens,
            result.reused_tokens,
            len(result.token_ids),
            total * 1000,
        )
