"""Lexical retrieval over the workspace's chunks: BM25 (the `bm25s` library), rebuilt as a whole.

bm25s scores a query against a sparse matrix it builds from token ids. It has
no incremental update, so the index keeps each file's chunk terms compactly
(`ChunkTerms`: unique term ids and their counts per chunk, one array per file)
and rebuilds the matrix in the background after edits (debounced); a query
meanwhile runs against the previous matrix, whose chunk list it carries, so
results always name the lines they were computed from. The corpus is handed
to bm25s lazily, one chunk's token list at a time, so a rebuild does not hold
every token of the workspace as Python objects.

Memory (a 10,000-file workspace: ~300,000 distinct terms, ~7 M chunk-term
pairs): a term's id is its CRC-32, so no term table is kept (a dict of 300,000
strings cost ~36 MB; two terms sharing a CRC are ~10 pairs in 300,000, a
negligible blur); the matrix's columns are the sorted distinct ids of the
snapshot; its scores are float16. A query sums the columns of its terms with
`np.bincount` (bm25s's numpy backend uses `np.add.at`, several times slower).
"""

from __future__ import annotations

import logging
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import bm25s
import numpy as np
import numpy.typing as npt

from acepilot.server.context.chunks import WORD, word_terms

# bm25s sets its own logger to DEBUG (progress lines on every index build): the
# server's stderr is the editor's output channel, so it follows our level instead.
logging.getLogger("bm25s").setLevel(logging.NOTSET)

MAX_COUNT = 255  # a term's count within one chunk is clipped here (uint8)
MAX_POSTINGS = 60_000  # chunk-term pairs a query reads at most (its rarest terms first)


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
    offsets: npt.NDArray[np.int32]

    @classmethod
    def from_bags(
        cls, bags: Sequence[tuple[npt.NDArray[np.uint32], npt.NDArray[np.uint8]]]
    ) -> ChunkTerms:
        """From each chunk's (term ids, counts) (`Vocabulary.bag`)."""
        offsets = np.zeros(len(bags) + 1, dtype=np.int32)
        np.cumsum([len(ids) for ids, _ in bags], out=offsets[1:])
        return cls(
            ids=np.concatenate([ids for ids, _ in bags]) if bags else np.zeros(0, np.uint32),
            counts=np.concatenate([c for _, c in bags]) if bags else np.zeros(0, np.uint8),
            offsets=offsets,
        )

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def tokens(self, i: int, columns: npt.NDArray[np.uint32]) -> list[int]:
        """Chunk i as a token list (each term's column repeated by its count), as bm25s counts."""
        lo, hi = self.offsets[i], self.offsets[i + 1]
        return np.repeat(np.searchsorted(columns, self.ids[lo:hi]), self.counts[lo:hi]).tolist()


class _LazyCorpus:
    """A re-iterable sequence of token lists, materialised one chunk at a time."""

    def __init__(self, files: Sequence[ChunkTerms], columns: npt.NDArray[np.uint32]) -> None:
        self.files = files
        self.columns = columns
        self._len = sum(len(f) for f in files)
        self.ids: _LazyCorpus | None = None
        self.vocab: dict[int, int] = {}

    def __len__(self) -> int:
        return self._len

    def __iter__(self) -> Iterator[list[int]]:
        for terms in self.files:
            for i in range(len(terms)):
                yield terms.tokens(i, self.columns)


def term_id(term: str) -> int:
    """A term's id: its CRC-32 (deterministic across runs, unlike `hash`)."""
    return zlib.crc32(term.encode("utf-8", "surrogatepass"))


class Vocabulary:
    """Text -> term ids (see the module docstring: an id is the term's CRC-32, no table)."""

    WORD_CACHE = 20_000  # identifiers whose term ids are remembered (cleared when full)

    def __init__(self) -> None:
        self._words: dict[str, tuple[int, ...]] = {}

    def bag(self, text: str) -> tuple[npt.NDArray[np.uint32], npt.NDArray[np.uint8]]:
        """A text's bag of terms, its identifiers and their parts (see `chunks.sub_words`):
        (distinct term ids, their counts clipped to MAX_COUNT). Identifiers are counted
        first (C speed), so each distinct one is looked up once."""
        words = self._words
        if len(words) > self.WORD_CACHE:
            words.clear()
        counts: dict[int, int] = {}
        for word, times in Counter(WORD.findall(text)).items():
            found = words.get(word)
            if found is None:
                found = words[word] = tuple(term_id(t) for t in word_terms(word))
            for term in found:
                counts[term] = counts.get(term, 0) + times
        size = len(counts)
        ids = np.fromiter(counts.keys(), dtype=np.uint32, count=size)
        occurrences = np.fromiter(counts.values(), dtype=np.int64, count=size)
        return ids, np.minimum(occurrences, MAX_COUNT).astype(np.uint8)

    def lookup(self, terms: Iterable[str]) -> list[int]:
        return sorted({term_id(t) for t in terms})


class Bm25Snapshot:
    """An immutable BM25 matrix over the chunks of a set of files (swapped whole when rebuilt).

    Chunk i lies in file paths[owner[i]], lines lines[i, 0]..lines[i, 1] (arrays, not
    objects: a 10,000-file workspace has over 100,000 chunks). Column j of the matrix is
    the term whose id is columns[j].
    """

    def __init__(self, files: Sequence[tuple[str, npt.NDArray[np.int32], ChunkTerms]]) -> None:
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
        ids = [terms.ids for _, _, terms in files if len(terms.ids)]
        self.columns = np.unique(np.concatenate(ids)) if ids else np.zeros(0, np.uint32)
        self._scores: dict[str, npt.NDArray[np.generic]] = {}
        if len(self.lines) and len(self.columns):
            model = bm25s.BM25(dtype="float16")
            corpus = _LazyCorpus([terms for _, _, terms in files], self.columns)
            # bm25s's "object" corpus form: `ids` (token ids per document) and `vocab` (token -> id).
            corpus.ids, corpus.vocab = corpus, {i: i for i in range(len(self.columns))}
            model.index(corpus, create_empty_token=False, show_progress=False)
            self._scores = {key: model.scores[key] for key in ("data", "indices", "indptr")}

    def __len__(self) -> int:
        return len(self.lines)

    @property
    def terms(self) -> int:
        """Distinct terms of the snapshot (its matrix's columns)."""
        return len(self.columns)

    def search(
        self, query_ids: list[int], k: int, exclude_path: str = ""
    ) -> list[tuple[ChunkRef, float]]:
        """The k best chunks for the query's term ids (chunks of `exclude_path` left out), best first."""
        if not self._scores or not query_ids:
            return []
        wanted = np.asarray(query_ids, dtype=np.uint32)
        at = np.minimum(np.searchsorted(self.columns, wanted), len(self.columns) - 1)
        columns = at[self.columns[at] == wanted]
        if not len(columns):
            return []
        data, indices, indptr = (self._scores[key] for key in ("data", "indices", "indptr"))
        lows, highs = indptr[columns], indptr[columns + 1]
        # Rarest terms first, until MAX_POSTINGS: a term in every other chunk (`self`,
        # `return`) has a low idf and would cost most of the query's time.
        order = np.argsort(highs - lows, kind="stable")
        kept = order[np.cumsum((highs - lows)[order]) <= MAX_POSTINGS]
        spans = [(int(lows[i]), int(highs[i])) for i in np.sort(kept if len(kept) else order[:1])]
        chunks = np.concatenate([indices[lo:hi] for lo, hi in spans])
        weights = np.concatenate([data[lo:hi] for lo, hi in spans])
        scores = np.bincount(chunks, weights=weights, minlength=len(self.lines))
        if exclude_path in self._path_ids:
            scores[self._owner == self._path_ids[exclude_path]] = 0.0
        k = min(k, len(scores))
        top = np.argpartition(-scores, k - 1)[:k]
        ranked = sorted(((float(scores[i]), int(i)) for i in top if scores[i] > 0), reverse=True)
        return [
            (ChunkRef(self.paths[self._owner[i]], int(self.lines[i, 0]), int(self.lines[i, 1])), s)
            for s, i in ranked
        ]
