"""Lexical retrieval over the workspace's chunks: BM25 (the `bm25s` library), rebuilt as a whole.

bm25s scores a query against a sparse matrix it builds from token ids. It has
no incremental update, so the index keeps each file's chunk terms compactly
(`ChunkTerms`: unique term ids and their counts per chunk, one array per file)
and rebuilds the matrix in the background after edits (debounced); a query
meanwhile runs against the previous matrix, whose chunk list it carries, so
results always name the lines they were computed from. The corpus is handed
to bm25s lazily, one chunk's token list at a time, so a rebuild does not hold
every token of the workspace as Python objects.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import bm25s
import numpy as np
import numpy.typing as npt

from acepilot.server.context.chunks import WORD, word_terms

MAX_COUNT = 255  # a term's count within one chunk is clipped here (uint8)


@dataclass(frozen=True, slots=True)
class ChunkRef:
    """Where an indexed chunk lies: file and inclusive 0-based line range."""

    path: str
    start_line: int
    end_line: int


@dataclass(frozen=True, slots=True)
class ChunkTerms:
    """The bag of terms of each chunk of one file: ids[offsets[i]:offsets[i+1]] with their counts."""

    ids: npt.NDArray[np.uint32]
    counts: npt.NDArray[np.uint8]
    offsets: npt.NDArray[np.int64]

    @classmethod
    def from_chunks(cls, chunks: Sequence[npt.NDArray[np.uint32]]) -> ChunkTerms:
        ids, counts, offsets = [], [], [0]
        for terms in chunks:
            unique, count = np.unique(terms, return_counts=True)
            ids.append(unique.astype(np.uint32))
            counts.append(np.minimum(count, MAX_COUNT).astype(np.uint8))
            offsets.append(offsets[-1] + len(unique))
        return cls(
            ids=np.concatenate(ids) if ids else np.zeros(0, np.uint32),
            counts=np.concatenate(counts) if counts else np.zeros(0, np.uint8),
            offsets=np.array(offsets, dtype=np.int64),
        )

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def tokens(self, i: int) -> list[int]:
        """Chunk i as a token list (each id repeated by its count), the form bm25s counts."""
        lo, hi = self.offsets[i], self.offsets[i + 1]
        return np.repeat(self.ids[lo:hi], self.counts[lo:hi]).tolist()


class _LazyCorpus:
    """A re-iterable sequence of token lists, materialised one chunk at a time."""

    def __init__(self, files: Sequence[ChunkTerms]) -> None:
        self.files = files
        self._len = sum(len(f) for f in files)
        self.ids: _LazyCorpus | None = None
        self.vocab: dict[int, int] = {}

    def __len__(self) -> int:
        return self._len

    def __iter__(self) -> Iterator[list[int]]:
        for terms in self.files:
            for i in range(len(terms)):
                yield terms.tokens(i)


class Vocabulary:
    """Term -> id, grown as files are indexed (ids are stable for the life of the index)."""

    WORD_CACHE = 20_000  # identifiers whose term ids are remembered (cleared when full)

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
    """An immutable BM25 matrix over the chunks of a set of files (swapped whole when rebuilt).

    Chunk i lies in file paths[owner[i]], lines lines[i, 0]..lines[i, 1] (arrays, not
    objects: a 10,000-file workspace has over 100,000 chunks).
    """

    def __init__(
        self,
        files: Sequence[tuple[str, npt.NDArray[np.int32], ChunkTerms]],
        vocab_size: int,
    ) -> None:
        self.paths = [path for path, _, _ in files]
        self._path_ids = {path: i for i, path in enumerate(self.paths)}
        self.lines = (
            np.concatenate([lines for _, lines, _ in files])
            if files
            else np.zeros((0, 2), np.int32)
        )
        self._owner = np.repeat(
            np.arange(len(files), dtype=np.int32), [len(lines) for _, lines, _ in files]
        )  # chunk -> file number: excluding a file is one integer comparison
        self.vocab_size = vocab_size
        self._model: bm25s.BM25 | None = None
        if len(self.lines) and vocab_size:
            model = bm25s.BM25()
            corpus = _LazyCorpus([terms for _, _, terms in files])
            # bm25s's "object" corpus form: `ids` (token ids per document) and `vocab` (token -> id).
            corpus.ids, corpus.vocab = corpus, {i: i for i in range(vocab_size)}
            model.index(corpus, create_empty_token=False, show_progress=False)
            model.vocab_dict = {}  # ids are ours (Vocabulary): bm25s's copies of them are not needed
            model.unique_token_ids_set = set()
            self._model = model

    def __len__(self) -> int:
        return len(self.lines)

    def search(
        self, query_ids: list[int], k: int, exclude_path: str = ""
    ) -> list[tuple[ChunkRef, float]]:
        """The k best chunks for the query's term ids (chunks of `exclude_path` left out), best first."""
        if self._model is None or not query_ids:
            return []
        usable = [i for i in query_ids if i < self.vocab_size]
        if not usable:
            return []
        scores = self._model.get_scores(usable)
        if exclude_path in self._path_ids:
            scores = np.where(self._owner == self._path_ids[exclude_path], 0.0, scores)
        k = min(k, len(scores))
        top = np.argpartition(-scores, k - 1)[:k]
        ranked = sorted(((float(scores[i]), int(i)) for i in top if scores[i] > 0), reverse=True)
        return [
            (ChunkRef(self.paths[self._owner[i]], int(self.lines[i, 0]), int(self.lines[i, 1])), s)
            for s, i in ranked
        ]
