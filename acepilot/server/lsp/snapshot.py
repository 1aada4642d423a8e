"""Stage 1 of the pipeline: a snapshot of the document around the cursor.

The snapshot is a few copied slices (taken on the event loop, microseconds),
so that the later stages, some on worker threads, never read a document that
the next keystroke changes under them. It holds what the prompt needs
(`PromptInput`), what post-processing needs (`Context`) and what typing-ahead
compares later (`Shown`).

Bounded by the prompt budget, not by the document: a line is clipped to
`context_tokens x MAX_CHARS_PER_TOKEN` characters (more would never fit in
the prompt), so a 1 MB line costs what a line of that length costs. A clipped
line before the cursor loses its start, the cursor line keeps its end before
the cursor and its start after it.
"""

from __future__ import annotations

from dataclasses import dataclass

from acepilot.server.lsp.cache import Shown
from acepilot.server.lsp.config import Config
from acepilot.server.lsp.documents import Document, content_length, line_content
from acepilot.server.lsp.languages import Language, language
from acepilot.server.lsp.postprocess import Context
from acepilot.server.lsp.prompt import PromptInput

CONTEXT_LINES = 8  # lines around the cursor given to post-processing
MAX_SUFFIX_LINES = 64  # lines after the cursor offered to a FIM suffix
MAX_CHARS_PER_TOKEN = 16  # a line longer than budget x this never fits: clipped


@dataclass(frozen=True, kw_only=True)
class Snapshot:
    """The cursor's surroundings, copied: the input of every later stage."""

    uri: str
    language: Language
    line: int  # 0-based line of the cursor
    column: int  # code points before the cursor on its line
    edits: int  # the document's edit count when taken (typed meanwhile: edits differ)
    prompt: PromptInput
    context: Context
    shown: Shown  # typing-ahead's view of the position (its text comes at the end)


def take_snapshot(
    document: Document, line: int, column: int, *, path: str, config: Config
) -> Snapshot:
    """Copies of the lines the later stages need (cheap slices; see the module docstring)."""
    limit = config.context_tokens * MAX_CHARS_PER_TOKEN
    raw_line = document.lines[line]
    line_prefix = raw_line[max(0, column - limit) : column]
    line_suffix = line_content(raw_line[column : column + limit + 2])[:limit]
    first = max(0, line - config.context_tokens)  # every line costs at least one token
    before = [clip_tail(text, limit) for text in document.lines[first:line]]
    after = [
        line_content(text[: limit + 2])[:limit]
        for text in document.lines[line + 1 : line + 1 + MAX_SUFFIX_LINES]
    ]
    lang = language(document.language_id)
    return Snapshot(
        uri=document.uri,
        language=lang,
        line=line,
        column=column,
        edits=document.edits,
        prompt=PromptInput(
            path=path,
            language=lang,
            before=before,
            first_line=first,
            line_prefix=line_prefix,
            line_suffix=line_suffix,
            after=after,
        ),
        context=Context(
            language=lang,
            line_prefix=line_prefix,
            line_suffix=line_suffix,
            before=before[-CONTEXT_LINES:],
            after=after[:CONTEXT_LINES],
            max_lines=config.max_lines,
            eol=line_break(document, line),
        ),
        shown=Shown.capture(document, line, column),
    )


def clip_tail(line: str, limit: int) -> str:
    """The last `limit` characters of a line's content (slicing first: no copy of a long line)."""
    return line_content(line[-(limit + 2) :])[-limit:]


def line_break(document: Document, line: int) -> str:
    """The document's line break at `line` (that of the line above for the last line)."""
    for index in (line, line - 1):
        if index >= 0:
            text = document.lines[index]
            if brk := text[content_length(text) :]:
                return brk
    return "\n"
