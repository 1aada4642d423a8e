"""Held-out log-likelihood per file, as paired metrics for the gate.

Why the gate needs it: in the Vue story (docs/vue-story.md) a fine-tune made
every other language worse — perplexity up 17% (JavaScript) to 125% (Rust) —
and the gate promoted it, because what it guarded (HumanEval pass@1, line exact
match and edit similarity) hardly moves for a small model. The likelihood of
held-out code moves with every token the model predicts, so it sees such harm
long before pass@1 does.

One item per held-out file: the model reads an end-of-text token and then the
file's first `chars` characters, one token per step through the built graph
(the served artefact, as `perplexity.onnx_token_losses` does), and the item's
score is minus the summed next-token cross-entropy divided by the characters
predicted (nats per character, higher is better). Per character rather than per
token so that a candidate with another tokenizer is still comparable. Files are
sampled per language (seeded), so the paired bootstrap of the gate compares the
same files on both sides. Metrics: `completion:<language>:log_likelihood` and
`completion:domain:<domain>:log_likelihood`.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from acepilot.server.registry import ModelEntry
from acepilot.training.eval.line_tasks import MAX_FILE_BYTES, domain_of, language_of


def sample_files(
    files: Sequence[tuple[Path, Path]], per_language: int, seed: int
) -> list[tuple[Path, Path]]:
    """At most `per_language` readable files of each language, the same for every model."""
    by_language: dict[str, list[tuple[Path, Path]]] = defaultdict(list)
    for root, path in files:
        language = language_of(path.name)
        if language is not None:
            by_language[language].append((root, path))
    rng = random.Random(seed)
    chosen: list[tuple[Path, Path]] = []
    for language in sorted(by_language):
        candidates = sorted(by_language[language])
        rng.shuffle(candidates)
        chosen.extend(candidates[:per_language])
    return chosen


def read_head(path: Path, chars: int) -> str | None:
    """The file's first `chars` characters, or None for unreadable, binary or empty files."""
    try:
        data = path.read_bytes()
        if len(data) > MAX_FILE_BYTES:
            return None
        text = data.decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    head = text[:chars]
    return head if head.strip() else None


def file_log_likelihoods(
    entry: ModelEntry,
    files: Sequence[tuple[Path, Path]],
    chars: int,
    *,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """One item per readable file: id, language, domain, nats per character (negative)."""
    from tokenizers import Tokenizer
    from tqdm import tqdm

    from acepilot.training.perplexity import onnx_window_losses

    tokenizer = Tokenizer.from_file(str(entry.tokenizer_path))
    token_info = entry.manifest["tokenizer"]
    start = token_info.get("bos_token_id")
    start = token_info.get("eos_token_id") if start is None else start
    max_length = int(entry.manifest["graph"]["max_length"])
    windows: list[list[int]] = []
    meta: list[tuple[str, str, str, int]] = []
    for root, path in files:
        head = read_head(path, chars)
        if head is None:
            continue
        ids = tokenizer.encode(head, add_special_tokens=False).ids[: max_length - 1]
        # Without a start token the first token is context only, not predicted.
        window = [int(start), *ids] if start is not None else ids
        predicted = tokenizer.decode(window[1:], skip_special_tokens=False)
        if len(window) < 2 or not predicted:
            continue
        relative = path.relative_to(root).as_posix()
        language = language_of(path.name) or "unknown"
        meta.append(
            (f"{root.as_posix()}::{relative}", language, domain_of(relative), len(predicted))
        )
        windows.append(window)
    items = []
    losses = onnx_window_losses(entry, windows, progress=progress, desc="log-likelihood")
    for (item_id, language, domain, count), (total, _) in zip(meta, losses, strict=True):
        items.append(
            {
                "id": item_id,
                "language": language,
                "domain": domain,
                "log_likelihood": -total / count,
            }
        )
    if progress:
        tqdm.write(f"log-likelihood: {len(items)} files")
    return items
