"""The prompt: header comment + snippets from neighbouring tabs + prefix (+ FIM suffix).

    # Path: src/app.py
    # Language: python
    # Compare this snippet from src/util.py:
    # def helper(x):
    #     return x + 1
    <the file's lines before the cursor, up to the budget>
    <the cursor line up to the cursor>

Everything is fitted to a token budget (the model's prompt costs prefill
time: seconds on a CPU for long prompts). The prefix is cut at a line
boundary, and the cut moves in steps of CUT_STEP lines, so that successive
keystrokes keep the same prompt head and the engine's per-document KV cache
prefills only what changed. For the same reason the snippet choice is cached
by the server per block of lines, not per keystroke.

Snippets: the other open documents of the same language are cut into windows
of lines; the windows most similar to the lines before the cursor (Jaccard
similarity of their identifier sets, as Copilot's neighbouring tabs do) are
added as comments, with their paths. The current document is never one of them.

Fill-in-the-middle only for models whose manifest declares it
(`tokenizer.fim`, read by acepilot/server/fim.py: special tokens, PSM or SPM
order, stop tokens that post-processing cuts at),
or, for a remote server, the OpenAI API's separate `suffix` field when the
server says its model supports it (`Prompt.suffix`; the server applies its
own FIM template).

Line breaks are normalised to "\\n" in the prompt; post-processing writes the
document's own breaks back.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from acepilot.server.fim import FimFormat, RepoFormat
from acepilot.server.lsp.languages import Language

if TYPE_CHECKING:  # the context package imports numpy, bm25s, tree-sitter: only when used
    from acepilot.server.context import ContextChunk

WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
WINDOW_LINES = 12  # lines per snippet window
WINDOW_STRIDE = 6
QUERY_LINES = 12  # lines before the cursor compared with the windows
MAX_SNIPPETS = 3
MIN_SIMILARITY = 0.1
MAX_SNIPPET_LINE = 256  # characters of a neighbour's line kept in a snippet (a long line: cut)
CUT_STEP = 16  # the prefix head moves in steps of this many lines
SUFFIX_SHARE = 4  # FIM: the suffix gets at most 1/SUFFIX_SHARE of the budget
CHARS_PER_TOKEN = 3  # estimate when no tokenizer is at hand (remote backend)
MAX_CACHED_CHARS = 512  # TokenCounter caches the counts of texts up to this long
CONTEXT_SHARE = 4  # workspace context + header + snippets: at most 3/CONTEXT_SHARE of the budget


class TokenCounter:
    """Counts tokens of short texts (lines), with a cache bounded in characters.

    Lines repeat across keystrokes, so their counts are cached; texts longer
    than MAX_CACHED_CHARS are counted every time (a long line's prefix changes
    with every keystroke and would only fill the cache), and the cache holds
    at most `cache_chars` characters of keys (memory stays flat whatever the
    documents opened and closed).
    """

    def __init__(
        self, count: Callable[[str], int] | None = None, cache_chars: int = 2_000_000
    ) -> None:
        self._count = count or estimate_tokens
        self._cache: OrderedDict[str, int] = OrderedDict()
        self._cache_chars = cache_chars
        self._chars = 0

    def __call__(self, text: str) -> int:
        cached = self._cache.get(text)
        if cached is not None:
            return cached
        value = self._count(text) if text else 0
        if len(text) <= MAX_CACHED_CHARS:
            self._cache[text] = value
            self._chars += len(text) + 1
            while self._chars > self._cache_chars:
                old, _ = self._cache.popitem(last=False)
                self._chars -= len(old) + 1
        return value


def estimate_tokens(text: str) -> int:
    return -(-len(text) // CHARS_PER_TOKEN)


@dataclass(frozen=True)
class Window:
    start: int  # first line (0-based) of the window in its document
    lines: tuple[str, ...]
    words: frozenset[str]


@dataclass(frozen=True)
class Neighbour:
    """Another open document: its path as shown in the prompt, and its windows."""

    uri: str
    path: str
    windows: tuple[Window, ...]

    @classmethod
    def from_lines(cls, uri: str, path: str, lines: Sequence[str]) -> Neighbour:
        windows = []
        for start in range(0, max(1, len(lines) - WINDOW_STRIDE), WINDOW_STRIDE):
            chunk = tuple(line[:MAX_SNIPPET_LINE] for line in lines[start : start + WINDOW_LINES])
            words = frozenset(WORD.findall("\n".join(chunk)))
            if words:
                windows.append(Window(start, chunk, words))
        return cls(uri, path, tuple(windows))


@dataclass(frozen=True)
class Snippet:
    path: str
    start: int
    lines: tuple[str, ...]
    score: float


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    if not a or not b:
        return 0.0
    inter = len(a & b)
    return inter / (len(a) + len(b) - inter)


def select_snippets(
    query: Sequence[str],
    neighbours: Sequence[Neighbour],
    budget: int,
    count: Callable[[str], int],
    language: Language,
    current_uri: str,
) -> list[Snippet]:
    """The most similar windows of the neighbours that fit `budget` tokens (as comments)."""
    words = frozenset(WORD.findall("\n".join(query)))
    if budget <= 0 or not words:
        return []
    scored = [
        Snippet(neighbour.path, window.start, window.lines, jaccard(words, window.words))
        for neighbour in neighbours
        if neighbour.uri != current_uri
        for window in neighbour.windows
    ]
    scored.sort(key=lambda snippet: -snippet.score)
    chosen: list[Snippet] = []
    used = 0
    for snippet in scored:
        if snippet.score < MIN_SIMILARITY or len(chosen) >= MAX_SNIPPETS:
            break
        if any(
            other.path == snippet.path and abs(other.start - snippet.start) < WINDOW_LINES
            for other in chosen
        ):
            continue  # overlapping windows of one file: keep the better one
        cost = count(render_snippet(snippet, language))
        if used + cost > budget:
            continue
        chosen.append(snippet)
        used += cost
    return chosen


def render_snippet(snippet: Snippet, language: Language) -> str:
    lines = [language.comment_line(f"Compare this snippet from {snippet.path}:")]
    lines += [language.comment_line(line) for line in snippet.lines]
    return "\n".join(lines) + "\n"


def render_header(path: str, language: Language) -> str:
    return (
        language.comment_line(f"Path: {path}")
        + "\n"
        + language.comment_line(f"Language: {language.id}")
        + "\n"
    )


@dataclass(frozen=True)
class PromptInput:
    """What the prompt is built from; lines are without their line breaks."""

    path: str  # relative to the workspace
    language: Language
    before: Sequence[str]  # the lines before the cursor line (at least as many as fit)
    first_line: int  # document line number of before[0]
    line_prefix: str  # the cursor line up to the cursor
    line_suffix: str  # the cursor line after the cursor
    after: Sequence[str] = ()  # lines after the cursor line (FIM suffix)
    snippets: Sequence[Snippet] = ()
    context: Sequence[ContextChunk] = ()  # workspace context (lsp/workspace.py), by (path, line)
    repo_name: str = ""  # the workspace folder's name (the repository-level format's header)


@dataclass(frozen=True)
class PromptPart:
    """One part of the prompt and where it came from (`acepilot complete --explain`).

    kind: "context" (a workspace chunk; `source` says which: imported_definition, bm25, ...),
    "open_tab" (a snippet of another open document), "header", "prefix" or "suffix".
    """

    kind: str
    source: str
    path: str
    tokens: int
    text: str
    start_line: int | None = None
    end_line: int | None = None


@dataclass(frozen=True)
class Prompt:
    text: str  # what the model gets
    prefix_start: int  # document line where the prefix starts
    tokens: int  # estimated prompt tokens
    fim: bool = False
    snippet_paths: tuple[str, ...] = field(default_factory=tuple)
    suffix: str | None = None  # the API's `suffix` field (remote FIM); None: not sent
    parts: tuple[PromptPart, ...] = ()  # what the text is made of, in order (explain, stats)


def context_files(chunks: Sequence[ContextChunk]) -> list[tuple[str, list[ContextChunk]]]:
    """The chunks grouped by file, in their (path, line) order: one header per file."""
    files: dict[str, list[ContextChunk]] = {}
    for chunk in chunks:
        files.setdefault(chunk.path, []).append(chunk)
    return list(files.items())


def render_context(
    chunks: Sequence[ContextChunk],
    language: Language,
    repo: RepoFormat | None,
    repo_name: str = "",
) -> str:
    """Workspace context: the model's repository-level format if it has one, else path comments.

    repo: `repo_name + name + "\n"` (when the format has the token and the folder a name),
    then `file_sep + path + "\n" + content` per file (fim.py RepoFormat), as the training
    documents and llama.cpp's /infill write them; otherwise a commented `Path:` header
    above the file's chunks, as the current file's own header.
    """
    out = []
    if repo is not None and repo.repo_name and repo_name and chunks:
        out.append(f"{repo.repo_name}{repo_name}\n")
    for path, group in context_files(chunks):
        content = "".join(chunk.text.rstrip("\n") + "\n" for chunk in group)
        if repo is not None:
            out.append(repo.render_file(path, content))
        else:
            out.append(language.comment_line(f"Path: {path}") + "\n" + content)
    return "".join(out)


def fit_head(
    data: PromptInput, budget: int, count: Callable[[str], int], repo: RepoFormat | None
) -> tuple[str, str, str, int]:
    """(context, header, snippets, tokens they use): what goes before the file's code, each
    within its share of `budget` (the code matters more than a long path or many snippets)."""
    header = render_header(data.path, data.language)
    snippets = "".join(render_snippet(snippet, data.language) for snippet in data.snippets)
    used = count(header) + count(snippets)
    if used >= budget // 2:  # a long path or too many snippets: the code matters more
        snippets, used = "", count(header)
        if used >= budget // 2:
            header, used = "", 0
    context = (
        render_context(data.context, data.language, repo, data.repo_name) if data.context else ""
    )
    context_tokens = count(context) if context else 0
    if context and used + context_tokens > budget * (CONTEXT_SHARE - 1) // CONTEXT_SHARE:
        context, context_tokens = "", 0  # the allocator's budget was for a bigger prompt
    if context and repo is not None and header:
        header = repo.render_file(data.path, "")
        used = count(header) + count(snippets)
    return context, header, snippets, used + context_tokens


def fit_prefix(data: PromptInput, room: int, count: Callable[[str], int]) -> tuple[str, int, int]:
    """(prefix, index in `data.before` of its first line, tokens of `room` left): the cursor
    line (its tail when it alone is too long) and as many whole lines above it as fit."""
    line_prefix = data.line_prefix
    line_tokens = count(line_prefix)
    if line_tokens > room:  # one enormous line: keep its tail
        keep = max(0, room * CHARS_PER_TOKEN)
        line_prefix = line_prefix[len(line_prefix) - keep :] if keep else ""
        line_tokens = count(line_prefix)
    room -= line_tokens
    start = len(data.before)
    while start > 0:
        cost = count(data.before[start - 1]) + 1  # + the line break
        if cost > room:
            break
        room -= cost
        start -= 1
    if start > 0:
        # Move the head forward to the next multiple of CUT_STEP (document lines): the
        # cut then stays put while the user types, and the KV cache keeps matching.
        absolute = data.first_line + start
        stable = -(-absolute // CUT_STEP) * CUT_STEP - data.first_line
        if stable <= len(data.before):
            start = stable
    prefix = "".join(line + "\n" for line in data.before[start:]) + line_prefix
    return prefix, start, room


def build_prompt(
    data: PromptInput,
    budget: int,
    count: Callable[[str], int],
    fim: FimFormat | None = None,
    separate_suffix: bool = False,
    repo: RepoFormat | None = None,
) -> Prompt:
    """Context + header + snippets + the prefix cut at a line boundary (+ FIM suffix) within `budget`.

    `fim`: the suffix goes into the prompt between the model's FIM tokens;
    `separate_suffix`: it is returned apart (`Prompt.suffix`) for the API's field;
    `repo`: the model's repository-level format, for the workspace context (and then the
    current file's header is `file_sep + path`, as in the model's training data).
    """
    context, header, snippets, used = fit_head(data, budget, count, repo)
    suffix_text = ""
    if fim is not None or separate_suffix:
        suffix_text, suffix_tokens = fit_suffix(data, (budget - used) // SUFFIX_SHARE, count)
        used += suffix_tokens + (3 if fim is not None else 0)  # the three FIM tokens
    prefix, start, room = fit_prefix(data, budget - used, count)
    tokens = budget - room
    body = context + header + snippets + prefix
    paths = tuple(dict.fromkeys(snippet.path for snippet in data.snippets)) if snippets else ()
    parts = prompt_parts(data, count, context=bool(context), header=header, snippets=bool(snippets))
    parts += (PromptPart("prefix", "prefix", data.path, count(prefix), prefix),)
    if fim is not None or separate_suffix:
        parts += (PromptPart("suffix", "suffix", data.path, count(suffix_text), suffix_text),)
    if fim is not None:
        # The context goes before the FIM tokens, only the file's own code between them:
        # the layout of the training documents (repo header, then <fim_prefix>...) and of
        # llama.cpp's /infill. In SPM the suffix then sits before the growing prefix, so
        # typing re-prefills only what was typed (bench/fim_order.py).
        text = context + header + snippets + fim.render(prefix, suffix_text)
        return Prompt(text, data.first_line + start, tokens, True, paths, None, parts)
    if separate_suffix:
        return Prompt(body, data.first_line + start, tokens, True, paths, suffix_text, parts)
    return Prompt(body, data.first_line + start, tokens, False, paths, None, parts)


def stable_head(prompt: Prompt) -> str:
    """The prompt's text up to the cursor line: what the next request in this line shares.

    Context, header, snippets and the lines above hold while the user types in the line
    (the collector's block cache, the CUT_STEP prefix head), so an idle prefill feeds this.
    "" when the prompt has no such head (no prefix part, or it cannot be found).
    """
    prefix = next((part.text for part in prompt.parts if part.kind == "prefix"), "")
    above = prefix[: len(prefix) - len(prefix.rpartition("\n")[2])]
    at = prompt.text.find(prefix) if prefix else -1
    return prompt.text[: at + len(above)] if at >= 0 else ""


def prompt_parts(
    data: PromptInput,
    count: Callable[[str], int],
    *,
    context: bool,
    header: str,
    snippets: bool,
) -> tuple[PromptPart, ...]:
    """The parts before the prefix, in prompt order, each with its source and token count."""
    parts: list[PromptPart] = []
    if context:
        for chunk in data.context:
            parts.append(
                PromptPart(
                    "context",
                    chunk.kind,
                    chunk.path,
                    chunk.tokens,
                    chunk.text,
                    chunk.start_line,
                    chunk.end_line,
                )
            )
    if header:
        parts.append(PromptPart("header", "header", data.path, count(header), header))
    if snippets:
        for snippet in data.snippets:
            text = render_snippet(snippet, data.language)
            parts.append(
                PromptPart(
                    "open_tab",
                    "open_tab",
                    snippet.path,
                    count(text),
                    text,
                    snippet.start,
                    snippet.start + len(snippet.lines) - 1,
                )
            )
    return tuple(parts)


def fit_suffix(data: PromptInput, budget: int, count: Callable[[str], int]) -> tuple[str, int]:
    """The text after the cursor, cut at a line boundary within `budget` tokens."""
    text = data.line_suffix
    used = count(text)
    if used > budget:
        return "", 0
    for line in data.after:
        cost = count(line) + 1
        if used + cost > budget:
            break
        text += "\n" + line
        used += cost
    return text, used
