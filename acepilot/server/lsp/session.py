"""One editor session's state: documents, settings, the loaded backend, caches, telemetry.

Why one module over 500 lines: it is the one place where per-connection state
changes (documents, settings, backend swaps, caches, telemetry); each stage
that reads it lives in its own module (pipeline.py and the modules it calls).

The pipeline (acepilot/server/lsp/pipeline.py) reads and updates this state;
the language server (server.py) owns one Session per connection and forwards
the client's notifications to it; `acepilot complete`/`demo` own a headless
one (acepilot/server/lsp/headless.py). The session talks back to its client
only through a `Notifier` (status, errors, resync requests, progress).

Backend lifecycle: settings that change the backend (model, registry, remote
URL, ...) start a new load on a worker thread; a load superseded by newer
settings is discarded. A local model named in the registry then follows its
production pointer (acepilot/server/production.py): a new version is loaded
beside the serving one, swapped in, and the old one finishes what it was
given; a version that cannot be loaded is refused once and the old one keeps
serving.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from pygls.uris import to_fs_path

from acepilot.server import protocol
from acepilot.server.errors import AcepilotError
from acepilot.server.lsp import config as settings
from acepilot.server.lsp.backends import Backend, BackendError, LocalBackend, Result, Ticket
from acepilot.server.lsp.backends import load_backend as default_loader
from acepilot.server.lsp.cache import LruCache, TypingAhead
from acepilot.server.lsp.config import Config, ConfigError
from acepilot.server.lsp.context import ContextIndex
from acepilot.server.lsp.documents import Change, DocumentError, DocumentStore, repair
from acepilot.server.lsp.prefill import IdlePrefill
from acepilot.server.lsp.prompt import Prompt, TokenCounter
from acepilot.server.lsp.stats import GenerationRecord, Issued, Stats, TelemetrySender, parse_event
from acepilot.server.lsp.workspace import WorkspaceContext
from acepilot.server.production import POLL_S

log = logging.getLogger(__name__)

RESYNC_REPEAT_S = 2.0  # a stale document's completion requests repeat the ask at most this often
MAX_PATH_CHARS = 256  # of a path in the prompt header (the URI is the client's)
RECENT_LINES = 64  # lines each side of an edit handed to the recent-edits buffer (its window: 24)


class Notifier(Protocol):
    """How a session reaches its client (the language server; nothing when headless)."""

    def notify(self, method: str, params: Any) -> None: ...

    def show_error(self, message: str) -> None: ...

    async def begin_progress(self, message: str) -> str | None: ...

    def end_progress(self, token: str | None, message: str) -> None: ...


class Session:
    """State of one editor session (see the module docstring)."""

    def __init__(
        self,
        notifier: Notifier,
        loader: Callable[[Config], Backend] = default_loader,
    ) -> None:
        self.notifier = notifier
        self.loader = loader
        self.documents = DocumentStore()
        self.config = Config()
        self.roots: Callable[[], list[str]] = list  # workspace folders (paths)
        self.backend: Backend | None = None
        self.backend_error: str | None = None
        self.backend_ready = asyncio.Event()
        self.generation = 0  # of the backend: a newer load or a close supersedes older ones
        self.loading: asyncio.Task[None] | None = None
        self.tickets: dict[str, Ticket] = {}
        self.ahead = TypingAhead()
        self.cache = LruCache(256)
        self.context = ContextIndex(self.relative_path)
        self.workspace = WorkspaceContext()  # started by `start_workspace` (initialize)
        self.idle = IdlePrefill(self._idle_prefill)  # prefill.py: the KV cache while typing pauses
        self._last_edit: tuple[str, int, int] | None = None  # uri, line, character
        self.last_prompt: Prompt | None = None  # the last prompt built (`complete --explain`)
        # `start_workspace` ran (initialize, or the CLI's --workspace): settings may toggle it.
        self.workspace_started = False
        self.stats = Stats()
        self.issued = Issued()
        self.telemetry: TelemetrySender | None = None
        self.counter = TokenCounter()
        self.cpu = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="acepilot-prompt")
        self.follow_poll_s = POLL_S
        self._problem: str | None = None  # the backend error kind the user was told about
        self._resync_asked: dict[str, float] = {}
        self._background: set[asyncio.Future[Any]] = set()

    # ---- documents ---------------------------------------------------------------

    def did_open(self, uri: str, language_id: str, version: int, text: str) -> None:
        self._resync_asked.pop(uri, None)
        try:
            self.documents.open(uri, language_id, version, text)
        except DocumentError as exc:
            log.warning("cannot open a document: %s", exc)
            return
        if self.workspace.active and self.config.workspace_context:
            self.workspace.noted(uri, lambda: text, 0, "recent_view")

    def did_change(self, uri: str, version: int | None, changes: list[Change]) -> None:
        document = self.documents.find(uri)
        try:
            self.documents.change(uri, version, changes)
        except DocumentError as exc:
            log.warning("cannot apply a change (version %s): %s", version, exc)
        if document is None:
            return
        if document.stale:
            self.ahead.forget(uri)
            self.cancel_ticket(uri)
            if uri not in self._resync_asked:
                self.ask_resync(uri)
        elif self._resync_asked.pop(uri, None) is not None:
            log.info("document resynchronised (version %s)", document.version)
        if not document.stale and changes:
            self._edited(uri, changes[-1])
        if (
            not document.stale
            and changes
            and self.workspace.active
            and self.config.workspace_context
        ):
            line = changes[-1].start[0] if changes[-1].start is not None else 0
            # The lines around the edit are enough (blank lines above keep the line numbers):
            # not the whole document per keystroke.
            start = max(0, line - RECENT_LINES)
            near = "\n" * start + "".join(document.lines[start : line + RECENT_LINES])
            self.workspace.noted(uri, lambda: near, line, "recent_edit")

    def _edited(self, uri: str, change: Change) -> None:
        """Where the cursor is after an edit (its end), for the idle prefill."""
        line, character = change.start if change.start is not None else (0, 0)
        pieces = change.text.split("\n")
        line += len(pieces) - 1
        character = (character if len(pieces) == 1 else 0) + len(pieces[-1])
        self._last_edit = (uri, line, character)
        self.arm_idle(uri, line, character)

    # ---- idle prefill (prefill.py) ----------------------------------------------------------

    def arm_idle(self, uri: str, line: int, character: int) -> None:
        """After a change or a request: prefill there once the user pauses (local engine only)."""
        config = self.config
        if isinstance(self.backend, LocalBackend) and config.kv_reuse and config.idle_prefill_ms:
            self.idle.arm(uri, line, character, config.idle_prefill_ms)
        else:
            self.idle.disarm()

    async def _idle_prefill(
        self, uri: str, line: int, character: int, cancel: threading.Event
    ) -> Any:
        from acepilot.server.lsp.pipeline import idle_prefill  # the pipeline imports this module

        return await idle_prefill(self, uri, line, character, cancel)

    # ---- workspace context (lsp/workspace.py) ---------------------------------------------

    def start_workspace(self) -> None:
        """Index the workspace folders in the background, if the setting says so (never blocks)."""
        self.workspace_started = True
        if self.config.workspace_context and not self.workspace.active:
            self.workspace.start(self.roots())

    def did_save(self, uri: str) -> None:
        """didSave: re-index the file on a worker thread (parsing is CPU work)."""
        if self.workspace.active:
            self._submit(self.workspace.saved, uri)
            if self._last_edit is not None:  # the context may change: prefill it anew
                self.arm_idle(*self._last_edit)

    def watched_files(self, events: list[tuple[str, bool]]) -> None:
        """didChangeWatchedFiles: (uri, deleted) pairs, re-indexed or removed on a worker thread."""
        if not self.workspace.active:
            return
        workspace = self.workspace

        def work() -> None:
            for uri, deleted in events:
                if deleted:
                    workspace.deleted(uri)
                else:
                    workspace.saved(uri)

        self._submit(work)

    def _submit(self, work: Callable[..., None], *args: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the pool is shut down: exiting
            self.cpu.submit(work, *args)

    def _stop_workspace(self) -> None:
        workspace, self.workspace = self.workspace, WorkspaceContext()
        if workspace.active:
            self._submit(workspace.close)

    def did_close(self, uri: str) -> None:
        """Forget everything keyed by the document: memory returns after close."""
        self.documents.close(uri)
        self._resync_asked.pop(uri, None)
        self.ahead.forget(uri)
        self.context.forget(uri)
        self.cancel_ticket(uri)
        if self._last_edit is not None and self._last_edit[0] == uri:
            self._last_edit = None
            self.idle.disarm()
        if self.backend is not None:
            self._spawn(self.backend.drop_session(uri))

    def ask_resync(self, uri: str) -> None:
        """Ask the client for the document's full text (a didChange without range)."""
        self._resync_asked[uri] = time.monotonic()
        self.notifier.notify(protocol.RESYNC, {"uri": uri})

    def stale_request(self, uri: str) -> None:
        """A completion asked for a stale document: count it, repeat the resync ask now and then."""
        self.stats.stale += 1
        asked = self._resync_asked.get(uri)
        if asked is None or time.monotonic() - asked > RESYNC_REPEAT_S:
            self.ask_resync(uri)

    def _folder(self, path: str) -> str | None:
        """The innermost workspace folder holding `path` (None: outside every folder)."""
        best: str | None = None
        for root in filter(None, self.roots()):
            inside = path == root or path.startswith(root.rstrip("/\\") + "/")
            if inside and (best is None or len(root) > len(best)):
                best = root
        return best

    def relative_path(self, uri: str) -> str:
        """The document's path relative to its workspace folder (for the prompt header)."""
        path = to_fs_path(uri) or uri
        best = self._folder(path)
        shown = Path(path).relative_to(best).as_posix() if best else Path(path).name or path
        return repair(shown)[:MAX_PATH_CHARS]

    def repository_name(self, uri: str) -> str:
        """The name of the document's workspace folder ("" outside one): the repository
        name of a model's repository-level format (`<repo_name>acepilot`)."""
        best = self._folder(to_fs_path(uri) or uri)
        return repair(Path(best).name)[:MAX_PATH_CHARS] if best else ""

    # ---- requests in flight --------------------------------------------------------

    def new_ticket(self, uri: str) -> Ticket:
        """A ticket for a new request; the document's previous request is cancelled, and an
        idle prefill stops (the request goes first)."""
        self.idle.disarm()
        self.cancel_ticket(uri)
        ticket = self.tickets[uri] = Ticket()
        return ticket

    def end_ticket(self, uri: str, ticket: Ticket) -> None:
        if self.tickets.get(uri) is ticket:
            del self.tickets[uri]

    def cancel_ticket(self, uri: str) -> None:
        ticket = self.tickets.pop(uri, None)
        if ticket is not None:
            ticket.cancel()

    # ---- settings --------------------------------------------------------------------

    def apply_settings(self, raw: Any, source: str) -> bool:
        """Validate and apply; on error show it, keep the old config, return False."""
        try:
            new = settings.update(self.config, settings.settings_section(raw))
        except ConfigError as exc:
            log.warning("invalid settings from %s: %s", source, exc)
            self.notifier.show_error(
                f"Acepilot: invalid settings, keeping the previous ones: {exc}"
            )
            return False
        reload = new.backend_key() != self.config.backend_key()
        self.config = new
        if self.workspace_started and new.workspace_context != self.workspace.active:
            if new.workspace_context:
                self.workspace.start(self.roots())
            else:
                self._stop_workspace()
        if reload and self.loading is not None:  # before `initialized`, loading starts there
            self.start_loading()
        return True

    # ---- backend -----------------------------------------------------------------------

    def start_loading(self) -> None:
        self.generation += 1
        self.backend_ready.clear()
        self.loading = asyncio.ensure_future(self._load(self.generation, self.config))

    async def ready_backend(self, ticket: Ticket) -> Backend | None:
        """The backend once loaded and prepared; None when there is none or the ticket ended."""
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
        return backend

    async def _load(self, generation: int, config: Config) -> None:
        old, self.backend = self.backend, None
        self.backend_error = None
        self._problem = None
        self.cache.clear()
        if old is not None:
            await old.close()
        self._stop_telemetry()
        label = backend_label(config)
        self.send_status(protocol.STATE_LOADING, model=label)
        token = await self.notifier.begin_progress(f"loading {label}")
        backend: Backend | None = None
        try:
            backend = await asyncio.get_running_loop().run_in_executor(None, self.loader, config)
        except AcepilotError as exc:
            self.backend_error = str(exc)
        except Exception as exc:  # onnxruntime/tokenizers raise their own types
            log.exception("loading the backend failed")
            self.backend_error = f"cannot load the model ({type(exc).__name__}: {exc})"
        if generation != self.generation:  # settings changed meanwhile
            if backend is not None:
                await backend.close()
            return
        await self._install(backend, config, generation)
        self.backend_ready.set()
        self.notifier.end_progress(token, "ready" if backend else "failed")
        if backend is None:
            log.warning("backend not available: %s", self.backend_error)
            self.send_status(protocol.STATE_ERROR, model=label, message=self.backend_error)
            self.notifier.show_error(f"Acepilot: {self.backend_error}")
        else:
            log.info("backend ready: %s %s on %s", backend.kind, backend.model, backend.device)
            self.send_status(protocol.STATE_READY)

    async def _install(self, backend: Backend | None, config: Config, generation: int) -> None:
        self.backend = backend
        if backend is None:
            return
        backend.observer = self._observe
        self.counter = TokenCounter(backend.count_tokens)
        url = getattr(backend, "telemetry_url", None)
        if backend.kind == "remote" and config.telemetry and url:
            self.telemetry = TelemetrySender(url, config.remote_token)
        with contextlib.suppress(BackendError):  # told about at the first completion
            await backend.prepare()
        if isinstance(backend, LocalBackend) and backend.follower is not None:
            self._spawn(self._follow(backend, config, generation))

    async def _follow(self, backend: LocalBackend, config: Config, generation: int) -> None:
        """Swap to a new production version when the registry says so (module docstring)."""
        follower = backend.follower
        assert follower is not None
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.follow_poll_s)
            if generation != self.generation:
                return
            try:
                entry = await loop.run_in_executor(None, follower.poll)
            except AcepilotError as exc:  # a corrupt pointer: keep serving, said once
                log.warning("production pointer: %s", exc)
                continue
            if entry is None:
                continue
            log.info("production of %s is now %s: loading it", entry.name, entry.version)
            try:
                new = await loop.run_in_executor(None, backend.successor, entry, config)
            except Exception as exc:  # RegistryError, or onnxruntime's own types
                follower.refuse(entry)
                message = (
                    f"{entry.name} {entry.version} (the new production version) cannot be "
                    f"loaded, still serving {backend.model}: {exc}"
                )
                log.warning("%s", message)
                self.notifier.show_error(f"Acepilot: {message}")
                continue
            if generation != self.generation:
                await new.close()
                return
            follower.accept(entry)
            self._swap(backend, new)
            backend = new

    def _swap(self, old: LocalBackend, new: LocalBackend) -> None:
        new.observer = self._observe
        self.backend = new
        self.cache.clear()
        self.counter = TokenCounter(new.count_tokens)
        old.retire()
        log.info("now serving %s (production changed)", new.model)
        self.send_status(protocol.STATE_READY)

    def _observe(self, result: Result) -> None:
        """Every backend generation, also cancelled ones: tokens for `acepilot/stats`."""
        if not result.ran:
            return
        self.stats.generation(
            GenerationRecord(
                prompt_tokens=result.prompt_tokens,
                reused_tokens=result.reused_tokens,
                generated_tokens=result.generated_tokens,
                finish_reason=result.finish_reason,
                prefill_ms=round(result.prefill_ms, 2),
                decode_ms=round(result.decode_ms, 2),
            )
        )

    def backend_failed(self, exc: BackendError) -> None:
        """Empty results from now on; tell the user once per kind of problem, not per keystroke."""
        self.stats.errors += 1
        log.warning("backend error: %s", exc)
        if self._problem == exc.kind:
            return
        self._problem = exc.kind
        self.send_status(protocol.STATE_ERROR, message=str(exc))
        self.notifier.show_error(f"Acepilot: {exc}")

    def backend_recovered(self) -> None:
        if self._problem is not None:
            self._problem = None
            log.info("the backend answers again")

    def send_status(self, state: str, model: str | None = None, message: str | None = None) -> None:
        backend = self.backend
        self.notifier.notify(
            protocol.STATUS,
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

    # ---- telemetry -----------------------------------------------------------------------

    def telemetry_event(self, params: Any) -> None:
        """`acepilot/telemetry`: count a valid event for a completion this server issued."""
        event = parse_event(params)
        if event is None:
            log.debug("ignored a malformed %s notification", protocol.TELEMETRY)
            return
        language_id = self.issued.record(event)
        if language_id is None:
            log.debug("ignored a %s event for an unknown or repeated id", event.kind)
            return
        self.stats.event(event.kind, language_id)
        if self.telemetry is not None:
            self.telemetry.add(event.kind, language_id, **self.issued.counts(event))

    def _stop_telemetry(self) -> None:
        sender, self.telemetry = self.telemetry, None
        if sender is not None:
            # Its last POST may wait on the network: not on the event loop.
            with contextlib.suppress(RuntimeError):  # the pool is shut down: exiting
                self.cpu.submit(sender.close)

    # ---- the end -------------------------------------------------------------------------

    async def shutdown(self) -> None:
        """`shutdown`: stop requests, send queued telemetry (bounded: 5 s), close the backend."""
        self.idle.close()
        for ticket in list(self.tickets.values()):
            ticket.cancel()
        sender, self.telemetry = self.telemetry, None
        if sender is not None:
            await asyncio.get_running_loop().run_in_executor(None, sender.close)
        workspace, self.workspace = self.workspace, WorkspaceContext()
        await asyncio.get_running_loop().run_in_executor(None, workspace.close)
        if self.backend is not None:
            await self.backend.close()

    async def close(self) -> None:
        """The client is gone (or exited): stop work, free the model and threads."""
        self.idle.close()
        for ticket in list(self.tickets.values()):
            ticket.cancel()
        self._stop_telemetry()
        backend, self.backend = self.backend, None
        self.generation += 1  # stops the production follower and pending loads
        if backend is not None:
            with contextlib.suppress(Exception):
                await backend.close()
        for task in list(self._background):
            task.cancel()
        workspace, self.workspace = self.workspace, WorkspaceContext()
        with contextlib.suppress(Exception):
            await asyncio.get_running_loop().run_in_executor(None, workspace.close)
        self.cpu.shutdown(wait=False, cancel_futures=True)

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.ensure_future(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)


def backend_label(config: Config) -> str:
    """What the status bar shows while loading."""
    if config.backend == "remote":
        return config.remote_model or config.remote_url or "remote"
    return config.model or config.remote_url or "the default model"
