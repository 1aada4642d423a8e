"""Held-out cursor positions for line completion, picked deterministically from a seed.

A position is on a line with at least `MIN_LINE_CHARS` non-blank characters;
the cursor is placed uniformly among the offsets between the end of its
indentation and its last character that are not inside a word (see
`cursor_positions`), so the target (the rest of the line) is never empty and
ranges from "finish this call" to "write the whole statement". Each task
carries the text before the cursor (bounded), the rest of the line, and,
for fill-in-the-middle predictors, the text after the line. Languages come
from file extensions, domains from the first folder under the evaluated root
(e.g. a repository or package).
"""

from __future__ import annotations

import os
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

MIN_LINE_CHARS = 4
SKIP_DIRS = frozenset({".git", "__pycache__", "node_modules", ".venv", "venv", ".tox", "dist"})
MAX_FILE_BYTES = 1_000_000


@dataclass(frozen=True)
class LineTask:
    """One cursor position: the text before it and the rest of its line."""

    path: str  # relative to the evaluated root
    language: str
    domain: str
    line: int  # 1-based
    column: int  # 1-based cursor column
    prefix: str
    target: str
    suffix: str = ""  # the text after the line (from its newline on), for FIM predictors


def language_of(path: str) -> str | None:
    from acepilot.training.corpus.filters import language_of as corpus_language

    return corpus_language(path)


def collect_files(paths: Sequence[Path]) -> list[tuple[Path, Path]]:
    """(root, file) for every code file under `paths` (files or directories), sorted.

    Only files whose extension names a language, skipping VCS/build/vendor
    folders. The root is the directory given (a file's root is its folder),
    so domains are the first component below what the user pointed at.
    """
    found: list[tuple[Path, Path]] = []
    for given in paths:
        given = given.expanduser()
        if given.is_file():
            found.append((given.parent, given))
            continue
        if not given.is_dir():
            raise FileNotFoundError(f"{given}: no such file or directory")
        for dirpath, dirnames, filenames in os.walk(given):
            dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and d[0] != ".")
            for name in sorted(filenames):
                path = Path(dirpath, name)
                if language_of(name) is not None and path.is_file():
                    found.append((given, path))
    return found


def domain_of(relative: str) -> str:
    parts = relative.split("/")
    return parts[0] if len(parts) > 1 else "(top level)"


# (file key, language, relative path, line number, first offset, end offset)
Candidate = tuple[str, str, str, int, int, int]


def candidate_lines(
    files: Sequence[tuple[Path, Path]],
) -> tuple[list[Candidate], dict[str, str]]:
    """Every eligible line of every readable file, and each file's text by key."""
    candidates: list[Candidate] = []
    texts: dict[str, str] = {}
    for root, path in files:
        try:
            data = path.read_bytes()
            if len(data) > MAX_FILE_BYTES:
                continue
            text = data.decode("utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        relative = path.relative_to(root).as_posix()
        key = f"{root.as_posix()}::{relative}"
        language = language_of(path.name) or "unknown"
        texts[key] = text
        offset = 0
        for number, line in enumerate(text.split("\n"), 1):
            if len(line.strip()) >= MIN_LINE_CHARS:
                indent = len(line) - len(line.lstrip())
                end = len(line.rstrip())
                candidates.append((key, language, relative, number, offset + indent, offset + end))
            offset += len(line) + 1
    return candidates, texts


def sample_tasks(
    files: Sequence[tuple[Path, Path]],
    n: int,
    seed: int,
    *,
    context_chars: int = 4000,
    suffix_chars: int = 0,
) -> list[LineTask]:
    """`n` cursor positions spread over `files` ((root, file) pairs), seeded.

    Every eligible line of every file is a candidate; `n` are drawn without
    replacement (all of them when there are fewer), then sorted by file and
    line so the output is stable. The prefix is at most `context_chars`
    characters (cut at a line start): long files would otherwise cost the
    predictors unboundedly, and models truncate anyway. The suffix (for
    fill-in-the-middle predictors) is at most `suffix_chars` characters after
    the line, cut at a line end; the same cursor positions whatever its size.
    """
    if n < 1:
        raise ValueError(f"the number of positions must be at least 1, got {n}")
    candidates, texts = candidate_lines(files)
    if not candidates:
        raise ValueError("no eligible lines in the given files")
    rng = random.Random(seed)
    chosen = rng.sample(candidates, min(n, len(candidates)))
    chosen.sort(key=lambda c: (c[0], c[3]))
    tasks = []
    for key, language, relative, number, start, end in chosen:
        text = texts[key]
        cursor = rng.choice(cursor_positions(text, start, end))
        line_start = text.rfind("\n", 0, cursor) + 1
        context_start = max(0, cursor - context_chars)
        if context_start > 0:
            newline = text.find("\n", context_start, line_start)
            context_start = newline + 1 if newline >= 0 else line_start
        line_end = text.find("\n", cursor)
        tasks.append(
            LineTask(
                path=relative,
                language=language,
                domain=domain_of(relative),
                line=number,
                column=cursor - line_start + 1,
                prefix=text[context_start:cursor],
                target=text[cursor : line_end if line_end >= 0 else len(text)],
                suffix=suffix_after(text, line_end, suffix_chars),
            )
        )
    return tasks


def suffix_after(text: str, line_end: int, suffix_chars: int) -> str:
    """At most `suffix_chars` of the text from `line_end` (the line's newline) on, cut at
    a line end unless it reaches the end of the text."""
    if line_end < 0 or suffix_chars <= 0:
        return ""
    suffix = text[line_end : line_end + suffix_chars]
    if line_end + suffix_chars < len(text) and "\n" in suffix[1:]:
        suffix = suffix[: suffix.rfind("\n")]
    return suffix


def cursor_positions(text: str, start: int, end: int) -> list[int]:
    """Offsets in [start, end) that are not inside a word (identifier or number).

    A cursor between two word characters splits what the tokenizer sees as
    one token, which penalizes every subword model in a way that says more
    about token healing than about the model; completions are asked for at
    word boundaries, as an editor usually does after a keystroke such as
    space, `.` or `(`.
    """
    return [
        offset
        for offset in range(start, end)
        if offset == start or not (is_word(text[offset - 1]) and is_word(text[offset]))
    ]


def is_word(char: str) -> bool:
    return char.isalnum() or char == "_"


__all__ = ["LineTask", "collect_files", "cursor_positions", "sample_tasks"]
