"""Stage 6 of the pipeline: a Completion as the LSP items the editor shows.

- `textDocument/inlineCompletion`: one item inserted at the cursor (an empty
  range), carrying an opaque completion id in its `command`: the client runs
  it on accept and reports `accepted` for that id (`acepilot/telemetry`).
- `textDocument/completion` (editors without inline completion): one item that
  replaces the word before the cursor, so that editors filter it by that word.
"""

from __future__ import annotations

import re

from lsprotocol import types

from acepilot.server import protocol
from acepilot.server.lsp.pipeline import Completion
from acepilot.server.lsp.stats import Issued, utf16_length

WORD_BEFORE = re.compile(r"[A-Za-z0-9_$]*$")
MAX_LABEL = 80


def inline_items(completion: Completion | None, issued: Issued) -> types.InlineCompletionList:
    if completion is None:
        return types.InlineCompletionList(items=[])
    document = completion.document
    at = types.Position(completion.line, document.to_units(completion.line, completion.column))
    completion_id = issued.new(document.language_id, utf16_length(completion.text))
    command = types.Command(
        title="Acepilot: accepted",
        command=protocol.ACCEPTED_COMMAND,
        arguments=[{"id": completion_id, "languageId": document.language_id}],
    )
    item = types.InlineCompletionItem(
        insert_text=completion.text, range=types.Range(at, at), command=command
    )
    return types.InlineCompletionList(items=[item])


def completion_items(completion: Completion | None) -> types.CompletionList:
    if completion is None:
        return types.CompletionList(is_incomplete=True, items=[])
    document, line, column, text = (
        completion.document,
        completion.line,
        completion.column,
        completion.text,
    )
    before = document.lines[line][max(0, column - MAX_LABEL) : column]
    word = WORD_BEFORE.search(before)
    typed = word.group(0) if word else ""
    start = types.Position(line, document.to_units(line, column - len(typed)))
    end = types.Position(line, document.to_units(line, column))
    first = text.splitlines()[0] if text.splitlines() else text
    label = (typed + first)[:MAX_LABEL] or text.strip()[:MAX_LABEL]
    item = types.CompletionItem(
        label=label,
        kind=types.CompletionItemKind.Text,
        detail="Acepilot",
        filter_text=typed + text,
        text_edit=types.TextEdit(types.Range(start, end), typed + text),
        insert_text_format=types.InsertTextFormat.PlainText,
    )
    return types.CompletionList(is_incomplete=True, items=[item])
