"""Answers that need no model: typing-ahead and an LRU cache of model outputs.

Typing-ahead: when the user types the characters that the last shown
completion starts with, the rest of that completion is the answer (the model
would mostly say the same, seconds later on a CPU). The text before the
shown position (a window of lines) and the rest of the line must be
unchanged, so an edit elsewhere near the cursor invalidates it.

The LRU cache maps (model, prompt, generation settings) to the model's raw
text: a repeated position (cursor moved back, undo) costs no generation.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass

from acepilot.server.lsp.documents import Document, line_content

CONTEXT_LINES = 30  # lines before the shown position that must be unchanged
CONTEXT_CHARS = 8192  # ... of which at most this many characters (a long line costs no more)
MAX_TYPED_CHARS = 4096


@dataclass(frozen=True)
class Shown:
    """A completion that was shown at (line, column) of a document."""

    line: int
    column: int
    text: str
    context: str  # the document text from CONTEXT_LINES lines above up to the position
    line_suffix: str  # the rest of the line after the position

    @classmethod
    def capture(cls, document: Document, line: int, column: int, text: str = "") -> Shown:
        """The state at a position, taken when a request starts (the text comes later)."""
        return cls(
            line,
            column,
            text,
            context_before(document, line, column),
            line_after(document, line, column),
        )


def context_before(document: Document, line: int, column: int) -> str:
    """The last CONTEXT_CHARS characters of the CONTEXT_LINES lines up to the position."""
    parts = [document.lines[line][max(0, column - CONTEXT_CHARS) : column]]
    size = len(parts[0])
    for index in range(line - 1, max(-1, line - CONTEXT_LINES - 1), -1):
        if size >= CONTEXT_CHARS:
            break
        text = document.lines[index][-(CONTEXT_CHARS - size) :]
        parts.append(text)
        size += len(text)
    return "".join(reversed(parts))


def line_after(document: Document, line: int, column: int) -> str:
    """The rest of the line after `column`, its first CONTEXT_CHARS characters."""
    return line_content(document.lines[line][column : column + CONTEXT_CHARS + 2])[:CONTEXT_CHARS]


class TypingAhead:
    """The last shown completion per document."""

    def __init__(self) -> None:
        self._shown: dict[str, Shown] = {}

    def remember(self, document: Document, line: int, column: int, text: str) -> None:
        self._shown[document.uri] = Shown.capture(document, line, column, text)

    def remember_shown(self, uri: str, shown: Shown) -> None:
        self._shown[uri] = shown

    def forget(self, uri: str) -> None:
        self._shown.pop(uri, None)

    def answer(self, document: Document, line: int, column: int) -> str | None:
        """The rest of the shown completion if the user typed its start, else None."""
        shown = self._shown.get(document.uri)
        if shown is None or (line, column) < (shown.line, shown.column):
            return None
        if shown.line >= document.line_count:
            return None
        if line - shown.line > shown.text.count("\n") + 1:
            return None
        if line == shown.line and column - shown.column > MAX_TYPED_CHARS:
            return None
        typed = document.text_range((shown.line, shown.column), (line, column))
        if len(typed) > MAX_TYPED_CHARS or not shown.text.startswith(typed):
            return None
        if len(typed) >= len(shown.text):
            return None
        if line_after(document, line, column) != shown.line_suffix:
            return None
        if context_before(document, shown.line, shown.column) != shown.context:
            return None
        return shown.text[len(typed) :]


class LruCache:
    """A small least-recently-used map."""

    def __init__(self, size: int = 256) -> None:
        self.size = size
        self._items: OrderedDict[Hashable, str] = OrderedDict()

    def get(self, key: Hashable) -> str | None:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: Hashable, value: str) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self.size:
            self._items.popitem(last=False)

    def clear(self) -> None:
        self._items.clear()

    def __len__(self) -> int:
        return len(self._items)
