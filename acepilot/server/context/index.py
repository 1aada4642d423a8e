"""The workspace index: files walked in a background thread, symbols, imports and BM25 chunks.

    index = WorkspaceIndex(root, IndexLimits())
    index.start()          # returns at once; a low-priority daemon thread walks and parses
    index.update(path)     # on didSave / didChangeWatchedFiles (created or changed)
    index.remove(path)     # on deletion

Requests never wait for indexing: queries answer from what is indexed so far
(`ready` says when the first walk is over). The thread lowers its own CPU
priority (Linux: a per-thread nice value) and sleeps briefly every few files so
that request threads get the GIL. The lock is held only to swap one file's
entries in or out. File text is not kept: chunk and definition text is read
back from disk when a request needs it (a few files per request), which keeps
the index's memory to symbols and term ids.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from acepilot.server.context.chunks import windows
from acepilot.server.context.grammars import language_of
from acepilot.server.context.imports import Import
from acepilot.server.context.resolve import ModuleMap, Paths, add_path, discard_path, get_paths
from acepilot.server.context.retrieval import Bm25Snapshot, ChunkRef, ChunkTerms, Vocabulary
from acepilot.server.context.symbols import Definition, FileSymbols, parse
from acepilot.server.context.table import DefinitionTable
from acepilot.server.context.workspace import IndexLimits, admitted, read_source, walk

log = logging.getLogger(__name__)
NICE = 10  # the indexing thread's niceness increment
REBUILD_DELAY = 0.5  # seconds of quiet after an update before the BM25 matrix is rebuilt


@dataclass(slots=True, kw_only=True)
class FileEntry:
    """What the index holds for one file (no source text)."""

    language: str
    size: int
    definitions: DefinitionTable
    imports: list[Import]
    chunk_lines: npt.NDArray[np.int32]  # (n, 2): first and last line of each chunk
    terms: ChunkTerms


class WorkspaceIndex:
    """Symbols, resolved imports and BM25 chunks of one workspace folder, bounded by `IndexLimits`."""

    def __init__(self, root: str | Path, limits: IndexLimits | None = None) -> None:
        self.root = Path(root).resolve()
        self._root_str = str(self.root)
        self.limits = limits or IndexLimits()
        self.files: dict[str, FileEntry] = {}
        # name -> the file(s) defining it at the top level / as a member (resolve.py's tables)
        self._top: Paths = {}
        self._members: Paths = {}
        self.modules = ModuleMap(self.root.name)
        self.vocab = Vocabulary()
        self.bm25 = Bm25Snapshot([])
        self.generation = 0  # bumped when any file's entry changes (collector cache key)
        self.total_bytes = 0
        self.stats: dict[
            str, float
        ] = {}  # the first walk's wall and CPU seconds (benchmarks, logs)
        self._lock = threading.RLock()
        self._ready = threading.Event()
        self._dirty = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        """Index the workspace in a background daemon thread (returns at once)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="acepilot-index", daemon=True)
            self._thread.start()

    @property
    def ready(self) -> bool:
        """True once the first walk is over and the BM25 matrix is built."""
        return self._ready.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until ready (tests, benchmarks, the CLI); False on timeout."""
        return self._ready.wait(timeout)

    def close(self) -> None:
        """Stop the background thread (the index stays queryable)."""
        self._stop.set()
        self._dirty.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        # Not Linux, or not permitted: the sleeps in index_all still yield.
        with contextlib.suppress(AttributeError, OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), NICE)
        try:
            self.index_all()
        except Exception:  # the editor keeps working without an index
            log.exception("workspace indexing failed")
        self._ready.set()
        while not self._stop.is_set():
            self._dirty.wait()
            if self._stop.is_set():
                return
            time.sleep(REBUILD_DELAY)  # let a burst of saves settle
            self._dirty.clear()
            self.rebuild()

    def index_all(self) -> None:
        """Walk and index every file within the limits, then build the BM25 matrix (runs in the thread)."""
        started, cpu = time.perf_counter(), time.thread_time()
        for count, (rel, path, _size) in enumerate(walk(self.root, self.limits)):
            if self._stop.is_set():
                return
            self._index_file(rel, path)
            if count % self.limits.yield_every == 0:
                time.sleep(self.limits.yield_seconds)
        self.rebuild()
        self.stats = {
            "seconds": time.perf_counter() - started,
            "cpu_seconds": time.thread_time() - cpu,
        }

    def rebuild(self) -> None:
        """Rebuild the BM25 matrix from the kept term ids and swap it in."""
        with self._lock:
            files = [(path, e.chunk_lines, e.terms) for path, e in self.files.items()]
        self.bm25 = Bm25Snapshot(files)
        release_free_memory()

    # --- updates -------------------------------------------------------------------------------

    def relative(self, path: str | Path) -> str | None:
        """A path (absolute, or relative to the root) as the index names it; None outside the root."""
        candidate = Path(path)
        absolute = candidate if candidate.is_absolute() else self.root / candidate
        try:
            return absolute.resolve().relative_to(self.root).as_posix()
        except ValueError:
            return None

    def update(self, path: str | Path) -> bool:
        """Re-index one file (created or changed); False when it is outside the root or not indexable."""
        rel = self.relative(path)
        if rel is None:
            return False
        # The walk's rules (.gitignore, vendored, hidden, binary, generated) hold for updates too.
        indexed = admitted(self.root, rel, self.limits) and self._index_file(rel, self.root / rel)
        if not indexed:
            self.remove(rel)
        self._dirty.set()
        return indexed

    def remove(self, path: str | Path) -> None:
        """Drop one file from the index (deleted, or now ignored)."""
        rel = self.relative(path)
        if rel is None:
            return
        with self._lock:
            self._drop(rel)
        self._dirty.set()

    def _drop(self, rel: str) -> None:
        old = self.files.pop(rel, None)
        if old is None:
            return
        self.total_bytes -= old.size
        for name, parent in zip(old.definitions.names, old.definitions.parents, strict=True):
            discard_path(self._members if parent else self._top, name, rel)
        self.modules.remove(rel)
        self.generation += 1

    def _index_file(self, rel: str, path: Path) -> bool:
        language = language_of(path.name)
        if language is None:
            return False
        text = read_source(path, self.limits)
        if text is None:
            return False
        size = len(text)
        with self._lock:
            known = rel in self.files
            if not known and (
                len(self.files) >= self.limits.max_files
                or self.total_bytes + size > self.limits.max_total_bytes
            ):
                return False
        try:  # outside the lock: the slow part; one odd file must not stop the rest
            symbols = parse(rel, text, language, compact=True)
            parts = list(windows(text))
            chunk_lines = np.array(
                [(w.start_line, w.end_line) for w in parts], dtype=np.int32
            ).reshape(-1, 2)
            terms = ChunkTerms.from_bags([self.vocab.bag(w.text) for w in parts])
        except (RecursionError, ValueError, MemoryError) as error:
            log.warning("not indexed: %s (%s)", rel, type(error).__name__)
            return False
        entry = FileEntry(
            language=language,
            size=size,
            definitions=DefinitionTable.of(symbols.definitions),
            imports=symbols.imports,
            chunk_lines=chunk_lines,
            terms=terms,
        )
        with self._lock:
            self._drop(rel)
            self.files[rel] = entry
            self.total_bytes += size
            for name, parent in zip(
                entry.definitions.names, entry.definitions.parents, strict=True
            ):
                add_path(self._members if parent else self._top, name, rel)
            self.modules.add(rel)
            self.generation += 1
        return True

    # --- queries (called by the collector on request threads) ----------------------------------

    def files_defining(self, name: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """The files that define `name` at the top level, and those that define it as a member."""
        with self._lock:
            return get_paths(self._top, name), get_paths(self._members, name)

    def definitions_named(self, name: str, rel: str | None = None) -> list[Definition]:
        """The definitions of `name` (in file `rel` only, if given; else in every file, by path)."""
        with self._lock:
            if rel is not None:
                entry = self.files.get(rel)
                return entry.definitions.definitions(rel, name) if entry is not None else []
            top, members = get_paths(self._top, name), get_paths(self._members, name)
            paths = sorted(set(top + members))
            return [
                d for path in paths for d in self.files[path].definitions.definitions(path, name)
            ]

    def names(self) -> list[str]:
        """Every defined name (benchmarks)."""
        with self._lock:
            return list(dict.fromkeys([*self._top, *self._members]))

    @property
    def definition_count(self) -> int:
        with self._lock:
            return sum(len(entry.definitions) for entry in self.files.values())

    def symbols_of(self, rel: str) -> FileSymbols | None:
        """A file's definitions and imports as of its last indexing (its last save), None if not indexed.

        The collector uses these for the document being edited instead of parsing it on every
        request: imports and definitions change rarely between saves.
        """
        with self._lock:
            entry = self.files.get(rel)
            if entry is None:
                return None
            return FileSymbols(
                definitions=entry.definitions.definitions(rel), imports=list(entry.imports)
            )

    def definitions_in(self, rel: str, parent: str | None = None) -> list[Definition]:
        """A file's definitions (those inside `parent` only, if given; "": the top level)."""
        with self._lock:
            entry = self.files.get(rel)
            return entry.definitions.definitions(rel, parent=parent) if entry is not None else []

    def resolve_imports(
        self, rel: str, language: str, imports: list[Import]
    ) -> list[tuple[Import, list[str]]]:
        """Each import with the workspace files it refers to (third-party imports resolve to none)."""
        with self._lock:
            return [(imp, self.modules.resolve(rel, language, imp)) for imp in imports]

    def siblings(self, rel: str, language: str) -> list[str]:
        with self._lock:
            return self.modules.siblings(rel, language)

    def search(
        self, terms: list[str], k: int, exclude_path: str = ""
    ) -> list[tuple[ChunkRef, float]]:
        """BM25 top-k chunks for the query terms, excluding one file (the one being edited)."""
        return self.bm25.search(self.vocab.lookup(terms), k, exclude_path)

    def path_of(self, rel: str) -> str:
        """An indexed file's absolute path (a str: cheaper than Path on the request path)."""
        return os.path.join(self._root_str, rel)

    def read_bytes(self, rel: str) -> bytes:
        """An indexed file's bytes, read from disk now (b"" if it is gone or now too big)."""
        try:
            with open(self.path_of(rel), "rb") as handle:
                return handle.read(self.limits.max_file_bytes + 1)[: self.limits.max_file_bytes]
        except OSError:
            return b""

    def read_text(self, rel: str) -> str:
        """An indexed file's text, read from disk now ("" if it is gone or now too big)."""
        return read_source(self.root / rel, self.limits) or ""

    def read_lines(self, rel: str, start: int, end: int) -> str:
        """Lines start..end (inclusive) of an indexed file, read from disk now."""
        return "\n".join(self.read_text(rel).splitlines()[start : end + 1])


def release_free_memory() -> None:
    """Hand freed heap pages back to the OS (glibc's malloc_trim; a no-op elsewhere).

    Indexing allocates and frees a lot (file texts, parse trees, token lists); glibc keeps
    the freed pages in its arenas, so without this the process's RSS stays at the peak.
    """
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
