"""From the model's raw text to the completion shown as ghost text.

1. Single- or multi-line (`decide_mode`): text after the cursor on its line
   -> complete to the end of the line; the cursor at the end of a line that
   opens a block, or on an empty line -> multi-line; otherwise the rest of
   the line.
2. Multi-line completions end with their block (`cut_block`): when a line's
   indentation drops to the block's level (a closing bracket at that level is
   kept when it closes the block), when the brackets of the completion balance
   out in a brace language, or after `max_lines` lines.
3. Overlap with the suffix: a single line stops where it would close a
   bracket that the text after the cursor closes, and does not re-type the
   start of that text; the last lines of a multi-line completion are dropped
   when the document already has them after the cursor (an auto-inserted "}").
4. Empty or whitespace results, and results that repeat the line(s) just
   before the cursor, are dropped (None).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from acepilot.server.lsp.languages import Language

SINGLE = "single"
MULTI = "multi"
OPEN = "([{"
CLOSE = ")]}"
QUOTES = "\"'`"
TAB_SIZE = 8
MIN_REPEAT_CHARS = 4  # shorter lines ("}", "") repeat legitimately


@dataclass(frozen=True)
class Context:
    """The cursor's surroundings; lines are without their line breaks."""

    language: Language
    line_prefix: str
    line_suffix: str
    before: Sequence[str] = ()  # a few lines before the cursor line, nearest last
    after: Sequence[str] = ()  # a few lines after the cursor line, nearest first
    max_lines: int = 16
    eol: str = "\n"  # the document's line break, written into the completion

    @property
    def mode(self) -> str:
        return decide_mode(self.line_prefix, self.line_suffix, self.language)


def decide_mode(line_prefix: str, line_suffix: str, language: Language) -> str:
    if line_suffix.strip():
        return SINGLE
    stripped = line_prefix.rstrip()
    if not stripped or stripped.endswith(language.openers) or net_brackets(stripped) > 0:
        return MULTI
    return SINGLE


def indent(line: str) -> int:
    expanded = line.expandtabs(TAB_SIZE)
    return len(expanded) - len(expanded.lstrip(" "))


def bracket_depths(text: str) -> Iterator[tuple[int, int]]:
    """(index, depth after it) for each bracket outside string literals (a rough scanner)."""
    depth = 0
    quote = ""
    escaped = False
    for index, char in enumerate(text):
        if quote:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == quote:
                quote = ""
        elif char in QUOTES:
            quote = char
        elif char in OPEN:
            depth += 1
            yield index, depth
        elif char in CLOSE:
            depth -= 1
            yield index, depth


def net_brackets(text: str) -> int:
    """Opening minus closing brackets, outside string literals."""
    depth = 0
    for _, depth in bracket_depths(text):  # noqa: B007 - the last depth is the answer
        pass
    return depth


def cut_at_unopened_close(text: str) -> str:
    """Text up to the first closing bracket that closes something opened before it."""
    for index, depth in bracket_depths(text):
        if depth < 0:
            return text[:index]
    return text


def fit_line_to_suffix(line: str, line_suffix: str) -> str:
    """A single-line completion that leaves the text after the cursor to itself."""
    suffix = line_suffix.strip()
    line = line.rstrip()
    if not suffix:
        return line
    if suffix[0] in CLOSE:
        line = cut_at_unopened_close(line).rstrip()
    # Do not re-type the start of the suffix: "a, b)" before ")" -> "a, b".
    for size in range(min(len(line), len(suffix)), 0, -1):
        if line.endswith(suffix[:size]):
            trimmed = line[:-size]
            if net_brackets(trimmed) <= 0:
                return trimmed.rstrip() if trimmed.strip() else ""
            break
    return line


def cut_block(lines: list[str], context: Context) -> list[str]:
    """The lines of a multi-line completion that belong to the cursor's block."""
    prefix = context.line_prefix
    opener = bool(prefix.strip())  # else: the cursor is on an empty line
    level = indent(prefix) if opener else indent(prefix) - 1  # lines at <= level end it
    depth = max(0, net_brackets(prefix)) if opener else 0
    out = [lines[0]]
    depth += net_brackets(lines[0])
    previous_blank = False
    for line in lines[1:]:
        if len(out) >= context.max_lines:
            break
        if not line.strip():
            out.append("")
            previous_blank = True
            continue
        line_indent = indent(line)
        new_depth = depth + net_brackets(line)
        if line_indent <= level:
            if opener and line.lstrip()[:1] in CLOSE and new_depth <= 0:
                out.append(line)  # the bracket that closes the block
            break
        if not opener:
            if new_depth < 0:
                break  # closes a bracket opened before the cursor
            if level < 0 and previous_blank and len(out) > 1:
                break  # top level: one statement (or definition) at a time
        out.append(line)
        depth = new_depth
        previous_blank = False
        if opener and context.language.braces and depth <= 0 and "}" in line:
            break  # the block's braces balanced out
    while len(out) > 1 and not out[-1].strip():
        out.pop()
    return out


def drop_suffix_lines(lines: list[str], after: Sequence[str]) -> list[str]:
    """Drop the completion's last lines when the document has them right after the cursor."""
    following = [line.strip() for line in after if line.strip()]
    content = [index for index, line in enumerate(lines) if line.strip()]
    for size in range(min(len(content) - 1, len(following)), 0, -1):
        tail = [lines[index].strip() for index in content[-size:]]
        if tail == following[:size]:
            lines = lines[: content[-size]]
            while len(lines) > 1 and not lines[-1].strip():
                lines.pop()
            return lines
    return lines


def cut_repetition(lines: list[str]) -> list[str]:
    """Degenerate output: a line repeated three times in a row is kept once."""
    for index in range(2, len(lines)):
        line = lines[index].strip()
        if (
            len(line) >= MIN_REPEAT_CHARS
            and line == lines[index - 1].strip()
            and line == lines[index - 2].strip()
        ):
            return lines[: index - 1]
    return lines


def repeats_previous(lines: list[str], context: Context) -> bool:
    """The completion only re-types the line(s) just above the cursor."""
    previous = [line.strip() for line in context.before if line.strip()]
    if not previous:
        return False
    first = (context.line_prefix + lines[0]).strip()
    typed = [first] + [line.strip() for line in lines[1:] if line.strip()]
    typed = [line for line in typed if line]
    if not typed or sum(len(line) for line in typed) < MIN_REPEAT_CHARS:
        return False
    return previous[-len(typed) :] == typed if len(typed) <= len(previous) else False


def postprocess(raw: str, context: Context, stop: Sequence[str] = ()) -> str | None:
    """The completion to show, or None when there is nothing worth showing.

    `stop`: the model's FIM stop tokens (acepilot/server/fim.py): the text ends
    at the first one (a backend that did not stop there never shows it).
    """
    for token in stop:
        if token and token in raw:
            raw = raw[: raw.index(token)]
    text = raw.replace("\r\n", "\n").replace("\r", "\n").replace("\0", "")
    lines = text.split("\n")
    if context.mode == SINGLE:
        lines = [fit_line_to_suffix(lines[0], context.line_suffix)]
    else:
        lines = cut_block(lines, context)
        lines = cut_repetition(lines)
        lines = drop_suffix_lines(lines, context.after)
        lines = [line.rstrip() for line in lines]
    if not "".join(lines).strip():
        return None
    if repeats_previous(lines, context):
        return None
    return context.eol.join(lines)
