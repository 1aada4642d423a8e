"""Duplicates and evaluation leaks, all by hashing.

- exact: sha256 of the file's bytes;
- near: MinHash over word 5-grams, LSH at a Jaccard threshold (datasketch),
  then the estimated Jaccard against the candidates to confirm;
- evaluation leak: 5-line windows of HumanEval-X prompts, solutions and tests,
  whitespace-normalised and hashed; any window found in a file refuses it.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

WORD = re.compile(r"\w+")
SHINGLE = 5
LEAK_WINDOW = 5  # lines
LEAK_MIN_CHARS = 80  # a window shorter than this is boilerplate (imports, braces)


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class NearDuplicates:
    """Keeps the first of each group of near-identical files, in the order offered."""

    def __init__(self, threshold: float, num_perm: int = 128, seed: int = 1) -> None:
        from datasketch import MinHashLSH

        self.threshold, self.num_perm, self.seed = threshold, num_perm, seed
        self.lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
        self.kept: dict[str, Any] = {}

    def minhash(self, text: str) -> Any:
        from datasketch import MinHash

        words = WORD.findall(text)
        shingles = {
            " ".join(words[i : i + SHINGLE]) for i in range(max(len(words) - SHINGLE + 1, 1))
        }
        m = MinHash(num_perm=self.num_perm, seed=self.seed)
        m.update_batch([s.encode("utf-8") for s in shingles])
        return m

    def is_duplicate(self, key: str, text: str) -> bool:
        """True if `text` nearly equals a file kept before; otherwise keep it."""
        m = self.minhash(text)
        for other in self.lsh.query(m):
            if m.jaccard(self.kept[other]) >= self.threshold:
                return True
        self.lsh.insert(key, m)
        self.kept[key] = m
        return False


def _normal_lines(text: str) -> list[str]:
    # spacing and indentation differ between copies; lines of only punctuation
    # ("}", "*/") carry nothing
    lines = (" ".join(line.split()) for line in text.splitlines())
    return [line for line in lines if sum(c.isalnum() for c in line) >= 2]


def _windows(text: str) -> set[bytes]:
    lines = _normal_lines(text)
    out = set()
    for i in range(max(len(lines) - LEAK_WINDOW + 1, 0)):
        window = "\n".join(lines[i : i + LEAK_WINDOW])
        if len(window) >= LEAK_MIN_CHARS:
            out.add(hashlib.blake2b(window.encode("utf-8"), digest_size=16).digest())
    return out


class EvalLeakIndex:
    """Window hashes of every problem in a HumanEval-X directory (*.jsonl.gz)."""

    def __init__(self, directory: Path) -> None:
        files = sorted(Path(directory).glob("*.jsonl*"))
        if not files:
            raise FileNotFoundError(f"no *.jsonl.gz evaluation files in {directory}")
        owners: dict[bytes, set[str]] = defaultdict(set)
        digest = hashlib.sha256()
        for path in files:
            data = path.read_bytes()
            digest.update(data)
            raw = gzip.decompress(data) if path.suffix == ".gz" else data
            for line in raw.decode("utf-8").splitlines():
                if not line.strip():
                    continue
                problem = json.loads(line)
                task = f"{path.name}:{problem.get('task_id')}"
                solved = problem.get("prompt", "") + problem.get("canonical_solution", "")
                for part in (solved, problem.get("test", "")):
                    for window in _windows(part):
                        owners[window].add(task)
        # a window shared by several problems is the language's boilerplate
        # (includes, a test harness), not a problem: it would refuse innocent code
        self.hashes = {w for w, tasks in owners.items() if len(tasks) == 1}
        self.files = [p.name for p in files]
        self.sha256 = digest.hexdigest()

    def leaks(self, text: str) -> bool:
        return not self.hashes.isdisjoint(_windows(text))
