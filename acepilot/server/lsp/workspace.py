"""Stage 3b of the pipeline: cross-file context from the workspace index (docs/context.md).

One `WorkspaceIndex` + `ContextCollector` per workspace folder, started in the
background on `initialize` (or when the setting is turned on) and closed on
shutdown. Editor events feed it: didSave and didChangeWatchedFiles re-index a
file (`saved`, `watched`: parse work, so called off the event loop), didChange
notes the edited window in the recent-edits ring buffer, didOpen the viewed
one. `collect` runs on the prompt stage's worker thread.

Open tabs are not one of the collector's sources here: the language server's
own open-tab snippets (lsp/context.py) stay the open-tab source of the prompt.
Requests never wait for the index: `collect` answers from what is indexed so far.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pygls.uris import to_fs_path

if TYPE_CHECKING:  # imported when a folder is indexed: numpy, bm25s, tree-sitter
    from acepilot.server.context import ContextChunk, ContextCollector, IndexLimits, WorkspaceIndex

log = logging.getLogger(__name__)

# The collector's sources; "open_tab" is the server's own snippets (lsp/context.py).
SOURCES = (
    "imported_definition",
    "near_cursor_symbol",
    "bm25",
    "recent_edit",
    "recent_view",
)
MAX_FOLDERS = 8  # workspace folders indexed (a multi-root workspace beyond this: the first ones)
HEAD_LINES = 200  # of the document handed to the collector: its head (imports of an unsaved file),
BEFORE_LINES = 2000  # the lines before the cursor
AFTER_LINES = 500  # and after it; the rest are blank lines (line numbers kept)


def document_window(lines: Sequence[str], line: int, column: int) -> tuple[str, int]:
    """The document as the collector gets it, and the cursor's offset in it (on the event loop).

    The collector parses a document the index does not hold and splits it into lines: on a
    5 MB document that took seconds. It needs the head (imports) and the lines around the
    cursor; the lines in between become empty, so that line numbers (the collector's
    per-block cache) are the document's. `lines` keep their own line breaks.
    """
    if len(lines) <= HEAD_LINES + BEFORE_LINES + AFTER_LINES:
        parts = list(lines)
    else:
        start = max(HEAD_LINES, line - BEFORE_LINES)
        end = min(len(lines), line + AFTER_LINES)
        parts = [*lines[:HEAD_LINES], *["\n"] * (start - HEAD_LINES), *lines[start:end]]
    offset = sum(len(part) for part in parts[:line]) + column
    return "".join(parts), offset


@dataclass(frozen=True)
class Folder:
    """One indexed workspace folder."""

    root: Path
    index: WorkspaceIndex
    collector: ContextCollector


class WorkspaceContext:
    """The workspace folders' indexes and collectors (see the module docstring)."""

    def __init__(self, limits: IndexLimits | None = None) -> None:
        self.limits = limits
        self.folders: list[Folder] = []
        self.last_chunks = 0  # context chunks of the last prompt (stats: counts only)
        self.last_tokens = 0

    @property
    def active(self) -> bool:
        return bool(self.folders)

    def start(self, roots: Iterable[str]) -> None:
        """Index each existing folder in a background thread (returns at once)."""
        if self.folders:
            return
        from acepilot.server.context import ContextCollector, RecentChunks, WorkspaceIndex

        seen: set[Path] = set()
        for root in roots:
            if not root:
                continue
            path = Path(root).resolve()
            if path in seen or not path.is_dir() or len(self.folders) >= MAX_FOLDERS:
                continue
            seen.add(path)
            index = WorkspaceIndex(path, self.limits)
            collector = ContextCollector(index, RecentChunks(), sources=SOURCES)
            index.start()
            self.folders.append(Folder(path, index, collector))
        if self.folders:
            log.info("indexing %d workspace folder(s) in the background", len(self.folders))

    def close(self) -> None:
        """Stop the indexing threads (blocking up to a few seconds: call it off the event loop)."""
        folders, self.folders = self.folders, []
        for folder in folders:
            folder.index.close()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every folder's first walk is over (the CLI, tests); False on timeout."""
        return all(folder.index.wait(timeout) for folder in self.folders)

    def locate(self, uri: str) -> tuple[Folder, str] | None:
        """The folder holding a document (the innermost one) and its path relative to that folder."""
        path = to_fs_path(uri)
        if not path:
            return None
        best: tuple[Folder, str] | None = None
        for folder in self.folders:
            rel = folder.index.relative(path)
            if rel is not None and (
                best is None or len(folder.root.parts) > len(best[0].root.parts)
            ):
                best = (folder, rel)
        return best

    # ---- editor events -----------------------------------------------------------------

    def saved(self, uri: str) -> None:
        """didSave, or a watched file created/changed: re-index it (parse work: off the loop)."""
        found = self.locate(uri)
        if found is not None:
            found[0].index.update(found[1])

    def deleted(self, uri: str) -> None:
        found = self.locate(uri)
        if found is not None:
            found[0].index.remove(found[1])
            found[0].collector.recent.forget(found[1])

    def noted(self, uri: str, text: Callable[[], str], line: int, kind: str) -> None:
        """A window the user edited (`recent_edit`) or viewed (`recent_view`) around `line`."""
        found = self.locate(uri)
        if found is not None:
            found[0].collector.recent.note(found[1], text(), line, kind)

    # ---- the request ---------------------------------------------------------------------

    def collect(
        self,
        uri: str,
        text: str,
        offset: int,
        language: str,
        budget: int,
        count: Callable[[str], int],
    ) -> list[ContextChunk]:
        """The context chunks for a cursor (worker thread), by (path, line); [] outside every folder."""
        found = self.locate(uri)
        if found is None or budget <= 0:
            return []
        folder, rel = found
        try:
            return folder.collector.collect(text, offset, rel, language, budget, count)
        except Exception:  # the completion goes on without cross-file context
            log.exception("collecting workspace context failed")
            return []

    def counts(self) -> dict[str, Any]:
        """For `acepilot/stats`: counts only, never code or paths."""
        return {
            "folders": len(self.folders),
            "files": sum(len(folder.index.files) for folder in self.folders),
            "indexing": any(not folder.index.ready for folder in self.folders),
            "last_chunks": self.last_chunks,
            "last_tokens": self.last_tokens,
        }
