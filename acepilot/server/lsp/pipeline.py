"""The completion pipeline: one request, from the document to the text to show.

    document snapshot -> trigger / typing-ahead -> context and prompt -> cache or backend
      -> post-processing -> completion

`complete` below reads top to bottom in that order; each stage is a module
with one job and typed dataclasses in and out (docs/lsp.md draws it):

1. snapshot.py     the lines around the cursor, copied (bounded by the budget)
2. trigger.py      typing-ahead answers at once (the user typed what was shown);
                   else single or multi-line, stop sequences, when to stop early
3. context.py      snippets from other open documents (on a worker thread)
   workspace.py    cross-file context from the workspace index (acepilot/server/context/)
   prompt.py       context + header + snippets + prefix (+ FIM suffix) within the token budget
4. cache.py        an LRU of model outputs; else debounce, then
   backends/       the local engine or a remote server, cancelled by the next keystroke
5. postprocess.py  cut to the block, drop what the suffix already has
6. Completion      what the editor shows, where (reply.py turns it into LSP items)

The language server (server.py), `acepilot complete` and `acepilot demo`
(headless.py) all call `complete`: the CLI shows what the editor shows.
State that outlives a request (documents, backend, caches, stats) is the
Session's (session.py).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
from dataclasses import dataclass, replace

from acepilot.server.lsp.backends import (
    Backend,
    BackendError,
    LocalBackend,
    Request,
    Result,
    Ticket,
)
from acepilot.server.lsp.config import Config
from acepilot.server.lsp.documents import Document
from acepilot.server.lsp.postprocess import postprocess
from acepilot.server.lsp.prompt import CONTEXT_SHARE, Prompt, build_prompt, stable_head
from acepilot.server.lsp.session import Session
from acepilot.server.lsp.snapshot import Snapshot, take_snapshot
from acepilot.server.lsp.stats import RequestRecord
from acepilot.server.lsp.trigger import Trigger, decide
from acepilot.server.lsp.workspace import document_window
from acepilot.server.protocol import STATE_READY

log = logging.getLogger(__name__)
_ids = itertools.count(1)
CONTEXT_HEADER_TOKENS = 32  # kept for the current file's header when sizing the context
FIM_TOKENS = 3  # the FIM special tokens build_prompt adds beyond its budget
MIN_PROMPT_TOKENS = 16  # a model window smaller than maxNewTokens still gets a prompt


@dataclass(frozen=True, kw_only=True)
class Query:
    """A completion request: a document and an LSP position (client code units)."""

    uri: str
    line: int
    character: int


@dataclass(frozen=True, kw_only=True)
class Completion:
    """The text to show at (line, column) of the document (column in code points)."""

    document: Document
    line: int
    column: int
    text: str


@dataclass(kw_only=True)
class Generated:
    """What stage 4 produced: the model's raw text, and whether it came from the cache."""

    text: str
    result: Result | None  # None: from the cache


async def complete(session: Session, query: Query) -> Completion | None:
    """The completion at a position, or None (see the module docstring for the stages)."""
    started = time.perf_counter()
    document = session.documents.find(query.uri)
    if document is None or not session.config.enabled_for(document.language_id):
        return None
    line, column = document.clamp(query.line, query.character)
    session.stats.requests += 1
    if document.stale:
        session.stale_request(query.uri)
        return None
    path = session.relative_path(document.uri)
    snapshot = take_snapshot(document, line, column, path=path, config=session.config)  # 1
    trigger = decide(snapshot.context, session.ahead.answer(document, line, column))  # 2
    if trigger.typed_ahead:
        return answer_typed_ahead(session, document, snapshot, trigger.typed_ahead, started)
    ticket = session.new_ticket(query.uri)  # cancels the document's previous request
    try:
        text = await run_stages(session, document, snapshot, trigger, ticket)  # 3-5
    except asyncio.CancelledError:
        ticket.cancel()
        session.stats.cancelled += 1
        raise
    finally:
        session.end_ticket(query.uri, ticket)
    session.arm_idle(query.uri, query.line, query.character)  # prefill.py
    record_request(session, ticket, started)
    if text is None:
        return None
    return Completion(document=document, line=line, column=column, text=text)  # 6


async def run_stages(
    session: Session, document: Document, snapshot: Snapshot, trigger: Trigger, ticket: Ticket
) -> str | None:
    """Stages 3-5 for a request that needs the model (or its cache)."""
    backend = await session.ready_backend(ticket)  # loaded (the first request may wait)
    if backend is None:
        return None
    prompt = await build(session, document, snapshot, backend)  # 3
    ticket.prompt_built = True
    generated = await generate(session, backend, prompt, trigger, ticket, document.uri)  # 4
    if generated is None:
        return None
    stop = backend.fim.stop if backend.fim else ()
    text = postprocess(generated.text, snapshot.context, stop=stop)  # 5
    log.info(
        "%s completion, prompt %d tokens: %s",
        trigger.mode,
        prompt.tokens,
        "nothing to show" if text is None else f"{len(text)} chars",
    )
    if text is None:
        session.stats.empty += 1
        return None
    session.ahead.remember_shown(document.uri, replace(snapshot.shown, text=text))
    if session.documents.find(document.uri) is not document or document.edits != snapshot.edits:
        return None  # typed meanwhile: typing-ahead answers the next request
    return text


async def build(
    session: Session,
    document: Document,
    snapshot: Snapshot,
    backend: Backend,
    record: bool = True,
) -> Prompt:
    """Stage 3: snippets, workspace context and the prompt, on a worker thread (CPU work).

    `record`: remember it as the last prompt (stats, `--explain`); an idle prefill does not.
    """
    config = session.config
    count = session.counter
    neighbours = session.context.neighbours(session.documents, document)
    repo_name = session.repository_name(snapshot.uri)
    workspace = session.workspace
    tokens = prompt_budget(config, backend)
    budget = workspace_budget(config, tokens) if workspace.active else 0
    # On the event loop: the text as of this request (bounded around the cursor).
    text, offset = (
        document_window(document.lines, snapshot.line, snapshot.column) if budget else ("", 0)
    )

    def work() -> Prompt:
        snippets = session.context.snippets(
            snapshot.prompt,
            uri=snapshot.uri,
            line=snapshot.line,
            neighbours=neighbours,
            config=config,
            count=count,
        )
        chunks = (
            workspace.collect(snapshot.uri, text, offset, document.language_id, budget, count)
            if budget
            else []
        )
        prompt = build_prompt(
            replace(snapshot.prompt, snippets=snippets, context=chunks, repo_name=repo_name),
            tokens,
            count,
            backend.fim,
            backend.suffix_field,
            getattr(backend, "repo_format", None),
        )
        if record:
            used = [part for part in prompt.parts if part.kind == "context"]
            workspace.last_chunks = len(used)
            workspace.last_tokens = sum(part.tokens for part in used)
        return prompt

    prompt = await asyncio.get_running_loop().run_in_executor(session.cpu, work)
    if record:
        session.last_prompt = prompt
    return prompt


async def idle_prefill(
    session: Session, uri: str, line: int, character: int, cancel: threading.Event
) -> object | None:
    """While the user pauses (prefill.py): the prompt a request here would build, up to the
    cursor line, into the document's KV cache. None when there is nothing to do."""
    backend, config = session.backend, session.config
    document = session.documents.find(uri)
    if (
        not isinstance(backend, LocalBackend)
        or not config.kv_reuse
        or document is None
        or document.stale
        or not config.enabled_for(document.language_id)
        or session.tickets  # a request is in flight: it prefills for itself
    ):
        return None
    line, column = document.clamp(line, character)
    path = session.relative_path(uri)
    snapshot = take_snapshot(document, line, column, path=path, config=config)
    prompt = await build(session, document, snapshot, backend, record=False)
    head = stable_head(prompt)
    if not head or cancel.is_set() or session.tickets:
        return None
    return await backend.prefill(head, uri, config.max_new_tokens, cancel)


def prompt_budget(config: Config, backend: Backend) -> int:
    """The prompt's tokens: `contextTokens`, within a local model's window less the tokens to
    generate. Past it the engine would keep the prompt's tail and drop its head, which is
    where the workspace context and the header are (acepilot-tiny's window is 1,024 tokens,
    the default `contextTokens` + `maxNewTokens` 1,088)."""
    window = getattr(getattr(backend, "engine", None), "max_length", None)
    if not isinstance(window, int):
        return config.context_tokens  # remote: the server's model is not known here
    room = window - config.max_new_tokens - FIM_TOKENS
    return max(MIN_PROMPT_TOKENS, min(config.context_tokens, room))


def workspace_budget(config: Config, prompt_tokens: int) -> int:
    """Tokens offered to the workspace context: the setting, within 3/4 of the prompt budget
    less the open-tab snippets' share (prompt.py drops context that would crowd out the code)."""
    if not config.workspace_context:
        return 0
    room = prompt_tokens * (CONTEXT_SHARE - 1) // CONTEXT_SHARE - config.snippet_tokens
    return max(0, min(config.workspace_context_tokens, room - CONTEXT_HEADER_TOKENS))


async def generate(
    session: Session,
    backend: Backend,
    prompt: Prompt,
    trigger: Trigger,
    ticket: Ticket,
    uri: str,
) -> Generated | None:
    """Stage 4: the cached output for this prompt, else (after the debounce) the backend's."""
    config = session.config
    request = Request(
        prompt=prompt.text,
        max_new_tokens=config.max_new_tokens,
        temperature=config.temperature,
        top_p=config.top_p,
        stop=trigger.stop + (backend.fim.stop if backend.fim else ()),
        deadline=config.timeout_ms / 1000 if config.timeout_ms else None,
        session=uri if config.kv_reuse else None,  # the engine's KV cache per document
        suffix=prompt.suffix,
    )
    key = (
        backend.model,
        request.prompt,
        request.suffix,
        request.max_new_tokens,
        request.temperature,
        request.top_p,
        trigger.mode,
    )
    cached = session.cache.get(key)
    if cached is not None:
        session.stats.cache_hits += 1
        ticket.source = "cache"
        return Generated(text=cached, result=None)
    debounce_started = time.perf_counter()
    if await ticket.wait(config.debounce_ms / 1000):
        session.stats.cancelled += 1
        return None
    ticket.waited_ms += (time.perf_counter() - debounce_started) * 1000
    result = await call_backend(session, backend, request, trigger, ticket)
    if result is None:
        return None
    if result.finish_reason not in ("deadline", "cancelled") or not ticket.cancelled:
        session.cache.put(key, result.text)
    return Generated(text=result.text, result=result)


async def call_backend(
    session: Session, backend: Backend, request: Request, trigger: Trigger, ticket: Ticket
) -> Result | None:
    session.stats.model_requests += 1
    started = time.perf_counter()
    try:
        result = await backend.generate(request, ticket, trigger.watch)
    except BackendError as exc:
        session.backend_failed(exc)
        return None
    finally:
        ticket.waited_ms += (time.perf_counter() - started) * 1000
    session.backend_recovered()
    if ticket.cancelled:
        session.stats.cancelled += 1
        return None
    ticket.generated_tokens = result.generated_tokens
    ticket.finish_reason = result.finish_reason
    session.stats.last_prefill_ms = result.prefill_ms
    session.stats.last_decode_ms = result.decode_ms
    return result


def answer_typed_ahead(
    session: Session, document: Document, snapshot: Snapshot, rest: str, started: float
) -> Completion:
    """Stage 2's answer without a model: the rest of the completion the user is typing."""
    session.stats.typing_ahead += 1
    session.ahead.remember(document, snapshot.line, snapshot.column, rest)
    total = (time.perf_counter() - started) * 1000
    session.stats.answered(RequestRecord(total_ms=total, source="typing_ahead"), None)
    return Completion(document=document, line=snapshot.line, column=snapshot.column, text=rest)


def record_request(session: Session, ticket: Ticket, started: float) -> None:
    """Stats of a request that went through the stages (not when a newer one replaced it)."""
    if ticket.cancelled:
        return
    total = (time.perf_counter() - started) * 1000
    if ticket.source == "model" and ticket.finish_reason:
        session.stats.last_total_ms = total
        session.send_status(STATE_READY)
    # The server's own share: all but waiting (model load, debounce) and the backend.
    overhead = total - ticket.waited_ms if ticket.prompt_built else None
    record = RequestRecord(
        total_ms=total,
        source=ticket.source,
        generated_tokens=ticket.generated_tokens,
        finish_reason=ticket.finish_reason,
    )
    session.stats.answered(record, overhead)
