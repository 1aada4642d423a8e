"""Stage 3a of the pipeline: context from other open documents (snippets for the prompt).

The other open documents of the cursor's language (at most MAX_NEIGHBOURS)
are indexed into windows of lines (acepilot/server/lsp/prompt.py `Neighbour`);
the windows most similar to the lines before the cursor become snippets.
Indexes are cached per document and edit count, and the snippet choice per
document and block of lines (WINDOW_STRIDE), so that the head of the prompt
stays stable across keystrokes and the engine's KV cache keeps matching.

`neighbours` runs on the event loop (it only copies line lists); `snippets`
runs on a worker thread. Both caches are keyed by document and dropped on
didClose (`forget`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from acepilot.server.lsp.config import Config
from acepilot.server.lsp.documents import Document, DocumentStore, line_content
from acepilot.server.lsp.prompt import (
    QUERY_LINES,
    WINDOW_STRIDE,
    Neighbour,
    PromptInput,
    Snippet,
    select_snippets,
)

MAX_NEIGHBOURS = 10  # other open documents searched for snippets


@dataclass(frozen=True, kw_only=True)
class NeighbourCopy:
    """Another open document as the worker thread needs it."""

    uri: str
    edits: int
    lines: list[str] | None  # None: its index is cached for these edits


class ContextIndex:
    """Neighbour indexes and snippet choices, cached (see the module docstring)."""

    def __init__(self, relative_path: Callable[[str], str]) -> None:
        self.relative_path = relative_path
        self._neighbours: dict[str, tuple[int, Neighbour]] = {}
        self._snippets: dict[str, tuple[object, list[Snippet]]] = {}

    def forget(self, uri: str) -> None:
        self._neighbours.pop(uri, None)
        self._snippets.pop(uri, None)

    def neighbours(self, documents: DocumentStore, document: Document) -> list[NeighbourCopy]:
        """Other open documents of the language (on the event loop: list copies only)."""
        self._prune(documents)
        out = []
        for other in documents:
            if other.uri == document.uri or other.language_id != document.language_id:
                continue
            cached = self._neighbours.get(other.uri)
            lines = None if cached and cached[0] == other.edits else list(other.lines)
            out.append(NeighbourCopy(uri=other.uri, edits=other.edits, lines=lines))
            if len(out) >= MAX_NEIGHBOURS:
                break
        return out

    def snippets(
        self,
        data: PromptInput,
        *,
        uri: str,
        line: int,
        neighbours: list[NeighbourCopy],
        config: Config,
        count: Callable[[str], int],
    ) -> list[Snippet]:
        """The snippets for a prompt (on a worker thread); cached per block of lines."""
        if config.snippet_tokens <= 0 or not neighbours:
            return []
        indexed = [self._index(neighbour) for neighbour in neighbours]
        key = (line // WINDOW_STRIDE, tuple((n.uri, n.edits) for n in neighbours))
        hit = self._snippets.get(uri)
        if hit is not None and hit[0] == key:
            return hit[1]
        query = list(data.before[-QUERY_LINES:]) + [data.line_prefix]
        chosen = select_snippets(query, indexed, config.snippet_tokens, count, data.language, uri)
        self._snippets[uri] = (key, chosen)
        return chosen

    def _prune(self, documents: DocumentStore) -> None:
        """Drop what a worker cached for a document closed meanwhile (forget ran before it)."""
        for cache in (self._neighbours, self._snippets):
            for uri in [uri for uri in list(cache) if uri not in documents]:
                cache.pop(uri, None)

    def _index(self, neighbour: NeighbourCopy) -> Neighbour:
        cached = self._neighbours.get(neighbour.uri)
        if neighbour.lines is not None or cached is None:
            texts = [line_content(text) for text in (neighbour.lines or [])]
            path = self.relative_path(neighbour.uri)
            cached = (neighbour.edits, Neighbour.from_lines(neighbour.uri, path, texts))
            self._neighbours[neighbour.uri] = cached
        return cached[1]
