"""Training documents in the formats serving uses: fill-in-the-middle and repository context.

Serving (acepilot/server/fim.py, the schema in docs/model-format.md) writes a
completion prompt as

    [<repo_name>NAME\\n] [<file_sep>PATH\\nCONTENT]... [<file_sep>PATH\\n] <fim_prefix>P<fim_suffix>S<fim_middle>

(PSM; llama.cpp's /infill layout), or `<fim_prefix><fim_suffix>S<fim_middle>P`
in SPM order (the StarCoder/santacoder variant). A model learns to use a
suffix and neighbouring files only if it was trained on exactly these strings,
so this module writes training documents in that form:

- `fim_document`: the character-level FIM transform (Bavarian et al. 2022),
  PSM or SPM. Character cuts, not token cuts, because a cursor sits between
  characters: the model must learn to continue a prefix that ends inside what
  the tokenizer would make one token. Two kinds of middle: a random span of
  the document (the classic transform), or "the rest of a line and perhaps a
  few more lines" from a random cursor (what an editor asks for most).
- `repo_document`: context files of the same package written before the
  current file, each as `<file_sep>path\\n` + text, after `<repo_name>NAME\\n`.

Everything is a pure function of the text and a seeded `random.Random`, so a
corpus built twice is byte-identical.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

PSM = "psm"
SPM = "spm"


@dataclass(frozen=True)
class FimTokens:
    """The special-token strings (StarCoder2's, which Acepilot's own model uses)."""

    prefix: str = "<fim_prefix>"
    suffix: str = "<fim_suffix>"
    middle: str = "<fim_middle>"
    file_sep: str = "<file_sep>"
    repo_name: str = "<repo_name>"
    eos: str = "<|endoftext|>"

    def special(self) -> list[str]:
        """All of them, EOS first (id 0, as CodeGen's tokenizers have it at a fixed place)."""
        return [self.eos, self.prefix, self.suffix, self.middle, self.file_sep, self.repo_name]

    def render(self, prefix: str, suffix: str, middle: str, order: str) -> str:
        """One FIM example; the middle is followed by EOS, where serving stops."""
        if order == SPM:
            return f"{self.prefix}{self.suffix}{suffix}{self.middle}{prefix}{middle}{self.eos}"
        if order == PSM:
            return f"{self.prefix}{prefix}{self.suffix}{suffix}{self.middle}{middle}{self.eos}"
        raise ValueError(f"unknown FIM order {order!r}")

    def manifest(self, order: str = PSM) -> dict[str, object]:
        """The manifest's `tokenizer.fim` record (/work/notes/FIM_SCHEMA.md)."""
        return {
            "prefix": self.prefix,
            "suffix": self.suffix,
            "middle": self.middle,
            "orders": [PSM, SPM],
            "order": order,
            "stop": [self.eos],
        }

    def repo_manifest(self) -> dict[str, object]:
        return {"repo_name": self.repo_name, "file_sep": self.file_sep}


@dataclass(frozen=True)
class FimSettings:
    rate: float = 0.5  # share of documents transformed
    spm_rate: float = 0.5  # of those, the share in SPM order
    line_rate: float = 0.5  # of those, the share whose middle starts at a cursor in a line
    max_middle_lines: int = 4  # a line middle runs to the end of 1..this many lines


def random_span(text: str, rng: random.Random) -> tuple[int, int]:
    """Two uniform character cuts (the classic FIM split)."""
    a, b = sorted((rng.randint(0, len(text)), rng.randint(0, len(text))))
    return a, b


def line_span(text: str, rng: random.Random, max_lines: int) -> tuple[int, int]:
    """A cursor inside a random non-blank line; the middle runs to the end of that
    line or of one of the next `max_lines - 1` lines (newline excluded, as the
    line-completion evaluation and the editor's ghost text cut it). A cursor at
    the end of its line with one line asked gives an empty middle: the model
    learns to stop when the line is already complete."""
    starts = [0] + [i + 1 for i, char in enumerate(text) if char == "\n"]
    lines = [s for s in starts if s < len(text) and text[s:].split("\n", 1)[0].strip()]
    if not lines:
        return random_span(text, rng)
    start = rng.choice(lines)
    line = text[start:].split("\n", 1)[0]
    indent = len(line) - len(line.lstrip())
    cursor = start + rng.randint(indent, len(line))
    more = rng.randint(1, max_lines) - 1
    end = text.find("\n", cursor)  # the end of the cursor's line (an empty middle at its end)
    for _ in range(more):
        if end < 0:
            break
        end = text.find("\n", end + 1)
    return cursor, end if end >= 0 else len(text)


def fim_document(
    text: str, tokens: FimTokens, settings: FimSettings, rng: random.Random
) -> tuple[str, str | None]:
    """`text` as a training document: (document, order or None when left as is).

    The random draws happen in a fixed sequence whatever the outcome, so one
    document's choice never shifts the next document's.
    """
    transform = rng.random() < settings.rate
    spm = rng.random() < settings.spm_rate
    by_line = rng.random() < settings.line_rate
    if not transform or not text:
        return text + tokens.eos, None
    a, b = line_span(text, rng, settings.max_middle_lines) if by_line else random_span(text, rng)
    order = SPM if spm else PSM
    return tokens.render(text[:a], text[b:], text[a:b], order), order


def repo_header(tokens: FimTokens, repo: str, context: Sequence[tuple[str, str]], path: str) -> str:
    """`<repo_name>repo\\n` + each context file + the current file's separator and path."""
    parts = [f"{tokens.repo_name}{repo}\n"]
    parts.extend(f"{tokens.file_sep}{p}\n{content}" for p, content in context)
    parts.append(f"{tokens.file_sep}{path}\n")
    return "".join(parts)


def chunk_text(text: str, max_chars: int) -> list[str]:
    """Cut a long file at line ends into pieces of at most `max_chars` (a line longer
    than that is cut where it must): each piece fits a training row, so a FIM
    example is never split across rows."""
    if len(text) <= max_chars:
        return [text]
    chunks: list[str] = []
    current = ""
    for line in text.splitlines(keepends=True):
        while len(line) > max_chars:
            if current:
                chunks.append(current)
                current = ""
            chunks.append(line[:max_chars])
            line = line[max_chars:]
        if len(current) + len(line) > max_chars:
            chunks.append(current)
            current = ""
        current += line
    if current:
        chunks.append(current)
    return chunks


def snippet(text: str, max_chars: int, rng: random.Random) -> str:
    """A window of whole lines of a neighbouring file, at most `max_chars` long."""
    if len(text) <= max_chars:
        return text
    start = rng.randint(0, len(text) - max_chars)
    newline = text.find("\n", start)
    start = newline + 1 if 0 <= newline < start + max_chars // 2 else start
    piece = text[start : start + max_chars]
    cut = piece.rfind("\n")
    return piece[: cut + 1] if cut > 0 else piece


__all__ = [
    "PSM",
    "SPM",
    "FimSettings",
    "FimTokens",
    "chunk_text",
    "fim_document",
    "line_span",
    "random_span",
    "repo_header",
    "snippet",
]
