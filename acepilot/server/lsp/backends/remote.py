"""The remote backend: POST {base}/v1/completions of an OpenAI-compatible server.

vLLM, llama.cpp, TGI, Ollama or Acepilot's team server, with a bearer token,
through one keep-alive httpx client, streamed (server-sent events); cancelling
the ticket closes the stream. The API's `suffix` (FIM) is sent only when the
model supports it (`remoteFim`, or GET /v1/models says so).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from acepilot.server.fim import FimFormat, RepoFormat
from acepilot.server.lsp.backends.base import BackendError, Observer, Request, Result, Ticket
from acepilot.server.lsp.config import Config
from acepilot.server.lsp.prompt import estimate_tokens

log = logging.getLogger(__name__)


def base_url(url: str) -> str:
    """http://host:8000, .../v1 or .../v1/completions -> http://host:8000 (the API's root)."""
    url = url.rstrip("/")
    if url.endswith("/completions"):
        url = url[: -len("/completions")]
    if url.endswith("/v1"):
        url = url[: -len("/v1")]
    return url


def completions_url(url: str) -> str:
    """http://host:8000 or .../v1 or .../v1/completions -> the completions endpoint."""
    return base_url(url) + "/v1/completions"


def build_body(request: Request, model: str | None, suffix: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {
        "prompt": request.prompt,
        "max_tokens": request.max_new_tokens,
        "temperature": request.temperature,
        "top_p": request.top_p,
        "n": 1,
        "stream": True,
    }
    if suffix and request.suffix is not None:
        body["suffix"] = request.suffix
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


def parse_event(line: str) -> Any:
    """The JSON of one server-sent-events `data:` line; None for other lines, DONE at the end."""
    if not line.startswith("data:"):
        return None  # blank separators, comments (": keep-alive"), `event:` lines
    payload = line[5:].strip()
    if payload == "[DONE]":
        return DONE
    try:
        return json.loads(payload)
    except ValueError:
        raise BackendError("the remote backend sent an event that is not JSON") from None


DONE = object()


def model_supports_fim(data: Any, model: str | None) -> bool:
    """From GET /v1/models: the entry of `model` (else the first) says `"acepilot": {"fim": true}`."""
    entries = data.get("data") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        return False
    entries = [entry for entry in entries if isinstance(entry, dict)]
    chosen = [entry for entry in entries if model and entry.get("id") == model] or entries[:1]
    if not chosen:
        return False
    extra = chosen[0].get("acepilot")
    return isinstance(extra, dict) and extra.get("fim") is True


class RemoteBackend:
    """An OpenAI-compatible completions endpoint over HTTP (see the module docstring).

    One `httpx.AsyncClient` for the backend's life: its connection pool keeps
    the TCP (and TLS) connection alive across keystrokes. Answers are streamed
    (`stream: true`, server-sent events); cancelling the ticket, or the block
    being complete, closes the stream, which closes the connection and tells
    the server to stop generating.
    """

    kind = "remote"
    device = "remote"
    fim: FimFormat | None = None
    repo_format: RepoFormat | None = None  # the team server formats nothing: path comments
    PROBE_RETRY_S = 30.0

    def __init__(self, config: Config) -> None:
        import httpx

        assert config.remote_url is not None
        self.base = base_url(config.remote_url)
        self.url = self.base + "/v1/completions"
        self.telemetry_url = self.base + "/v1/telemetry"
        self.model = config.remote_model or self.base
        self.model_field = config.remote_model
        self.fim_mode = config.remote_fim
        self.suffix_field = config.remote_fim == "on"
        self._probed = config.remote_fim != "auto"
        self._probe_at = -self.PROBE_RETRY_S
        self.in_flight_tokens = 0
        self.observer: Observer | None = None
        headers = {"User-Agent": "acepilot-lsp"}
        if config.remote_token:
            headers["Authorization"] = f"Bearer {config.remote_token}"
        timeout = config.timeout_ms / 1000 if config.timeout_ms else None
        self._client = httpx.AsyncClient(
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=min(timeout or 5.0, 5.0)),
            limits=httpx.Limits(max_keepalive_connections=4, keepalive_expiry=120),
        )

    def count_tokens(self, text: str) -> int:
        return estimate_tokens(text)

    async def prepare(self) -> None:
        """fim "auto": GET /v1/models once (again after PROBE_RETRY_S if it failed)."""
        if self._probed or time.monotonic() - self._probe_at < self.PROBE_RETRY_S:
            return
        self._probe_at = time.monotonic()
        data = await self._get_json(self.base + "/v1/models")
        self.suffix_field = model_supports_fim(data, self.model_field)
        self._probed = True
        log.info("remote model %s fill-in-the-middle", "supports" if self.suffix_field else "lacks")

    async def _get_json(self, url: str) -> Any:
        import httpx

        try:
            response = await self._client.get(url)
        except httpx.HTTPError as exc:
            raise self._transport_error(exc) from None
        self._check_status(response.status_code)
        try:
            return response.json()
        except ValueError:
            raise BackendError("the remote backend's answer is not JSON") from None

    def _transport_error(self, exc: Exception) -> BackendError:
        return BackendError(
            f"cannot reach the remote backend {self.base} ({type(exc).__name__})", "unreachable"
        )

    @staticmethod
    def _check_status(status: int) -> None:
        if status in (401, 403):
            raise BackendError(
                f"the remote backend refused the token (HTTP {status}): check acepilot.remoteToken",
                "unauthorized",
            )
        if status != 200:
            raise BackendError(f"the remote backend answered HTTP {status}")

    async def generate(
        self, request: Request, ticket: Ticket, watch: Callable[[str], bool] | None = None
    ) -> Result:
        import httpx

        started = time.perf_counter()
        state = _Stream()
        body = build_body(request, self.model_field, self.suffix_field)
        reading = asyncio.ensure_future(self._stream(body, state, watch))
        stop = asyncio.ensure_future(ticket.wait(None))
        interrupted: asyncio.CancelledError | None = None
        try:
            await asyncio.wait(
                {reading, stop}, timeout=request.deadline, return_when=asyncio.FIRST_COMPLETED
            )
        except asyncio.CancelledError as exc:  # the request's task: $/cancelRequest
            interrupted = exc
            ticket.cancel()
        finally:
            stop.cancel()
            if not reading.done():
                reading.cancel()  # leaving `stream()` closes the response and its connection
                await asyncio.gather(reading, return_exceptions=True)
            self.in_flight_tokens = 0
        elapsed = (time.perf_counter() - started) * 1000
        if reading.cancelled():
            reason = "cancelled" if ticket.cancelled else "deadline"
        else:
            failure = reading.exception()
            if isinstance(failure, httpx.TimeoutException) and not isinstance(
                failure, httpx.ConnectTimeout
            ):
                reason = "deadline"
            elif isinstance(failure, httpx.HTTPError):
                raise self._transport_error(failure)
            elif failure is not None:
                raise failure
            else:
                reason = state.reason
        result = Result(
            text="".join(state.pieces),
            finish_reason=reason,
            prompt_tokens=state.prompt_tokens,
            decode_ms=elapsed,
            generated_tokens=state.tokens,
            ran=state.answered,
        )
        if self.observer is not None:
            self.observer(result)
        if interrupted is not None:
            raise interrupted
        return result

    async def _stream(
        self, body: dict[str, Any], state: _Stream, watch: Callable[[str], bool] | None
    ) -> None:
        async with self._client.stream("POST", self.url, json=body) as response:
            self._check_status(response.status_code)
            state.answered = True
            if "text/event-stream" not in response.headers.get("content-type", ""):
                # A server that ignores `stream`: one JSON answer.
                try:
                    data = json.loads(await response.aread())
                except ValueError:
                    raise BackendError("the remote backend's answer is not JSON") from None
                text, state.reason, state.prompt_tokens = parse_response(data)
                state.pieces.append(text)
                state.tokens += 1
                return
            done = False
            async for line in response.aiter_lines():
                # After [DONE], read on to the end of the body (the server ends it at
                # once): a response read to its end keeps its connection in the pool.
                event = None if done else parse_event(line)
                if event is DONE:
                    done = True
                if event is None or event is DONE:
                    continue
                text, reason, prompt_tokens = parse_chunk(event)
                if prompt_tokens:
                    state.prompt_tokens = prompt_tokens
                if text:
                    state.pieces.append(text)
                    state.tokens += 1
                    self.in_flight_tokens = state.tokens
                if reason:
                    state.reason = reason
                if watch is not None and text and watch("".join(state.pieces)):
                    state.reason = "stop"
                    return  # the block is complete: closing the stream stops the server

    async def drop_session(self, session: str) -> None:
        return None

    async def close(self) -> None:
        await self._client.aclose()


@dataclass
class _Stream:
    """What a streamed answer delivered so far (kept when the stream is cut)."""

    pieces: list[str] = field(default_factory=list)
    reason: str = "stop"
    prompt_tokens: int = 0
    tokens: int = 0  # chunks with text (servers stream about one token per chunk)
    answered: bool = False  # the server accepted the request (it is generating)


def parse_chunk(data: Any) -> tuple[str, str | None, int]:
    """(text, finish_reason, prompt_tokens) of one streamed chunk; usage may come alone."""
    if not isinstance(data, dict):
        raise BackendError("the remote backend's event is not an OpenAI completion chunk")
    usage = data.get("usage")
    prompt_tokens = usage.get("prompt_tokens", 0) if isinstance(usage, dict) else 0
    prompt_tokens = prompt_tokens if isinstance(prompt_tokens, int) else 0
    choices = data.get("choices")
    if not choices:
        return "", None, prompt_tokens  # a usage-only chunk
    if not isinstance(choices, list) or not isinstance(choices[0], dict):
        raise BackendError("the remote backend's event is not an OpenAI completion chunk")
    text = choices[0].get("text", "")
    if not isinstance(text, str):
        raise BackendError("the remote backend's event is not an OpenAI completion chunk")
    reason = choices[0].get("finish_reason")
    return text, str(reason) if reason else None, prompt_tokens
