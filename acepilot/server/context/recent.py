"""Recently edited and viewed chunks: a small ring buffer, deduplicated by similarity (llama.vim's idea).

The editor reports where the user typed (didChange) and what they looked at
(didOpen, scrolled-to ranges); the window of lines around that place is kept,
newest first. A window too similar (Jaccard of identifier sets) to one already
kept replaces it, so ten edits in one function hold one slot, not ten.
Windows are aligned to ALIGN lines so that small cursor moves give the same one.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass

from acepilot.server.context.chunks import MAX_LINE_CHARS, identifiers, jaccard

ALIGN = 8


@dataclass(frozen=True, slots=True, kw_only=True)
class RecentChunk:
    """One remembered window: file, kind ("recent_edit" or "recent_view"), lines and their words."""

    path: str
    kind: str
    start_line: int
    end_line: int
    text: str
    words: frozenset[str]


class RecentChunks:
    """Bounded, thread-safe ring buffer of recent windows (oldest dropped first)."""

    def __init__(self, capacity: int = 16, window_lines: int = 24, similarity: float = 0.5) -> None:
        if capacity < 1 or window_lines < 1:
            raise ValueError("capacity and window_lines must be positive")
        self.window_lines = window_lines
        self.similarity = similarity
        self._items: deque[RecentChunk] = deque(maxlen=capacity)
        self._lock = threading.Lock()

    def note(self, path: str, text: str, line: int, kind: str = "recent_edit") -> None:
        """Remember the window of `text` around `line` in `path` (workspace-relative)."""
        if kind not in ("recent_edit", "recent_view"):
            raise ValueError(f"unknown recent kind {kind!r}")
        lines = text.splitlines()
        start = max(0, (line - self.window_lines // 2) // ALIGN * ALIGN)
        part = [t[:MAX_LINE_CHARS] for t in lines[start : start + self.window_lines]]
        if not any(t.strip() for t in part):
            return
        chunk = RecentChunk(
            path=path,
            kind=kind,
            start_line=start,
            end_line=start + len(part) - 1,
            text="\n".join(part),
            words=frozenset(identifiers("\n".join(part))),
        )
        with self._lock:
            kept = [
                c
                for c in self._items
                if not (
                    (c.path == path and c.start_line == start)
                    or jaccard(c.words, chunk.words) >= self.similarity
                )
            ]
            self._items.clear()
            self._items.extend(kept)
            self._items.appendleft(chunk)  # a full deque drops its oldest item

    def forget(self, path: str) -> None:
        """Drop a file's windows (closed and deleted, or renamed)."""
        with self._lock:
            kept = [c for c in self._items if c.path != path]
            self._items.clear()
            self._items.extend(kept)

    def entries(self) -> list[RecentChunk]:
        """The kept windows, newest first."""
        with self._lock:
            return list(self._items)
