"""The Acepilot language server: `textDocument/inlineCompletion` (and `completion`).

This module only wires LSP to the rest: small handlers that hand the request
to the pipeline (acepilot/server/lsp/pipeline.py, which docs/lsp.md draws)
and turn its answer into LSP items (reply.py). The session's state lives in
session.py, the JSON-RPC rules in rpc.py, the framing in transport.py.

One server object per session: stdio has one; over TCP each connection gets a
fresh one (`create_server`), so no state or answer is shared between clients.

Stale documents: a change that cannot be applied marks the document stale;
completions for it are empty and the client is asked (`acepilot/resync`) for
one full-text change, which makes it fresh again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from lsprotocol import types
from pygls.capabilities import ServerCapabilitiesBuilder
from pygls.lsp.server import LanguageServer
from pygls.uris import to_fs_path

from acepilot.server import __version__, protocol
from acepilot.server.lsp import config as settings
from acepilot.server.lsp import pipeline, reply
from acepilot.server.lsp.documents import Change
from acepilot.server.lsp.rpc import AcepilotProtocol
from acepilot.server.lsp.session import Session
from acepilot.server.lsp.stats import Stats, plain
from acepilot.server.lsp.transport import parse_error

log = logging.getLogger(__name__)
MAX_WATCHED_EVENTS = 10_000  # file events handled per notification (a checkout of a big branch)


class AcepilotServer(LanguageServer):
    """pygls' server for one session: the client side of the Session (its Notifier)."""

    def __init__(self) -> None:
        super().__init__("acepilot", __version__, protocol_cls=AcepilotProtocol)
        self.session = Session(self)
        self.session.roots = self.workspace_roots
        self._pending_messages: list[str] = []
        self._progress = 0
        self.ended = asyncio.Event()  # set by `exit`: the transport stops reading
        self.exit_code: int | None = None

    # ---- Notifier: how the session reaches the client -------------------------------

    def notify(self, method: str, params: Any) -> None:
        self.protocol.notify(method, params)

    def show_error(self, message: str) -> None:
        if self.protocol.writer is None:
            self._pending_messages.append(message)
            return
        self.window_show_message(
            types.ShowMessageParams(type=types.MessageType.Error, message=message)
        )

    async def begin_progress(self, message: str) -> str | None:
        window = self.client_capabilities.window
        if window is None or not window.work_done_progress:
            return None
        self._progress += 1
        token = f"acepilot-load-{self._progress}"
        try:
            await asyncio.wait_for(self.work_done_progress.create_async(token), 5)
        except Exception:
            return None
        self.work_done_progress.begin(
            token, types.WorkDoneProgressBegin(title="Acepilot", message=message, cancellable=False)
        )
        return token

    def end_progress(self, token: str | None, message: str) -> None:
        if token is not None:
            self.work_done_progress.end(token, types.WorkDoneProgressEnd(message=message))

    def workspace_roots(self) -> list[str]:
        try:
            workspace = self.workspace
        except RuntimeError:  # not initialized
            return []
        roots = [to_fs_path(folder.uri) or "" for folder in workspace.folders.values()]
        return [*roots, workspace.root_path or ""]

    async def watch_files(self) -> None:
        """Ask the client to report file changes (didChangeWatchedFiles) where it can register them."""
        caps = self.client_capabilities.workspace
        watched = caps.did_change_watched_files if caps is not None else None
        if watched is None or not watched.dynamic_registration:
            return
        options = types.DidChangeWatchedFilesRegistrationOptions(
            watchers=[types.FileSystemWatcher(glob_pattern="**/*")]
        )
        registration = types.Registration(
            id="acepilot-watch",
            method=types.WORKSPACE_DID_CHANGE_WATCHED_FILES,
            register_options=options,
        )
        try:
            await asyncio.wait_for(
                self.client_register_capability_async(
                    types.RegistrationParams(registrations=[registration])
                ),
                5,
            )
        except Exception as exc:  # the index then follows didSave only
            log.info("file watching not registered (%s)", type(exc).__name__)

    async def pull_settings(self) -> None:
        caps = self.client_capabilities.workspace
        if caps is None or not caps.configuration:
            return
        try:
            values = await self.workspace_configuration_async(
                types.ConfigurationParams(items=[types.ConfigurationItem(section=protocol.SECTION)])
            )
        except Exception as exc:  # the client may refuse: keep what we have
            log.warning("workspace/configuration failed (%s)", type(exc).__name__)
            return
        if values and values[0] is not None:
            self.session.apply_settings(values[0], "workspace/configuration")

    # ---- documents (rpc.py routes the notifications here) ----------------------------

    def did_open(self, params: types.DidOpenTextDocumentParams) -> None:
        item = params.text_document
        self.session.did_open(item.uri, item.language_id, item.version, item.text)

    def did_change(self, params: types.DidChangeTextDocumentParams) -> None:
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
        self.session.did_change(params.text_document.uri, params.text_document.version, changes)

    def did_close(self, params: types.DidCloseTextDocumentParams) -> None:
        self.session.did_close(params.text_document.uri)

    # ---- the session's transport (transport.py) ---------------------------------------

    def attach(self, writer: Any) -> None:
        self.protocol.set_writer(writer)

    def write_raw(self, data: bytes) -> None:
        writer = self.protocol.writer
        if writer is not None:
            writer.write(data)

    def receive(self, body: bytes) -> None:
        """One frame's body: parsed (ParseError when it is not JSON) and dispatched."""
        try:
            message = json.loads(body, object_hook=self.protocol.structure_message)
        except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
            log.warning("a message that is not JSON (%s)", type(exc).__name__)
            self.write_raw(parse_error(f"not a JSON message ({type(exc).__name__})"))
            return
        if not hasattr(message, "jsonrpc"):
            self.write_raw(parse_error("not a JSON-RPC message"))
            return
        try:
            self.protocol.handle_message(message)
        except Exception:  # a bug of one message must not end the session
            log.exception("handling a message failed")

    async def close_session(self) -> None:
        with contextlib.suppress(Exception):
            await self.session.close()


# ---- handlers: each hands its request to the session or the pipeline --------------------


def initialize(ls: AcepilotServer, params: types.InitializeParams) -> None:
    encoding = ServerCapabilitiesBuilder.choose_position_encoding(params.capabilities)
    ls.session.documents.encoding = str(getattr(encoding, "value", encoding))
    if params.initialization_options is not None:
        ls.session.apply_settings(params.initialization_options, "initializationOptions")


async def initialized(ls: AcepilotServer, params: types.InitializedParams) -> None:
    for message in ls._pending_messages:
        ls.show_error(message)
    ls._pending_messages.clear()
    await ls.pull_settings()
    ls.session.start_workspace()  # background threads: returns at once
    ls.session.start_loading()
    if ls.session.workspace.active:
        ls.session._spawn(ls.watch_files())


def did_save(ls: AcepilotServer, params: types.DidSaveTextDocumentParams) -> None:
    ls.session.did_save(params.text_document.uri)


def did_change_watched_files(ls: AcepilotServer, params: types.DidChangeWatchedFilesParams) -> None:
    events = [
        (change.uri, change.type == types.FileChangeType.Deleted)
        for change in params.changes[:MAX_WATCHED_EVENTS]
    ]
    ls.session.watched_files(events)


async def did_change_configuration(
    ls: AcepilotServer, params: types.DidChangeConfigurationParams
) -> None:
    raw = params.settings
    if isinstance(raw, dict) and isinstance(raw.get(settings.SECTION), dict):
        ls.session.apply_settings(raw, "didChangeConfiguration")
    else:
        await ls.pull_settings()  # the pull model: settings is null or not ours


async def inline_completion(
    ls: AcepilotServer, params: types.InlineCompletionParams
) -> types.InlineCompletionList:
    query = pipeline.Query(
        uri=params.text_document.uri,
        line=params.position.line,
        character=params.position.character,
    )
    return reply.inline_items(await pipeline.complete(ls.session, query), ls.session.issued)


async def completion(ls: AcepilotServer, params: types.CompletionParams) -> types.CompletionList:
    query = pipeline.Query(
        uri=params.text_document.uri,
        line=params.position.line,
        character=params.position.character,
    )
    return reply.completion_items(await pipeline.complete(ls.session, query))


def stats(ls: AcepilotServer, params: Any) -> dict[str, Any]:
    """The counters (acepilot/server/lsp/stats.py); `{"reset": true}` starts new ones after answering."""
    backend = ls.session.backend
    snapshot = ls.session.stats.snapshot(backend.in_flight_tokens if backend is not None else 0)
    snapshot["workspace"] = ls.session.workspace.counts()  # counts only, never code or paths
    snapshot["idle_prefill"] = ls.session.idle.counts()  # lsp/prefill.py
    params = plain(params)
    if isinstance(params, dict) and params.get("reset") is True:
        ls.session.stats = Stats()
    return snapshot


def telemetry(ls: AcepilotServer, params: Any) -> None:
    ls.session.telemetry_event(params)


async def shutdown(ls: AcepilotServer, params: None) -> None:
    await ls.session.shutdown()


def create_server() -> AcepilotServer:
    """A fresh server (one per session: stdio, or each TCP connection) with its handlers."""
    ls = AcepilotServer()
    ls.feature(types.INITIALIZE)(initialize)
    ls.feature(types.INITIALIZED)(initialized)
    ls.feature(types.WORKSPACE_DID_CHANGE_CONFIGURATION)(did_change_configuration)
    ls.feature(types.TEXT_DOCUMENT_DID_SAVE)(did_save)
    ls.feature(types.WORKSPACE_DID_CHANGE_WATCHED_FILES)(did_change_watched_files)
    ls.feature(types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionOptions())(
        inline_completion
    )
    ls.feature(types.TEXT_DOCUMENT_COMPLETION, types.CompletionOptions(resolve_provider=False))(
        completion
    )
    ls.feature(protocol.STATS)(stats)
    ls.feature(protocol.TELEMETRY)(telemetry)
    ls.feature(types.SHUTDOWN)(shutdown)
    return ls
