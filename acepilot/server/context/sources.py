"""The six context sources: each turns one request into candidate chunks, best first.

Sources are generators: the allocator stops pulling when its share of the budget
is spent, so a source never reads more files than the budget can hold.
Definitions are proposed at their narrowest (the signature lines); the
allocator widens them later (docstring and member signatures, then the body)
with what the budget has left.
"""

from __future__ import annotations

import heapq
import keyword
import os
import posixpath
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field

from acepilot.server.context.chunks import FileLines, identifiers, jaccard, sub_words, windows
from acepilot.server.context.grammars import language_of
from acepilot.server.context.imports import Import
from acepilot.server.context.index import WorkspaceIndex
from acepilot.server.context.recent import RecentChunks
from acepilot.server.context.symbols import MAX_SIGNATURE, Definition

# Languages whose files help each other's prompts (the rest: only the same language).
FAMILIES = {"typescript": "javascript", "tsx": "javascript", "cpp": "c"}


def family(language: str | None) -> str | None:
    return FAMILIES.get(language, language) if language is not None else None


MAX_PER_NAME = 2  # definitions kept per ambiguous name (near-cursor source)
MAX_MEMBERS = 24  # member signatures in a class summary
BM25_K = 16
FILE_CACHE = 256  # files kept in memory between requests (bytes + line starts: ~4 MB)
EMPTY = FileLines(b"")
OPEN_TAB_WINDOW = 12
OPEN_TAB_MIN_SIMILARITY = 0.1
COMMON_WORDS = frozenset(keyword.kwlist) | frozenset(
    {"self", "cls", "this", "true", "false", "null", "nil", "None", "True", "False", "func", "var",
     "const", "let", "new", "int", "str", "err", "string", "bool", "void", "fn", "pub", "impl", "struct"}
)  # fmt: skip


@dataclass(slots=True)
class Candidate:
    """A chunk a source proposes; a definition also carries what it may widen to."""

    path: str
    kind: str
    start_line: int
    end_line: int
    text: str
    score: float
    definition: Definition | None = None


@dataclass(slots=True, kw_only=True)
class Request:
    """One cache miss's view of the document: what the sources read."""

    path: str
    language: str | None
    lines: list[str]
    cursor_line: int
    block_start: int
    names: list[str]  # identifiers of the document, nearest the cursor first, deduplicated
    query: str  # the lines around the cursor block (BM25, recent and open-tab similarity)
    local_names: frozenset[str]  # defined in the current file: already in the prompt
    imports: list[Import]
    file_cache: dict[str, FileLines] = field(default_factory=dict)


def ranked_names(lines: list[str], cursor_line: int, skip: frozenset[str]) -> list[str]:
    """The document's identifiers ordered by the distance of their nearest use to the cursor."""
    nearest: dict[str, int] = {}
    for number, line in enumerate(lines):
        distance = abs(number - cursor_line)
        for word in identifiers(line):
            if distance < nearest.get(word, 1 << 30) and len(word) > 1 and word not in COMMON_WORDS:
                nearest[word] = distance
    return sorted((w for w in nearest if w not in skip), key=lambda w: (nearest[w], w))


class Sources:
    """The sources over one index, recent buffer and set of open tabs."""

    def __init__(
        self, index: WorkspaceIndex | None, recent: RecentChunks, open_tabs: dict[str, str]
    ) -> None:
        self.index = index
        self.recent = recent
        self.open_tabs = open_tabs
        self._files: OrderedDict[str, tuple[tuple[int, int], FileLines]] = OrderedDict()  # LRU

    def lines(self, request: Request, rel: str, start: int, end: int) -> str:
        """Lines of an indexed file (kept across requests while the file's mtime and size hold)."""
        cached = request.file_cache.get(rel)
        if cached is None:
            cached = request.file_cache[rel] = self._file_lines(rel)
        return cached.text(start, end)

    def _file_lines(self, rel: str) -> FileLines:
        if self.index is None:
            return EMPTY
        try:
            stat = os.stat(self.index.path_of(rel))
        except OSError:
            return EMPTY
        key = (stat.st_mtime_ns, stat.st_size)
        found = self._files.get(rel)
        if found is not None and found[0] == key:
            self._files.move_to_end(rel)
            return found[1]
        lines = FileLines(self.index.read_bytes(rel))
        self._files[rel] = (key, lines)
        while len(self._files) > FILE_CACHE:
            self._files.popitem(last=False)
        return lines

    def signature(
        self, request: Request, definition: Definition, kind: str, score: float
    ) -> Candidate | None:
        end = max(definition.start_line, definition.signature_end_line)
        text = self.lines(request, definition.path, definition.start_line, end)
        if not text:
            return None
        return Candidate(definition.path, kind, definition.start_line, end, text, score, definition)

    def summary(self, request: Request, definition: Definition) -> tuple[str, int]:
        """Signature + docstring, and for a class or type its members' signatures; (text, last line)."""
        end = max(definition.start_line, definition.header_end_line, definition.signature_end_line)
        text = self.lines(request, definition.path, definition.start_line, end)
        if definition.kind in ("class", "type") and self.index is not None:
            indent = " " * 4
            members = [
                indent + (d.signature or self._one_line(request, d))
                for d in self.index.definitions_in(definition.path, parent=definition.name)
                if definition.start_line < d.start_line <= definition.end_line
            ]
            if members:
                text = "\n".join([text, *members[:MAX_MEMBERS]])
                end = definition.end_line
        return text, end

    def _one_line(self, request: Request, definition: Definition) -> str:
        """A definition's signature read from its file, whitespace collapsed (the index keeps none)."""
        end = max(definition.start_line, definition.signature_end_line)
        text = " ".join(self.lines(request, definition.path, definition.start_line, end).split())
        return text[:MAX_SIGNATURE].rstrip(" {:")

    # --- imported definitions ------------------------------------------------------------------

    def imported_definition(self, request: Request) -> Iterator[Candidate]:
        """Definitions of the files this one imports (or sees), by the distance of their use."""
        if self.index is None or request.language is None:
            return
        named: dict[str, set[str]] = {}  # file -> names imported from it; empty = whole module
        for imp, files in self.index.resolve_imports(
            request.path, request.language, request.imports
        ):
            for target in files:
                named.setdefault(target, set()).update(n for n in imp.names if n != "*")
        for target in self.index.siblings(request.path, request.language):
            named.setdefault(target, set())
        rank = {name: i for i, name in enumerate(request.names)}
        scored: list[tuple[int, str, int, Definition]] = []
        for target, names in named.items():
            for definition in self.index.definitions_in(target, parent=""):
                near = rank.get(definition.name)
                if near is None and definition.name not in names:
                    continue  # neither used in this file nor imported by name
                order = near if near is not None else len(rank)
                scored.append((order, definition.path, definition.start_line, definition))
        scored.sort(key=lambda item: item[:3])
        for order, _, _, definition in scored:
            candidate = self.signature(
                request, definition, "imported_definition", 1.0 / (1 + order)
            )
            if candidate is not None:
                yield candidate

    # --- symbols near the cursor ---------------------------------------------------------------

    def near_cursor_symbol(self, request: Request) -> Iterator[Candidate]:
        """Names used around the cursor, resolved through the workspace symbol table.

        Per name, at most MAX_PER_NAME definitions: top-level ones first, then members;
        among them, those of the nearest files (directory steps), then by path and line.
        """
        if self.index is None:
            return
        here = posixpath.dirname(request.path)
        distances: dict[str, int] = {}  # per file: a common name is defined in thousands

        def nearness(path: str) -> tuple[int, str]:
            distance = distances.get(path)
            if distance is None:
                distance = distances[path] = _distance(here, path)
            return distance, path

        for rank, name in enumerate(request.names):
            found: list[Definition] = []
            for member, files in enumerate(self.index.files_defining(name)):
                others = [path for path in files if path != request.path]
                for path in heapq.nsmallest(MAX_PER_NAME, others, key=nearness):
                    found += [
                        d
                        for d in self.index.definitions_named(name, path)
                        if bool(d.parent) == bool(member)
                    ]
                    if len(found) >= MAX_PER_NAME:
                        break
                if len(found) >= MAX_PER_NAME:
                    break
            for definition in found[:MAX_PER_NAME]:
                candidate = self.signature(
                    request, definition, "near_cursor_symbol", 1.0 / (1 + rank)
                )
                if candidate is not None:
                    yield candidate

    # --- lexical retrieval ---------------------------------------------------------------------

    def bm25(self, request: Request) -> Iterator[Candidate]:
        if self.index is None:
            return
        for ref, score in self.index.search(
            sub_words(request.query), BM25_K, exclude_path=request.path
        ):
            text = self.lines(request, ref.path, ref.start_line, ref.end_line)
            if text:
                yield Candidate(ref.path, "bm25", ref.start_line, ref.end_line, text, score)

    # --- the editor's history ------------------------------------------------------------------

    def recent_edit(self, request: Request) -> Iterator[Candidate]:
        return self._recent(request, "recent_edit")

    def recent_view(self, request: Request) -> Iterator[Candidate]:
        return self._recent(request, "recent_view")

    def _recent(self, request: Request, kind: str) -> Iterator[Candidate]:
        words = frozenset(identifiers(request.query))
        wanted = family(request.language)
        for chunk in self.recent.entries():
            # Another language's window is noise in this prompt (a JS edit in a Python prompt).
            if family(language_of(chunk.path)) != wanted:
                continue
            if chunk.kind == kind and chunk.path != request.path:
                yield Candidate(
                    chunk.path,
                    kind,
                    chunk.start_line,
                    chunk.end_line,
                    chunk.text,
                    jaccard(words, chunk.words),
                )

    def open_tab(self, request: Request) -> Iterator[Candidate]:
        """Windows of the other open documents most similar to the lines around the cursor."""
        words = frozenset(identifiers(request.query))
        scored: list[Candidate] = []
        for tab_path, tab_text in sorted(self.open_tabs.items()):
            if tab_path == request.path:
                continue
            for window in windows(tab_text, OPEN_TAB_WINDOW):
                similarity = jaccard(words, frozenset(identifiers(window.text)))
                if similarity >= OPEN_TAB_MIN_SIMILARITY:
                    scored.append(
                        Candidate(
                            tab_path,
                            "open_tab",
                            window.start_line,
                            window.end_line,
                            window.text,
                            similarity,
                        )
                    )
        scored.sort(key=lambda c: (-c.score, c.path, c.start_line))
        yield from scored


def _distance(here: str, path: str) -> int:
    """Directory steps between the current file's folder and another file's."""
    a = here.split("/") if here else []
    b = posixpath.dirname(path).split("/") if "/" in path else []
    common = 0
    while common < min(len(a), len(b)) and a[common] == b[common]:
        common += 1
    return len(a) + len(b) - 2 * common
