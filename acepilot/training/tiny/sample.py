"""The test models' code sample: this interpreter's standard library, some files held out.

Present on every machine, permissively licensed, real code. The files are
found and read by acepilot-tiny's own source functions
(acepilot/training/bootstrap/sources.py: the same walk, excluded folders and
name hash), and a deterministic part of them is never trained on:
`held_out_text` serves it for perplexity checks.

Held out here by *file* (a hash of its path), not by package as the shipped
model's evaluation is: the fixtures need held-out code that looks like their
training code (their quality checks are calibrated on it), not a measure of
generalisation to unseen packages.
"""

from __future__ import annotations

import functools
import hashlib
import sysconfig
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from acepilot.training.bootstrap.sources import name_hash, python_stdlib, read_code


@dataclass(frozen=True)
class CodeSample:
    """Standard-library files split into training files and held-out files.

    `held_out` files are never used to train a tokenizer or a model, so
    perplexity measured on them is honest. Both lists are in a fixed order.
    """

    root: Path
    train: tuple[Path, ...]
    held_out: tuple[Path, ...]

    def fingerprint(self) -> str:
        """A hash of the files' names and contents: training caches key on it."""
        digest = hashlib.sha256()
        for label, files in (("train", self.train), ("held_out", self.held_out)):
            digest.update(label.encode() + b"\0")
            for path in files:
                digest.update(path.relative_to(self.root).as_posix().encode() + b"\0")
                digest.update(hashlib.sha256(path.read_bytes()).digest())
        return digest.hexdigest()


@functools.cache
def code_sample_files(
    *,
    held_out_every: int = 12,
    max_file_bytes: int = 120_000,
    max_train_bytes: int = 4_000_000,
    max_held_out_bytes: int = 400_000,
) -> CodeSample:
    """A deterministic sample of standard-library Python files (cached per arguments).

    A file is held out when the hash of its path (relative to the standard
    library) is divisible by `held_out_every`, so the split depends only on
    names and never moves when a budget changes. Empty files, files over
    `max_file_bytes` and non-UTF-8 files are skipped. Within each side files
    are taken in hash order until the byte budget is spent, which spreads a
    partial budget over the whole library instead of the alphabetically first
    packages.
    """
    if held_out_every < 2:
        raise ValueError(f"held_out_every must be at least 2, got {held_out_every}")
    root = Path(sysconfig.get_paths()["stdlib"])
    candidates: list[tuple[int, str, Path]] = []
    for _, relative, path, _ in python_stdlib(root):
        size = path.stat().st_size
        if 0 < size <= max_file_bytes:
            name = relative.removeprefix("python/")
            candidates.append((name_hash(name), name, path))
    candidates.sort()
    train: list[Path] = []
    held_out: list[Path] = []
    budgets = {"train": max_train_bytes, "held_out": max_held_out_bytes}
    for number, _, path in candidates:
        side, files = ("held_out", held_out) if number % held_out_every == 0 else ("train", train)
        size = path.stat().st_size
        if size <= budgets[side] and read_code(path) is not None:
            files.append(path)
            budgets[side] -= size
    if not train or not held_out:
        raise RuntimeError(f"{root}: too few Python files for a code sample")
    return CodeSample(root, tuple(train), tuple(held_out))


def read_texts(files: Sequence[Path]) -> list[str]:
    """The files' texts, in order, skipping any that are not UTF-8."""
    texts = []
    for path in files:
        text = read_code(path)
        if text is not None:
            texts.append(text)
    return texts


def held_out_text(max_chars: int = 20_000, sample: CodeSample | None = None) -> str:
    """Code that no tiny tokenizer or model here was trained on, for perplexity checks.

    Whole held-out files in a fixed order, separated by blank lines, cut at
    `max_chars` (at a line end when there is one).
    """
    sample = sample or code_sample_files()
    parts: list[str] = []
    used = 0
    for text in read_texts(sample.held_out):
        parts.append(text.rstrip("\n") + "\n\n\n")
        used += len(parts[-1])
        if used >= max_chars:
            break
    joined = "".join(parts)[:max_chars]
    cut = joined.rfind("\n")
    return joined[: cut + 1] if cut > max_chars // 2 else joined


__all__ = ["CodeSample", "code_sample_files", "held_out_text", "read_texts"]
