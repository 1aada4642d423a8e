"""What the context sources hand to the prompt: `ContextChunk`, and line windows of a file.

A chunk names its file and line range so that the prompt can write a path header
(or the model's repository-level `file_sep` format) and so that a benchmark can
check which definition it carries. Chunks are frozen: the collector caches them
between keystrokes and the prompt stage must not be able to change a cached one.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

KINDS = (
    "imported_definition",
    "near_cursor_symbol",
    "bm25",
    "recent_edit",
    "recent_view",
    "open_tab",
)
WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
PARTS = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")
CHUNK_LINES = 24  # lines per retrieval chunk (Tabby-sized: a few hundred tokens at most)
MAX_LINE_CHARS = 240  # longer lines (minified, data) are cut in chunk text


@dataclass(frozen=True, kw_only=True)
class ContextChunk:
    """One piece of cross-file context: its file (workspace-relative), source kind and text.

    `tokens` is the count under the caller's tokenizer; `score` is the source's own
    relevance (comparable within one kind only). Lines are 0-based and inclusive.
    """

    path: str
    kind: str
    text: str
    tokens: int
    score: float
    start_line: int = 0
    end_line: int = 0


@dataclass(frozen=True, kw_only=True)
class LineWindow:
    """A window of a file's lines: the unit BM25 indexes and recent/open-tab sources compare."""

    start_line: int
    end_line: int
    text: str


class FileLines:
    """A file's bytes and where each line starts: lines are cut out on demand.

    Lines end at "\n" only, as tree-sitter counts rows (a form feed or a lone "\r" is
    no line break here), so definition and chunk line numbers agree. No list of one
    string per line is built: a request touches a few lines of each of a few dozen files.
    """

    __slots__ = ("data", "starts")

    def __init__(self, data: bytes) -> None:
        self.data = data
        breaks = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == 10)
        self.starts = np.concatenate(([0], breaks + 1))  # line i starts at byte starts[i]

    def text(self, start: int, end: int) -> str:
        """Lines start..end (0-based, inclusive) without their final line break ("" if none)."""
        count = len(self.starts)
        if start < 0 or start >= count or end < start:
            return ""
        low = int(self.starts[start])
        high = int(self.starts[end + 1]) - 1 if end + 1 < count else len(self.data)
        text = self.data[low:high].decode("utf-8", errors="replace")
        return text.replace("\r\n", "\n").removesuffix("\n").removesuffix("\r")


def windows(text: str, size: int = CHUNK_LINES) -> Iterator[LineWindow]:
    """Cut text into consecutive windows of `size` lines (no overlap, so the index stays small).

    Blank-only windows are skipped; over-long lines are cut to MAX_LINE_CHARS. Lines end
    at "\n" (see FileLines).
    """
    lines = [line.removesuffix("\r") for line in text.split("\n")]
    for start in range(0, len(lines), size):
        part = [line[:MAX_LINE_CHARS] for line in lines[start : start + size]]
        if any(line.strip() for line in part):
            yield LineWindow(start_line=start, end_line=start + len(part) - 1, text="\n".join(part))


def identifiers(text: str) -> list[str]:
    """Identifier-like words of a text, in order (the tokens of lexical retrieval)."""
    return WORD.findall(text)


def sub_words(text: str) -> list[str]:
    """BM25 terms: identifiers plus their camelCase/snake_case parts, lower-cased.

    Splitting lets `get_user_name` match a query that says `userName`.
    """
    terms: list[str] = []
    for word in WORD.findall(text):
        terms.extend(word_terms(word))
    return terms


@functools.lru_cache(maxsize=4096)
def word_terms(word: str) -> tuple[str, ...]:
    """One identifier's terms (cached: identifiers repeat a lot, and this is indexing's hot loop)."""
    parts = [p.lower() for p in PARTS.findall(word)]
    return (word.lower(), *(p for p in parts if len(p) > 1)) if len(parts) > 1 else (word.lower(),)


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    """Similarity of two identifier sets (the open-tabs and recent-chunk measure)."""
    if not a or not b:
        return 0.0
    return len(a & b) / len(a | b)
