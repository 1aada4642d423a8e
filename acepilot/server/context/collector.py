"""The token budget split between the context sources, and the per-block cache.

    collector = ContextCollector(index, recent)
    chunks = collector.collect(text, offset, "src/app.py", "python", 1024, count_tokens)

Sources (acepilot/server/context/sources.py), in priority order — the order in
which the budget is offered:

  imported_definition  definitions the file imports (or sees: Go/Java package siblings, a C file's
                       header), those used nearest the cursor first
  near_cursor_symbol   the document's identifiers, nearest the cursor first, resolved through the
                       workspace symbol table
  bm25                 chunks lexically similar to the lines around the cursor
  recent_edit          windows the user edited lately in other files
  recent_view          windows the user looked at lately in other files
  open_tab             windows of other open documents most similar to the lines around the cursor

Each source gets a share of the budget (SHARES, set from the recall benchmark in
docs/context.md); what a source leaves unused flows to the next, and what is still
unused at the end is offered to every source again, in order. Every new file
also pays for its path header. Definitions enter as signatures; what is left
then widens them, in priority order, to signature + docstring + members, then
to their body (signatures first, bodies when the budget allows).

Stability: the choice is computed once per block of BLOCK_LINES lines and cached
until the cursor leaves the block or the index, recent buffer or open tabs
change — typing inside a block returns the same chunks, so the prompt's head
and the engine's KV cache stay reusable. Chunks are returned sorted by
(path, line), never by score, for the same reason.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence

from acepilot.server.context.chunks import KINDS, ContextChunk
from acepilot.server.context.grammars import normalize_language
from acepilot.server.context.index import WorkspaceIndex
from acepilot.server.context.recent import RecentChunks
from acepilot.server.context.sources import Candidate, Request, Sources, ranked_names
from acepilot.server.context.symbols import parse

BLOCK_LINES = 16  # the cursor block: the context is recomputed when the cursor leaves it
QUERY_BEFORE = 24  # lines before the block that make the lexical query
QUERY_AFTER = 8  # lines after it
MAX_BODY_LINES = 60  # a definition widened to its body is cut here
MAX_MISFITS = 16  # candidates a source may propose that do not fit before it is stopped
SHARES: dict[str, float] = {
    "imported_definition": 0.4,
    "near_cursor_symbol": 0.3,
    "bm25": 0.1,
    "recent_edit": 0.1,
    "recent_view": 0.05,
    "open_tab": 0.05,
}

CountTokens = Callable[[str], int]


def header(path: str) -> str:
    """The path header a prompt writes once per context file (charged to the budget)."""
    return f"# {path}\n"


class ContextCollector:
    """Collects cross-file context for one completion request, within a token budget."""

    def __init__(
        self,
        index: WorkspaceIndex | None,
        recent: RecentChunks | None = None,
        sources: Sequence[str] = KINDS,
        shares: dict[str, float] | None = None,
    ) -> None:
        unknown = set(sources) - set(KINDS)
        if unknown:
            raise ValueError(f"unknown context sources: {sorted(unknown)}")
        self.index = index
        self.recent = recent or RecentChunks()
        self.kinds = tuple(k for k in KINDS if k in sources)
        self.shares = shares or SHARES
        self.open_tabs: dict[str, str] = {}
        self.sources = Sources(index, self.recent, self.open_tabs)
        self._tabs_version = 0
        self._cache: tuple[tuple[object, ...], list[ContextChunk]] | None = None
        self._lock = threading.Lock()
        self._compute_lock = threading.Lock()

    # --- editor events ---------------------------------------------------------------------------

    def open(self, path: str, text: str) -> None:
        """A document is open in the editor (or its text changed): an open-tab candidate."""
        self.open_tabs[path] = text
        self._tabs_version += 1

    def close(self, path: str) -> None:
        if self.open_tabs.pop(path, None) is not None:
            self._tabs_version += 1

    def invalidate(self) -> None:
        """Forget the cached choice (the next request recomputes it)."""
        with self._lock:
            self._cache = None

    # --- the request -----------------------------------------------------------------------------

    def collect(
        self,
        document_text: str,
        cursor_offset: int,
        path: str,
        language: str | None,
        budget_tokens: int,
        count_tokens: CountTokens,
    ) -> list[ContextChunk]:
        """Context chunks for a cursor, at most `budget_tokens` in all (with path headers), by (path, line).

        `path` is workspace-relative (as the index names files); `cursor_offset` is a
        character offset into `document_text`.
        """
        if budget_tokens <= 0 or not self.kinds:
            return []
        cursor_offset = max(0, min(cursor_offset, len(document_text)))
        cursor_line = document_text.count("\n", 0, cursor_offset)
        key = (
            path,
            cursor_line // BLOCK_LINES,
            budget_tokens,
            self.index.generation if self.index is not None else -1,
            tuple((c.path, c.start_line) for c in self.recent.entries() if c.path != path),
            self._tabs_version if "open_tab" in self.kinds else 0,
        )
        with self._lock:
            if self._cache is not None and self._cache[0] == key:
                return self._cache[1]
        with self._compute_lock:  # one computation at a time: the sources' file cache is shared
            request = self._request(document_text, cursor_line, path, language)
            chunks = self._allocate(request, budget_tokens, count_tokens)
        with self._lock:
            self._cache = (key, chunks)
        return chunks

    def _request(self, text: str, cursor_line: int, path: str, language: str | None) -> Request:
        lines = text.splitlines()
        block_start = cursor_line // BLOCK_LINES * BLOCK_LINES
        lang = normalize_language(language, path)
        symbols = self.index.symbols_of(path) if self.index is not None else None
        if (
            symbols is None and lang is not None
        ):  # not indexed (unsaved, outside the root): parse it now
            symbols = parse(path, text, lang)
        local = (
            frozenset(d.name for d in symbols.definitions) if symbols is not None else frozenset()
        )
        # Names are ranked from the block start, not the cursor, so that the order holds within a block.
        lo, hi = max(0, block_start - QUERY_BEFORE), block_start + BLOCK_LINES + QUERY_AFTER
        return Request(
            path=path,
            language=lang,
            lines=lines,
            cursor_line=cursor_line,
            block_start=block_start,
            names=ranked_names(lines, block_start + BLOCK_LINES // 2, local),
            query="\n".join(lines[lo:hi]),
            local_names=local,
            imports=symbols.imports if symbols is not None else [],
        )

    # --- allocation ------------------------------------------------------------------------------

    def _allocate(self, request: Request, budget: int, count: CountTokens) -> list[ContextChunk]:
        total_share = sum(self.shares.get(k, 0.0) for k in self.kinds) or 1.0
        chosen: list[tuple[Candidate, int]] = []
        headers: set[str] = set()
        spent = carry = 0
        for kind in self.kinds:
            allowance = int(budget * self.shares.get(kind, 0.0) / total_share) + carry
            used = self._take(kind, request, allowance, budget - spent, chosen, headers, count)
            spent += used
            carry = allowance - used
        # What the shares left unused (nothing edited or viewed yet, no open tabs) goes back to
        # the sources in order before definitions are widened: left to the widening, it cost
        # 3-7 points of identifier recall (bench/context_history.py, docs/context.md).
        for kind in self.kinds:
            if budget - spent < 8:
                break
            spent += self._take(
                kind, request, budget - spent, budget - spent, chosen, headers, count
            )
        left = budget - spent
        for step in ("summary", "body"):
            chosen, left = self._widen(request, chosen, left, count, step)
        result = [
            ContextChunk(
                path=c.path,
                kind=c.kind,
                text=c.text,
                tokens=tokens,
                score=round(c.score, 4),
                start_line=c.start_line,
                end_line=c.end_line,
            )
            for c, tokens in chosen
        ]
        return sorted(result, key=lambda c: (c.path, c.start_line, c.kind))

    def _take(
        self,
        kind: str,
        request: Request,
        allowance: int,
        room: int,
        chosen: list[tuple[Candidate, int]],
        headers: set[str],
        count: CountTokens,
    ) -> int:
        """Add `kind`'s best candidates that fit `allowance` (and `room`, what the whole
        budget has left) to `chosen`, skipping what overlaps a chosen chunk; tokens used."""
        used = misfits = 0
        candidates: Iterator[Candidate] = getattr(self.sources, kind)(request)
        for candidate in candidates:
            if _overlaps(chosen, candidate, candidate.end_line):
                continue
            cost = count(candidate.text)
            extra = count(header(candidate.path)) if candidate.path not in headers else 0
            if cost + extra > min(allowance, room) - used:
                misfits += 1
                if misfits >= MAX_MISFITS or allowance - used < 8:
                    break
                continue
            chosen.append((candidate, cost))
            headers.add(candidate.path)
            used += cost + extra
        return used

    def _widen(
        self,
        request: Request,
        chosen: list[tuple[Candidate, int]],
        left: int,
        count: CountTokens,
        step: str,
    ) -> tuple[list[tuple[Candidate, int]], int]:
        """Widen definitions, in priority order, to their summary or their body while budget is left."""
        out = list(chosen)
        for i, (candidate, tokens) in enumerate(out):
            definition = candidate.definition
            if definition is None or left <= 0:
                continue
            if step == "summary":
                text, end = self.sources.summary(request, definition)
            else:
                end = min(definition.end_line, definition.start_line + MAX_BODY_LINES - 1)
                text = self.sources.lines(request, definition.path, definition.start_line, end)
            if end < candidate.end_line or text == candidate.text:
                continue
            extra = count(text) - tokens
            others = out[:i] + out[i + 1 :]
            if 0 < extra <= left and not _overlaps(others, candidate, end):
                out[i] = (
                    Candidate(
                        candidate.path,
                        candidate.kind,
                        candidate.start_line,
                        end,
                        text,
                        candidate.score,
                        definition,
                    ),
                    tokens + extra,
                )
                left -= extra
        return out, left


def _overlaps(chosen: Sequence[tuple[Candidate, int]], candidate: Candidate, end: int) -> bool:
    """Would `candidate` (up to line `end`) show lines a chosen chunk already shows?"""
    return any(
        other.path == candidate.path
        and other.start_line <= end
        and candidate.start_line <= other.end_line
        for other, _ in chosen
    )
