"""Open documents: text kept as lines, incremental edits, exact LSP positions.

LSP positions are (line, character) where `character` counts code units of
the negotiated position encoding: UTF-16 (the default: an astral-plane
character such as an emoji counts 2), UTF-8 (bytes) or UTF-32 (code points).
Line breaks are "\\n", "\\r\\n" and "\\r" only (not the other Unicode breaks
that `str.splitlines` knows), as the specification says.

A document is a list of lines, each holding its own line break (the last
line has none), so an edit touches only the lines it spans: typing in a
5,000-line file costs microseconds, not a copy of the file. A position past
the end of a line means the end of that line, and a line past the end of the
document means its end (what VS Code does) in requests; an edit whose range
starts or ends past the last line cannot be the client's text and fails. A
position inside a UTF-16 surrogate pair or a UTF-8 sequence rounds down to the
character's start.

A change that cannot be applied (a range past the end or reversed, a version
that does not increase) makes the document *stale*: the server's text is no
longer the client's. Incremental changes to a stale document are ignored; a
full-text change makes it fresh again (the server asks the client for one:
`acepilot/resync`).
Lone surrogates (JSON may carry "\\ud83d" alone) are replaced by U+FFFD when
text arrives: no tokenizer can encode them (one bad document used to break the
completions of every other through the snippets), and U+FFFD has the same
width in every position encoding (1 UTF-16 unit, 3 UTF-8 bytes as a
surrogate would be written, 1 code point), so positions stay the client's.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

UTF8 = "utf-8"
UTF16 = "utf-16"
UTF32 = "utf-32"
ENCODINGS = (UTF16, UTF8, UTF32)

LINE_BREAK = re.compile(r"\r\n|\r|\n")
BREAKS = frozenset("\r\n")
SURROGATE = re.compile("[\ud800-\udfff]")
MAX_DOCUMENT_CHARS = 64 << 20  # refuse to hold more: far beyond any source file
MAX_DOCUMENTS = 20_000  # open at once (an editor with this many tabs is not a person)
MAX_TOTAL_CHARS = 512 << 20  # all open documents together, checked when one opens


class DocumentError(ValueError):
    """An edit or a lookup that the document cannot honour (bad range, unknown URI)."""


def split_lines(text: str) -> list[str]:
    """Lines with their breaks kept; always at least one (possibly empty) last line."""
    lines: list[str] = []
    start = 0
    for match in LINE_BREAK.finditer(text):
        lines.append(text[start : match.end()])
        start = match.end()
    lines.append(text[start:])
    return lines


def repair(text: str) -> str:
    """`text` with lone surrogates replaced by U+FFFD (see the module docstring)."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return SURROGATE.sub("\ufffd", text)
    return text


def content_length(line: str) -> int:
    """len(line_content(line)) without copying the line."""
    if line.endswith("\r\n"):
        return len(line) - 2
    return len(line) - 1 if line.endswith(("\n", "\r")) else len(line)


def line_content(line: str) -> str:
    """A line without its line break."""
    if line.endswith("\r\n"):
        return line[:-2]
    if line.endswith(("\n", "\r")):
        return line[:-1]
    return line


def units_to_column(text: str, units: int, encoding: str) -> int:
    """Code points of `text` covered by `units` code units (clamped, rounded down)."""
    if units <= 0:
        return 0
    if encoding == UTF32 or text.isascii():
        return min(units, len(text))
    if encoding == UTF16:
        data = text.encode("utf-16-le", "surrogatepass")
        cut = min(2 * units, len(data))
        if 2 <= cut < len(data):
            before = int.from_bytes(data[cut - 2 : cut], "little")
            after = int.from_bytes(data[cut : cut + 2], "little")
            if 0xD800 <= before <= 0xDBFF and 0xDC00 <= after <= 0xDFFF:
                cut -= 2  # inside a surrogate pair
        return len(data[:cut].decode("utf-16-le", "surrogatepass"))
    if encoding == UTF8:
        data = text.encode("utf-8", "surrogatepass")
        cut = min(units, len(data))
        while 0 < cut < len(data) and data[cut] & 0xC0 == 0x80:
            cut -= 1  # inside a multi-byte sequence
        return len(data[:cut].decode("utf-8", "surrogatepass"))
    raise DocumentError(f"unknown position encoding {encoding!r}")


def column_to_units(text: str, column: int, encoding: str) -> int:
    """Code units of `encoding` in the first `column` code points of `text`."""
    column = max(0, min(column, len(text)))
    if encoding == UTF32 or text.isascii():
        return column
    if encoding == UTF16:
        return len(text[:column].encode("utf-16-le", "surrogatepass")) // 2
    if encoding == UTF8:
        return len(text[:column].encode("utf-8", "surrogatepass"))
    raise DocumentError(f"unknown position encoding {encoding!r}")


def units_length(text: str, encoding: str) -> int:
    return column_to_units(text, len(text), encoding)


@dataclass
class Document:
    """One open document: its lines, language and version (see the module docstring)."""

    uri: str
    language_id: str
    version: int
    lines: list[str]
    encoding: str = UTF16
    chars: int = 0
    edits: int = 0  # edits applied since opening (typing-ahead checks it)
    stale: bool = False  # an edit failed: the text may differ from the client's
    _text: str | None = field(default=None, repr=False)

    @classmethod
    def open(
        cls, uri: str, language_id: str, version: int, text: str, encoding: str = UTF16
    ) -> Document:
        if encoding not in ENCODINGS:
            raise DocumentError(f"unknown position encoding {encoding!r}")
        if len(text) > MAX_DOCUMENT_CHARS:
            raise DocumentError(f"document too large ({len(text)} characters)")
        text = repair(text)
        return cls(uri, language_id, version, split_lines(text), encoding, len(text))

    @property
    def text(self) -> str:
        if self._text is None:
            self._text = "".join(self.lines)
        return self._text

    @property
    def line_count(self) -> int:
        return len(self.lines)

    def line(self, index: int) -> str:
        """Line `index` without its break ('' past the end)."""
        if 0 <= index < len(self.lines):
            return line_content(self.lines[index])
        return ""

    def clamp(self, line: int, character: int) -> tuple[int, int]:
        """An LSP position -> (line, code-point column), clamped into the document."""
        if line < 0 or character < 0:
            raise DocumentError(f"negative position ({line}, {character})")
        if line >= len(self.lines):
            last = len(self.lines) - 1
            return last, len(line_content(self.lines[last]))
        return line, units_to_column(line_content(self.lines[line]), character, self.encoding)

    def to_units(self, line: int, column: int) -> int:
        """A code-point column on `line` -> the client's `character`."""
        return column_to_units(self.line(line), column, self.encoding)

    def offset(self, line: int, column: int) -> int:
        """Code-point offset in the whole text (O(line); tests and small documents)."""
        return sum(len(text) for text in self.lines[:line]) + column

    def apply(self, text: str, start: tuple[int, int] | None, end: tuple[int, int] | None) -> None:
        """Replace the LSP range [start, end) (None: the whole document) by `text`."""
        text = repair(text)
        if start is None or end is None:
            if len(text) > MAX_DOCUMENT_CHARS:
                raise DocumentError(f"document too large ({len(text)} characters)")
            self.lines = split_lines(text)
            self.chars = len(text)
            self._changed()
            return
        start_line, start_col = self.clamp(*self._inside(start))
        end_line, end_col = self.clamp(*self._inside(end))
        if (end_line, end_col) < (start_line, start_col):
            raise DocumentError("range end is before its start")
        removed = (
            sum(len(line) for line in self.lines[start_line : end_line + 1])
            - start_col
            - (len(self.lines[end_line]) - end_col)
        )
        if self.chars - removed + len(text) > MAX_DOCUMENT_CHARS:
            raise DocumentError("document too large")
        line = self.lines[start_line]
        joins = start_col == 0 and start_line > 0 and self.lines[start_line - 1].endswith("\r")
        if (
            start_line == end_line
            and end_col <= content_length(line)
            and not joins
            and not BREAKS & set(text)
        ):
            # Inside one line, no break typed or joined: splice it (no re-split of a long line).
            self.lines[start_line] = line[:start_col] + text + line[end_col:]
            self.chars += len(text) - removed
            self._changed()
            return
        # Re-split from one line before to one line after the edit: an edit can join
        # a "\r" and a "\n" into one "\r\n" break (or split one), across line ends.
        first = max(0, start_line - 1)
        last = min(len(self.lines) - 1, end_line + 1)
        head = "".join(self.lines[first:start_line]) + self.lines[start_line][:start_col]
        tail = self.lines[end_line][end_col:] + "".join(self.lines[end_line + 1 : last + 1])
        replacement = split_lines(head + text + tail)
        if last < len(self.lines) - 1:
            # The region's last line is untouched and ends with a break, so the split
            # ends with an empty piece that is not a line (the next line follows).
            replacement.pop()
        self.lines[first : last + 1] = replacement
        self.chars += len(text) - removed
        self._changed()

    def _inside(self, position: tuple[int, int]) -> tuple[int, int]:
        """An edit's position: past the last line only as (line count, 0), the very end."""
        line, character = position
        if line < len(self.lines):
            return position
        if line == len(self.lines) and character == 0:
            return len(self.lines) - 1, 1 << 31  # clamped to the end of the last line
        raise DocumentError(f"edit range past the end of the document (line {line})")

    def _changed(self) -> None:
        self._text = None
        self.edits += 1

    def text_range(self, start: tuple[int, int], end: tuple[int, int]) -> str:
        """Text between two (line, code-point column) positions."""
        (start_line, start_col), (end_line, end_col) = start, end
        if (end_line, end_col) <= (start_line, start_col):
            return ""
        if start_line == end_line:
            return self.lines[start_line][start_col:end_col]
        return (
            self.lines[start_line][start_col:]
            + "".join(self.lines[start_line + 1 : end_line])
            + self.lines[end_line][:end_col]
        )

    def end(self) -> tuple[int, int]:
        last = len(self.lines) - 1
        return last, len(line_content(self.lines[last]))


@dataclass(frozen=True)
class Change:
    """One content change: `range` None means the whole text (full sync)."""

    text: str
    start: tuple[int, int] | None = None
    end: tuple[int, int] | None = None


class DocumentStore:
    """The open documents by URI, with the negotiated position encoding."""

    def __init__(self, encoding: str = UTF16) -> None:
        self.encoding = encoding
        self._documents: dict[str, Document] = {}
        self._chars = 0  # all open documents' characters (kept up to date by open/change/close)

    def __len__(self) -> int:
        return len(self._documents)

    def __iter__(self) -> Iterator[Document]:
        return iter(list(self._documents.values()))

    def __contains__(self, uri: object) -> bool:
        return uri in self._documents

    def open(self, uri: str, language_id: str, version: int, text: str) -> Document:
        """Open (or reopen) a document; DocumentError past MAX_DOCUMENTS or MAX_TOTAL_CHARS."""
        old = self._documents.get(uri)
        others = len(self._documents) - (old is not None)
        others_chars = self._chars - (old.chars if old is not None else 0)
        if others >= MAX_DOCUMENTS:
            raise DocumentError(f"too many open documents (the limit is {MAX_DOCUMENTS})")
        if others_chars + len(text) > MAX_TOTAL_CHARS:
            raise DocumentError("the open documents are too large together")
        document = Document.open(uri, language_id, version, text, self.encoding)
        self._documents[uri] = document
        self._chars = others_chars + document.chars
        return document

    def get(self, uri: str) -> Document:
        document = self._documents.get(uri)
        if document is None:
            raise DocumentError("unknown document (not opened with didOpen)")
        return document

    def find(self, uri: str) -> Document | None:
        return self._documents.get(uri)

    def change(self, uri: str, version: int | None, changes: Iterable[Change]) -> Document:
        """Apply changes in order, or raise DocumentError and mark the document stale.

        A failing change leaves the earlier ones applied (the document is stale
        then anyway). While stale, only the changes from the last full-text one
        on are applied, and they make the document fresh; without one the
        changes are dropped.
        """
        document = self.get(uri)
        pending = list(changes)
        if document.stale:
            full = [index for index, change in enumerate(pending) if change.start is None]
            if not full:
                if version is not None:
                    document.version = max(document.version, version)
                return document
            pending = pending[full[-1] :]
            document.stale = False
        elif (
            version is not None
            and version <= document.version
            and not any(change.start is None for change in pending)  # a full text is safe
        ):
            document.stale = True
            raise DocumentError(
                f"version {version} does not follow {document.version} (a change was lost or reordered)"
            )
        before = document.chars
        try:
            for change in pending:
                document.apply(change.text, change.start, change.end)
        except DocumentError:
            document.stale = True
            raise
        finally:
            self._chars += document.chars - before
        if version is not None:
            document.version = version
        return document

    def close(self, uri: str) -> None:
        document = self._documents.pop(uri, None)
        if document is not None:
            self._chars -= document.chars
