"""The Acepilot language server: `textDocument/inlineCompletion` (and `completion`).

One completion, as `AcepilotServer.complete` runs it:

    document (incremental sync, negotiated position encoding)
      -> typing-ahead: the user typed the start of the last shown completion?
      -> snapshot of the lines around the cursor (on the loop: a few list slices)
      -> prompt: header + neighbouring-tab snippets + prefix, to a token budget
         (tokenizing runs on a worker thread)
      -> LRU cache of model outputs, else debounce, then the backend
         (local engine on its own thread, or remote HTTP), stopped early when the
         block is complete, cancelled by a newer request or $/cancelRequest
      -> post-processing -> InlineCompletionItem with an exact range

Stale documents: a change that cannot be applied marks the document stale;
completions for it are empty and the client is asked (`acepilot/resync`) for
one full-text change, which makes it fresh again.

Every returned item carries an opaque completion id in its `command`; the
client reports `shown`/`accepted`/`rejected` for it (`acepilot/telemetry`),
counted in `acepilot/stats` and, with the remote backend, forwarded to the
team server in batches (acepilot/server/lsp/stats.py).

Handlers stay small; state lives on `AcepilotServer`. The protocol subclass
keeps documents in Acepilot's own store (pygls' workspace keeps no second copy)
and answers malformed requests with InvalidParams instead of dropping them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import logging
import re
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from lsprotocol import types
from pygls.capabilities import ServerCapabilitiesBuilder
from pygls.lsp.server import LanguageServer
from pygls.protocol import LanguageServerProtocol
from pygls.protocol.language_server import lsp_method
from pygls.uris import to_fs_path

from acepilot.server import __version__
from acepilot.server.errors import AcepilotError
from acepilot.server.lsp import config as settings
from acepilot.server.lsp.backends import (
    Backend,
    BackendError,
    LocalBackend,
    Request,
    Result,
    Ticket,
    load_backend,
)
from acepilot.server.lsp.cache import LruCache, Shown, TypingAhead
from acepilot.server.lsp.config import Config, ConfigError
from acepilot.server.lsp.documents import (
    Change,
    Document,
    DocumentError,
    DocumentStore,
    line_content,
)
from acepilot.server.lsp.languages import language
from acepilot.server.lsp.postprocess import SINGLE, Context, cut_block, postprocess
from acepilot.server.lsp.production import POLL_S, follow_production
from acepilot.server.lsp.prompt import (
    QUERY_LINES,
    WINDOW_STRIDE,
    Neighbour,
    Prompt,
    PromptInput,
    Snippet,
    TokenCounter,
    build_prompt,
    select_snippets,
)
from acepilot.server.lsp.stats import (
    GenerationRecord,
    Issued,
    RequestRecord,
    Stats,
    TelemetrySender,
    parse_event,
    plain,
)

log = logging.getLogger(__name__)

STATUS = "acepilot/status"  # server -> client notification: state, model, latencies
STATS = "acepilot/stats"  # client -> server request: counters (bench/typing_replay.py reads them)
TELEMETRY = "acepilot/telemetry"  # client -> server notification: shown/accepted/rejected
RESYNC = "acepilot/resync"  # server -> client notification: send the full text of {uri}
ACCEPTED_COMMAND = "acepilot.accepted"  # the items' command (the client runs it on accept)
RESYNC_REPEAT_S = 2.0  # a stale document's completion requests repeat the ask at most this often
WORD_BEFORE = re.compile(r"[A-Za-z0-9_$]*$")
CONTEXT_LINES = 8  # lines around the cursor given to post-processing
MAX_NEIGHBOURS = 10  # other open documents searched for snippets
MAX_SUFFIX_LINES = 64
_ids = itertools.count(1)


class Rejected:
    """A message that could not be read; already answered (requests) or dropped."""

    jsonrpc = "invalid"


class AcepilotProtocol(LanguageServerProtocol):
    """pygls' protocol with Acepilot's document store and strict-but-answering parsing."""

    _server: AcepilotServer

    @lsp_method(types.TEXT_DOCUMENT_DID_OPEN)
    def lsp_text_document__did_open(self, params: types.DidOpenTextDocumentParams) -> None:
        self._server.did_open(params)

    @lsp_method(types.TEXT_DOCUMENT_DID_CHANGE)
    def lsp_text_document__did_change(self, params: types.DidChangeTextDocumentParams) -> None:
        self._server.did_change(params)

    @lsp_method(types.TEXT_DOCUMENT_DID_CLOSE)
    def lsp_text_document__did_close(self, params: types.DidCloseTextDocumentParams) -> None:
        self._server.did_close(params)

    def structure_message(self, data: dict[str, Any]) -> Any:
        try:
            return super().structure_message(data)
        except Exception as exc:
            if "id" in data and "method" in data:
                # pygls would only log this: the client would wait for ever.
                error = types.ResponseError(
                    code=types.ErrorCodes.InvalidParams,
                    message=f"invalid params for {str(data.get('method'))[:80]} ({type(exc.__cause__ or exc).__name__})",
                )
                self._send_response(data["id"], error=error)
            log.warning("dropped a malformed %s message", str(data.get("method", "response"))[:80])
            return Rejected()

    def handle_message(self, message: Any) -> None:
        if isinstance(message, Rejected):
            return
        super().handle_message(message)


class AcepilotServer(LanguageServer):
    """State: documents, configuration, backend, caches (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__("acepilot", __version__, protocol_cls=AcepilotProtocol)
        self.documents = DocumentStore()
        self.config = Config()
        self.backend: Backend | None = None
        self.backend_error: str | None = None
        self.backend_ready = asyncio.Event()
        self._backend_generation = 0
        self._loading: asyncio.Task[None] | None = None
        self.tickets: dict[str, Ticket] = {}
        self.ahead = TypingAhead()
        self.cache = LruCache(256)
        self.stats = Stats()
        self.issued = Issued()
        self.telemetry: TelemetrySender | None = None
        self._problem: str | None = None  # the backend error kind the user was told about
        self._resync_asked: dict[str, float] = {}
        self.counter = TokenCounter()
        self._neighbours: dict[str, tuple[int, Neighbour]] = {}
        self._snippets: dict[str, tuple[Any, list[Snippet]]] = {}
        self._cpu = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="acepilot-prompt")
        self._pending_messages: list[str] = []
        self._background: set[asyncio.Future[None]] = set()
        self.follow_poll_s = POLL_S

    # ---- documents ---------------------------------------------------------

    def did_open(self, params: types.DidOpenTextDocumentParams) -> None:
        item = params.text_document
        self._resync_asked.pop(item.uri, None)
        try:
            self.documents.open(item.uri, item.language_id, item.version, item.text)
        except DocumentError as exc:
            log.warning("cannot open a document: %s", exc)

    def did_change(self, params: types.DidChangeTextDocumentParams) -> None:
        uri = params.text_document.uri
        changes = [
            Change(
                c.text,
                (c.range.start.line, c.range.start.character),
                (c.range.end.line, c.range.end.character),
            )
            if isinstance(c, types.TextDocumentContentChangePartial)
            else Change(c.text)
            for c in params.content_changes
        ]
        document = self.documents.find(uri)
        try:
            self.documents.change(uri, params.text_document.version, changes)
        except DocumentError as exc:
            log.warning("cannot apply a change (version %s): %s", params.text_document.version, exc)
        if document is None:
            return
        if document.stale:
            self.ahead.forget(uri)
            ticket = self.tickets.pop(uri, None)
            if ticket is not None:
                ticket.cancel()
            if uri not in self._resync_asked:
                self.ask_resync(uri)
        elif self._resync_asked.pop(uri, None) is not None:
            log.info("document resynchronised (version %s)", document.version)

    def ask_resync(self, uri: str) -> None:
        """Ask the client for the document's full text (a didChange without range)."""
        self._resync_asked[uri] = time.monotonic()
        self.protocol.notify(RESYNC, {"uri": uri})

    def did_close(self, params: types.DidCloseTextDocumentParams) -> None:
        uri = params.text_document.uri
        self.documents.close(uri)
        self._resync_asked.pop(uri, None)
        self.ahead.forget(uri)
        self._neighbours.pop(uri, None)
        self._snippets.pop(uri, None)
        ticket = self.tickets.pop(uri, None)
        if ticket is not None:
            ticket.cancel()
        if self.backend is not None:
            task = asyncio.ensure_future(self.backend.drop_session(uri))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    # ---- configuration -------------------------------------------------------

    def apply_settings(self, raw: Any, source: str) -> bool:
        """Validate and apply; on error show it, keep the old config, return False."""
        try:
            new = settings.update(self.config, settings.settings_section(raw))
        except ConfigError as exc:
            log.warning("invalid settings from %s: %s", source, exc)
            self.show_error(f"Acepilot: invalid settings, keeping the previous ones: {exc}")
            return False
        reload = new.backend_key() != self.config.backend_key()
        self.config = new
        if reload and self._loading is not None:  # before `initialized`, loading starts there
            self.start_loading()
        return True

    def show_error(self, message: str) -> None:
        if self.protocol.writer is None:
            self._pending_messages.append(message)
            return
        self.window_show_message(
            types.ShowMessageParams(type=types.MessageType.Error, message=message)
        )

    async def pull_settings(self) -> None:
        caps = self.client_capabilities.workspace
        if caps is None or not caps.configuration:
            return
        try:
            values = await self.workspace_configuration_async(
                types.ConfigurationParams(items=[types.ConfigurationItem(section=settings.SECTION)])
            )
        except Exception as exc:  # the client may refuse: keep what we have
            log.warning("workspace/configuration failed (%s)", type(exc).__name__)
            return
        if values and values[0] is not None:
            self.apply_settings(values[0], "workspace/configuration")

    # ---- backend ---------------------------------------------------------------

    def start_loading(self) -> None:
        self._backend_generation += 1
        self.backend_ready.clear()
        self._loading = asyncio.ensure_future(self._load(self._backend_generation, self.config))

    async def _load(self, generation: int, config: Config) -> None:
        old, self.backend = self.backend, None
        self.backend_error = None
        self._problem = None
        self.cache.clear()
        if old is not None:
            await old.close()
        self._stop_telemetry()
        label = config.model or config.remote_url or "the default model"
        if config.backend == "remote":
            label = config.remote_model or config.remote_url or "remote"
        self.send_status("loading", model=label)
        token = await self._begin_progress(f"loading {label}")
        loop = asyncio.get_running_loop()
        backend: Backend | None = None
        try:
            backend = await loop.run_in_executor(None, load_backend, config)
        except AcepilotError as exc:
            self.backend_error = str(exc)
        except Exception as exc:  # onnxruntime/tokenizers raise their own types
            log.exception("loading the backend failed")
            self.backend_error = f"cannot load the model ({type(exc).__name__}: {exc})"
        if generation != self._backend_generation:  # settings changed meanwhile
            if backend is not None:
                await backend.close()
            return
        self.backend = backend
        if backend is not None:
            backend.observer = self._observe
            self._start_telemetry(backend, config)
            with contextlib.suppress(BackendError):  # told about at the first completion
                await backend.prepare()
            if isinstance(backend, LocalBackend) and backend.follows is not None:
                self._follow(backend, config, generation)
        self.backend_ready.set()
        self._end_progress(token, "ready" if backend else "failed")
        if backend is None:
            log.warning("backend not available: %s", self.backend_error)
            self.send_status("error", model=label, message=self.backend_error)
            self.show_error(f"Acepilot: {self.backend_error}")
        else:
            log.info("backend ready: %s %s on %s", backend.kind, backend.model, backend.device)
            self.counter = TokenCounter(backend.count_tokens)
            self.send_status("ready")

    def _follow(self, backend: LocalBackend, config: Config, generation: int) -> None:
        """Swap to a new production version of the model when the registry says so."""

        def swap(new: LocalBackend) -> None:
            new.observer = self._observe
            self.backend = new
            self.cache.clear()
            self.counter = TokenCounter(new.count_tokens)
            log.info("now serving %s (production changed)", new.model)
            self.send_status("ready")

        def refuse(message: str) -> None:
            log.warning("%s", message)
            self.show_error(f"Acepilot: {message}")

        task = asyncio.ensure_future(
            follow_production(
                backend,
                config,
                lambda: generation == self._backend_generation,
                swap,
                refuse,
                self.follow_poll_s,
            )
        )
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _observe(self, result: Result) -> None:
        """Every backend generation, also cancelled ones: tokens for `acepilot/stats`."""
        if not result.ran:
            return
        self.stats.generation(
            GenerationRecord(
                result.prompt_tokens,
                result.reused_tokens,
                result.generated_tokens,
                result.finish_reason,
                round(result.prefill_ms, 2),
                round(result.decode_ms, 2),
            )
        )

    def _start_telemetry(self, backend: Backend, config: Config) -> None:
        url = getattr(backend, "telemetry_url", None)
        if backend.kind == "remote" and config.telemetry and url:
            self.telemetry = TelemetrySender(url, config.remote_token)

    def _stop_telemetry(self) -> None:
        sender, self.telemetry = self.telemetry, None
        if sender is not None:
            # Its last POST may wait on the network: not on the event loop.
            self._cpu.submit(sender.close)

    def telemetry_event(self, params: Any) -> None:
        """`acepilot/telemetry`: count a valid event for a completion this server issued."""
        event = parse_event(params)
        if event is None:
            log.debug("ignored a malformed %s notification", TELEMETRY)
            return
        language_id = self.issued.record(event)
        if language_id is None:
            log.debug("ignored a %s event for an unknown or repeated id", event.kind)
            return
        self.stats.event(event.kind, language_id)
        if self.telemetry is not None:
            self.telemetry.add(event.kind, language_id)

    def backend_failed(self, exc: BackendError) -> None:
        """Empty results from now on; tell the user once per kind of problem, not per keystroke."""
        self.stats.errors += 1
        log.warning("backend error: %s", exc)
        if self._problem == exc.kind:
            return
        self._problem = exc.kind
        self.send_status("error", message=str(exc))
        self.show_error(f"Acepilot: {exc}")

    def backend_recovered(self) -> None:
        if self._problem is not None:
            self._problem = None
            log.info("the backend answers again")

    async def _begin_progress(self, message: str) -> str | None:
        window = self.client_capabilities.window
        if window is None or not window.work_done_progress:
            return None
        token = f"acepilot-load-{self._backend_generation}"
        try:
            await asyncio.wait_for(self.work_done_progress.create_async(token), 5)
        except Exception:
            return None
        self.work_done_progress.begin(
            token, types.WorkDoneProgressBegin(title="Acepilot", message=message, cancellable=False)
        )
        return token

    def _end_progress(self, token: str | None, message: str) -> None:
        if token is not None:
            self.work_done_progress.end(token, types.WorkDoneProgressEnd(message=message))

    def send_status(self, state: str, model: str | None = None, message: str | None = None) -> None:
        backend = self.backend
        self.protocol.notify(
            STATUS,
            {
                "state": state,
                "backend": backend.kind if backend else self.config.backend,
                "model": backend.model if backend else model,
                "device": backend.device if backend else None,
                "message": message,
                "latency": {
                    "totalMs": round(self.stats.last_total_ms, 1),
                    "prefillMs": round(self.stats.last_prefill_ms, 1),
                    "decodeMs": round(self.stats.last_decode_ms, 1),
                },
            },
        )

    # ---- completion ------------------------------------------------------------

    async def complete(
        self, uri: str, position: types.Position
    ) -> tuple[Document, int, int, str] | None:
        """The completion at a position: (document, line, column, text) or None."""
        request_id = next(_ids)
        started = time.perf_counter()
        document = self.documents.find(uri)
        if document is None:
            log.info("request %d: unknown document", request_id)
            return None
        if not self.config.enabled_for(document.language_id):
            return None
        line, column = document.clamp(position.line, position.character)
        self.stats.requests += 1
        if document.stale:
            self.stats.stale += 1
            asked = self._resync_asked.get(uri)
            if asked is None or time.monotonic() - asked > RESYNC_REPEAT_S:
                self.ask_resync(uri)
            return None
        rest = self.ahead.answer(document, line, column)
        if rest:
            self.stats.typing_ahead += 1
            self.ahead.remember(document, line, column, rest)
            self.stats.answered(
                RequestRecord((time.perf_counter() - started) * 1000, "typing_ahead"), None
            )
            return document, line, column, rest
        previous = self.tickets.get(uri)
        if previous is not None:
            previous.cancel()  # a newer request for the same document
        ticket = self.tickets[uri] = Ticket()
        try:
            found = await self._complete(request_id, document, line, column, ticket, started)
        except asyncio.CancelledError:
            ticket.cancel()
            self.stats.cancelled += 1
            raise
        finally:
            if self.tickets.get(uri) is ticket:
                del self.tickets[uri]
        if not ticket.cancelled:
            total = (time.perf_counter() - started) * 1000
            # The server's own share: all but waiting (model load, debounce) and the backend.
            overhead = total - ticket.waited_ms if ticket.prompt_built else None
            record = RequestRecord(
                total, ticket.source, ticket.generated_tokens, ticket.finish_reason
            )
            self.stats.answered(record, overhead)
        return found

    async def _complete(
        self,
        request_id: int,
        document: Document,
        line: int,
        column: int,
        ticket: Ticket,
        started: float,
    ) -> tuple[Document, int, int, str] | None:
        if not self.backend_ready.is_set():
            waiting = time.perf_counter()
            await self.backend_ready.wait()
            ticket.waited_ms += (time.perf_counter() - waiting) * 1000
        backend = self.backend
        if backend is None or ticket.cancelled:
            return None
        try:
            await backend.prepare()
        except BackendError as exc:
            self.backend_failed(exc)
            return None
        config = self.config
        lang = language(document.language_id)
        shown = Shown.capture(document, line, column)
        edits = document.edits
        data, context = self._snapshot(document, line, column, config)
        neighbours = self._neighbour_snapshot(document)
        count = self.counter
        loop = asyncio.get_running_loop()

        def build() -> Prompt:
            snippets = self._choose_snippets(
                document.uri, line, data, neighbours, config, count, lang
            )
            return build_prompt(
                replace(data, snippets=snippets),
                config.context_tokens,
                count,
                backend.fim,
                backend.suffix_field,
            )

        prompt = await loop.run_in_executor(self._cpu, build)
        ticket.prompt_built = True
        single = context.mode == SINGLE
        request = Request(
            prompt.text,
            config.max_new_tokens,
            config.temperature,
            config.top_p,
            ("\n",) if single else (),
            config.timeout_ms / 1000 if config.timeout_ms else None,
            document.uri if config.kv_reuse else None,
            prompt.suffix,
        )
        key = (
            backend.model,
            request.prompt,
            request.suffix,
            request.max_new_tokens,
            request.temperature,
            request.top_p,
            single,
        )
        raw = self.cache.get(key)
        if raw is not None:
            self.stats.cache_hits += 1
            ticket.source = "cache"
        else:
            debounce_started = time.perf_counter()
            if await ticket.wait(config.debounce_ms / 1000):
                self.stats.cancelled += 1
                return None
            ticket.waited_ms += (time.perf_counter() - debounce_started) * 1000
            result = await self._generate(
                backend, request, ticket, None if single else block_watch(context)
            )
            if result is None:
                return None
            raw = result.text
            ticket.generated_tokens = result.generated_tokens
            ticket.finish_reason = result.finish_reason
            if result.finish_reason not in ("deadline", "cancelled") or not ticket.cancelled:
                self.cache.put(key, raw)
            self._record(result, started)
        text = postprocess(raw, context)
        log.info(
            "request %d: %s, prompt %d tokens, %s in %.1f ms",
            request_id,
            context.mode,
            prompt.tokens,
            "no completion" if text is None else f"{len(text)} chars",
            (time.perf_counter() - started) * 1000,
        )
        if text is None:
            self.stats.empty += 1
            return None
        self.ahead.remember_shown(document.uri, replace(shown, text=text))
        if self.documents.find(document.uri) is not document or document.edits != edits:
            return None  # typed meanwhile: typing-ahead answers the next request
        return document, line, column, text

    async def _generate(
        self,
        backend: Backend,
        request: Request,
        ticket: Ticket,
        watch: Callable[[str], bool] | None,
    ) -> Result | None:
        self.stats.model_requests += 1
        generation_started = time.perf_counter()
        try:
            result = await backend.generate(request, ticket, watch)
        except BackendError as exc:
            self.backend_failed(exc)
            return None
        finally:
            ticket.waited_ms += (time.perf_counter() - generation_started) * 1000
        self.backend_recovered()
        if ticket.cancelled:
            self.stats.cancelled += 1
            return None
        return result

    def _record(self, result: Result, started: float) -> None:
        self.stats.last_total_ms = (time.perf_counter() - started) * 1000
        self.stats.last_prefill_ms = result.prefill_ms
        self.stats.last_decode_ms = result.decode_ms
        self.send_status("ready")

    def _snapshot(
        self, document: Document, line: int, column: int, config: Config
    ) -> tuple[PromptInput, Context]:
        """Copies of the lines the prompt and post-processing need (cheap slices)."""
        current = document.line(line)
        first = max(0, line - config.context_tokens)  # every line costs at least one token
        before = [line_content(text) for text in document.lines[first:line]]
        after = [
            line_content(text) for text in document.lines[line + 1 : line + 1 + MAX_SUFFIX_LINES]
        ]
        raw_line = document.lines[line]
        eol = raw_line[len(current) :] or (
            document.lines[line - 1][len(document.line(line - 1)) :] if line else ""
        )
        lang = language(document.language_id)
        data = PromptInput(
            self.relative_path(document.uri),
            lang,
            before,
            first,
            current[:column],
            current[column:],
            after,
        )
        context = Context(
            lang,
            current[:column],
            current[column:],
            before[-CONTEXT_LINES:],
            after[:CONTEXT_LINES],
            config.max_lines,
            eol or "\n",
        )
        return data, context

    def _neighbour_snapshot(self, document: Document) -> list[tuple[str, int, list[str] | None]]:
        """Other open documents of the language: (uri, edits, lines to index or None if cached)."""
        out = []
        for other in self.documents:
            if other.uri == document.uri or other.language_id != document.language_id:
                continue
            cached = self._neighbours.get(other.uri)
            lines = None if cached and cached[0] == other.edits else list(other.lines)
            out.append((other.uri, other.edits, lines))
            if len(out) >= MAX_NEIGHBOURS:
                break
        return out

    def _choose_snippets(
        self,
        uri: str,
        line: int,
        data: PromptInput,
        neighbours: list[tuple[str, int, list[str] | None]],
        config: Config,
        count: Callable[[str], int],
        lang: Any,
    ) -> list[Snippet]:
        """Runs on a worker thread. Cached per block of lines: the prompt head stays stable."""
        if config.snippet_tokens <= 0 or not neighbours:
            return []
        indexed = []
        for other_uri, edits, lines in neighbours:
            cached = self._neighbours.get(other_uri)
            if lines is not None or cached is None:
                texts = [line_content(text) for text in (lines or [])]
                cached = (
                    edits,
                    Neighbour.from_lines(other_uri, self.relative_path(other_uri), texts),
                )
                self._neighbours[other_uri] = cached
            indexed.append(cached[1])
        key = (
            line // WINDOW_STRIDE,
            tuple((n.uri, e) for n, (_, e, _) in zip(indexed, neighbours, strict=True)),
        )
        hit = self._snippets.get(uri)
        if hit is not None and hit[0] == key:
            return hit[1]
        query = list(data.before[-QUERY_LINES:]) + [data.line_prefix]
        chosen = select_snippets(query, indexed, config.snippet_tokens, count, lang, uri)
        self._snippets[uri] = (key, chosen)
        return chosen

    def relative_path(self, uri: str) -> str:
        path = to_fs_path(uri) or uri
        roots: list[str] = []
        try:
            workspace = self.workspace
            roots = [to_fs_path(folder.uri) or "" for folder in workspace.folders.values()]
            roots.append(workspace.root_path or "")
        except RuntimeError:  # not initialized
            pass
        best: str | None = None
        for root in filter(None, roots):
            inside = path == root or path.startswith(root.rstrip("/\\") + "/")
            if inside and (best is None or len(root) > len(best)):
                best = root
        if best is not None:
            return Path(path).relative_to(best).as_posix()
        return Path(path).name or path


def block_watch(context: Context) -> Callable[[str], bool]:
    """True once the generated text holds a line past the end of the block: stop early."""

    def watch(text: str) -> bool:
        lines = text.split("\n")[:-1]  # complete lines only
        if len(lines) < 2:
            return False
        if len(lines) > context.max_lines:
            return True
        while len(lines) > 1 and not lines[-1].strip():
            lines.pop()
        return len(cut_block(lines, context)) < len(lines)

    return watch


server = AcepilotServer()


# ---- handlers: small, the pipeline is in AcepilotServer ------------------------


@server.feature(types.INITIALIZE)
def initialize(ls: AcepilotServer, params: types.InitializeParams) -> None:
    encoding = ServerCapabilitiesBuilder.choose_position_encoding(params.capabilities)
    ls.documents.encoding = str(getattr(encoding, "value", encoding))
    if params.initialization_options is not None:
        ls.apply_settings(params.initialization_options, "initializationOptions")


@server.feature(types.INITIALIZED)
async def initialized(ls: AcepilotServer, params: types.InitializedParams) -> None:
    for message in ls._pending_messages:
        ls.show_error(message)
    ls._pending_messages.clear()
    await ls.pull_settings()
    ls.start_loading()


@server.feature(types.WORKSPACE_DID_CHANGE_CONFIGURATION)
async def did_change_configuration(
    ls: AcepilotServer, params: types.DidChangeConfigurationParams
) -> None:
    raw = params.settings
    if isinstance(raw, dict) and isinstance(raw.get(settings.SECTION), dict):
        ls.apply_settings(raw, "didChangeConfiguration")
    else:
        await ls.pull_settings()  # the pull model: settings is null or not ours


@server.feature(types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionOptions())
async def inline_completion(
    ls: AcepilotServer, params: types.InlineCompletionParams
) -> types.InlineCompletionList | None:
    found = await ls.complete(params.text_document.uri, params.position)
    if found is None:
        return types.InlineCompletionList(items=[])
    document, line, column, text = found
    at = types.Position(line, document.to_units(line, column))
    # The command runs when the user accepts the item (VS Code): the extension turns it
    # into an `accepted` telemetry event for this id (docs/lsp.md).
    completion_id = ls.issued.new(document.language_id)
    command = types.Command(
        title="Acepilot: accepted",
        command=ACCEPTED_COMMAND,
        arguments=[{"id": completion_id, "languageId": document.language_id}],
    )
    return types.InlineCompletionList(
        items=[
            types.InlineCompletionItem(insert_text=text, range=types.Range(at, at), command=command)
        ]
    )


@server.feature(types.TEXT_DOCUMENT_COMPLETION, types.CompletionOptions(resolve_provider=False))
async def completion(ls: AcepilotServer, params: types.CompletionParams) -> types.CompletionList:
    found = await ls.complete(params.text_document.uri, params.position)
    if found is None:
        return types.CompletionList(is_incomplete=True, items=[])
    document, line, column, text = found
    # The item replaces the word before the cursor, so that editors filter it by that word.
    word = WORD_BEFORE.search(document.line(line)[:column])
    typed = word.group(0) if word else ""
    start = types.Position(line, document.to_units(line, column - len(typed)))
    end = types.Position(line, document.to_units(line, column))
    label = (typed + text.splitlines()[0] if text.splitlines() else typed + text)[
        :80
    ] or text.strip()[:80]
    item = types.CompletionItem(
        label=label,
        kind=types.CompletionItemKind.Text,
        detail="Acepilot",
        filter_text=typed + text,
        text_edit=types.TextEdit(types.Range(start, end), typed + text),
        insert_text_format=types.InsertTextFormat.PlainText,
    )
    return types.CompletionList(is_incomplete=True, items=[item])


@server.feature(STATS)
def stats(ls: AcepilotServer, params: Any) -> dict[str, Any]:
    """The counters (acepilot/server/lsp/stats.py); `{"reset": true}` starts new ones after answering."""
    backend = ls.backend
    snapshot = ls.stats.snapshot(backend.in_flight_tokens if backend is not None else 0)
    params = plain(params)
    if isinstance(params, dict) and params.get("reset") is True:
        ls.stats = Stats()
    return snapshot


@server.feature(TELEMETRY)
def telemetry(ls: AcepilotServer, params: Any) -> None:
    ls.telemetry_event(params)


@server.feature(types.SHUTDOWN)
async def shutdown(ls: AcepilotServer, params: None) -> None:
    for ticket in list(ls.tickets.values()):
        ticket.cancel()
    sender, ls.telemetry = ls.telemetry, None
    if sender is not None:  # send what is queued, on a thread (bounded: 5 s)
        await asyncio.get_running_loop().run_in_executor(None, sender.close)
    if ls.backend is not None:
        await ls.backend.close()
