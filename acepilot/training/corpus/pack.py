"""Packed rows: fixed-length token sequences cut from documents separated by EOS.

(The documents' fill-in-the-middle form is made on their text, before
tokenizing: acepilot/training/corpus/fim.py.)

The packed split is a 2-D `.npy` (sequences x seq_len) that training opens with
`np.load(..., mmap_mode="r")`, so a corpus larger than memory trains as well.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def token_dtype(vocab_size: int) -> type[np.unsignedinteger[Any]]:
    return np.uint16 if vocab_size <= np.iinfo(np.uint16).max + 1 else np.uint32


def fim_token_ids(tokenizer: Any, tokens: tuple[str, str, str]) -> tuple[int, int, int]:
    """The ids of the prefix, suffix and middle sentinels; each must be one token."""
    ids = []
    for token in tokens:
        id_ = tokenizer.convert_tokens_to_ids(token)
        if id_ is None or id_ == tokenizer.unk_token_id:
            raise ValueError(f"FIM token {token!r} is not in the tokenizer's vocabulary")
        ids.append(int(id_))
    return ids[0], ids[1], ids[2]


class Packer:
    """Concatenates documents, each followed by EOS, and cuts the stream into rows
    of `seq_len`. The stream goes to a raw file as it grows (memory stays flat
    however large the corpus); the tail that does not fill a row is dropped and
    counted."""

    def __init__(self, path: Path, seq_len: int, eos_id: int, dtype: Any) -> None:
        self.path, self.seq_len, self.eos_id, self.dtype = path, seq_len, eos_id, dtype
        self.raw_path = path.with_suffix(".stream")
        self.raw = open(self.raw_path, "wb")  # noqa: SIM115 - closed in finish()
        self.tokens = 0
        self.documents = 0

    def add(self, ids: list[int]) -> None:
        np.asarray([*ids, self.eos_id], dtype=self.dtype).tofile(self.raw)
        self.tokens += len(ids) + 1
        self.documents += 1

    def finish(self) -> dict[str, int]:
        """Write `path` (.npy, sequences x seq_len) and return the counts."""
        self.raw.close()
        rows = self.tokens // self.seq_len
        out = np.lib.format.open_memmap(
            self.path, mode="w+", dtype=self.dtype, shape=(rows, self.seq_len)
        )
        if rows:
            stream = np.memmap(self.raw_path, dtype=self.dtype, mode="r")
            out[:] = stream[: rows * self.seq_len].reshape(rows, self.seq_len)
            del stream
        out.flush()
        del out
        self.raw_path.unlink()
        return {
            "documents": self.documents,
            "tokens": self.tokens,
            "sequences": rows,
            "dropped_tail_tokens": self.tokens - rows * self.seq_len,
        }
