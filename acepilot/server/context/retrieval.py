"""Lexical retrieval over the workspace's chunks: BM25 (the `bm25s` library), rebuilt as a whole.

bm25s scores a query against a sparse matrix it builds from token ids. It has
no incremental update, so the index keeps each chunk's term ids (compact uint32
arrays) and rebuilds the matrix in the background after edits (debounced); a
query meanwhile runs against the previous matrix, whose chunk list it carries,
so results always name the lines they were computed from.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import bm25s
import numpy as np
import numpy.typing as npt

from acepilot.server.context.chunks import WORD, word_terms


@dataclass(frozen=True, slots=True)
class ChunkRef:
    """Where an indexed chunk lies: file and inclusive 0-based line range."""

    path: str
    start_line: int
    end_line: int


class Vocabulary:
    """Term -> id, grown as files are indexed (ids are stable for the life of the index)."""

    WORD_CACHE = 100_000  # identifiers whose term ids are remembered (cleared when full)

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}
        self._words: dict[str, tuple[int, ...]] = {}

    def encode(self, text: str) -> npt.NDArray[np.uint32]:
        """The term ids of a text's identifiers and their parts (see `chunks.sub_words`)."""
        out: list[int] = []
        words, ids = self._words, self.ids
        if len(words) > self.WORD_CACHE:
            words.clear()
        for word in WORD.findall(text):
            found = words.get(word)
            if found is None:
                found = words[word] = tuple(ids.setdefault(t, len(ids)) for t in word_terms(word))
            out.extend(found)
        return np.array(out, dtype=np.uint32)

    def lookup(self, terms: Iterable[str]) -> list[int]:
        return sorted({self.ids[t] for t in terms if t in self.ids})


class Bm25Snapshot:
    """An immutable BM25 matrix over a list of chunks (swapped whole when rebuilt)."""

    def __init__(
        self, refs: Sequence[ChunkRef], term_ids: Sequence[npt.NDArray[np.uint32]], vocab_size: int
    ) -> None:
        self.refs = list(refs)
        self._path_ids: dict[str, int] = {}
        self._owner = np.array(
            [self._path_ids.setdefault(r.path, len(self._path_ids)) for r in self.refs],
            dtype=np.int32,
        )  # chunk -> file number: excluding a file is one integer comparison
        self._model: bm25s.BM25 | None = None
        if self.refs and vocab_size:
            model = bm25s.BM25()
            corpus = [ids.tolist() for ids in term_ids]
            vocab = {i: i for i in range(vocab_size)}
            model.index((corpus, vocab), show_progress=False)
            self._model = model

    def search(
        self, query_ids: list[int], k: int, exclude_path: str = ""
    ) -> list[tuple[ChunkRef, float]]:
        """The k best chunks for the query's term ids (chunks of `exclude_path` left out), best first."""
        if self._model is None or not query_ids:
            return []
        usable = [i for i in query_ids if i in self._model.unique_token_ids_set]
        if not usable:
            return []
        scores = self._model.get_scores(usable)
        if exclude_path in self._path_ids:
            scores = np.where(self._owner == self._path_ids[exclude_path], 0.0, scores)
        k = min(k, len(scores))
        top = np.argpartition(-scores, k - 1)[:k]
        ranked = sorted(((float(scores[i]), int(i)) for i in top if scores[i] > 0), reverse=True)
        return [(self.refs[i], s) for s, i in ranked]
