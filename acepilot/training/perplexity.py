"""Next-token loss on held-out code, and the count baselines that give it meaning.

- `token_stream` / `token_windows`: held-out texts as one EOS-separated token
  stream, cut into consecutive windows of the training length;
- `model_loss`: mean cross-entropy of a PyTorch model over those windows;
  `onnx_token_losses`: the same through a built graph, one token per step
  with the KV cache, as the server decodes (so it is the served artifact's);
- `BigramModel`: token unigram and bigram counts from the training side with
  the model's own tokenizer: the baselines a trained model must beat
  (`baselines`), and the greedy bigram continuation that line-completion
  evaluation compares against.

Used by the test fixtures' training record (acepilot/training/tiny/),
acepilot-tiny's evaluation (acepilot/training/bootstrap/evaluate.py) and
`acepilot eval completion`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from transformers import CodeGenForCausalLM

    from acepilot.server.registry import ModelEntry


def token_stream(tokenizer: Any, texts: Sequence[str], eos: int) -> list[int]:
    """All texts tokenized and packed into one stream, each followed by EOS."""
    ids: list[int] = []
    for encoding in tokenizer(list(texts), add_special_tokens=False, verbose=False)["input_ids"]:
        ids.extend(encoding)
        ids.append(eos)
    return ids


def token_windows(stream: Sequence[int], seq_len: int, max_tokens: int) -> list[list[int]]:
    """Consecutive non-overlapping windows covering at most `max_tokens` predictions."""
    windows = []
    predicted = 0
    for start in range(0, len(stream) - 1, seq_len):
        window = list(stream[start : start + seq_len])
        if len(window) < 2 or predicted >= max_tokens:
            break
        windows.append(window)
        predicted += len(window) - 1
    return windows


def text_windows(tokenizer: Any, text: str, seq_len: int) -> list[list[int]]:
    """`text` tokenized and cut into windows for `model_loss`."""
    ids = tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
    return token_windows(ids, seq_len, len(ids))


def model_loss(model: CodeGenForCausalLM, windows: Sequence[Sequence[int]]) -> float:
    """Mean next-token cross-entropy (nats) over all predicted tokens of the windows."""
    import torch

    total, count = 0.0, 0
    model.eval()
    with torch.no_grad():
        for window in windows:
            ids = torch.tensor([list(window)])
            logits = model(input_ids=ids).logits[0, :-1].float()
            loss = torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="sum")
            total += float(loss)
            count += len(window) - 1
    return total / count


def onnx_token_losses(
    entry: ModelEntry, windows: Iterable[Sequence[int]], *, progress: bool = True
) -> tuple[float, int]:
    """Summed next-token cross-entropy (nats) and the count, through the built graph."""
    losses = onnx_window_losses(entry, windows, progress=progress)
    return sum(total for total, _ in losses), sum(count for _, count in losses)


def onnx_window_losses(
    entry: ModelEntry,
    windows: Iterable[Sequence[int]],
    *,
    progress: bool = True,
    desc: str = "perplexity",
) -> list[tuple[float, int]]:
    """Each window's summed next-token cross-entropy (nats) and count, through the graph.

    One token per step with the KV cache, as the server decodes: the graph
    returns only the last position's logits, so this is also the only way.
    """
    from tqdm import tqdm

    from acepilot.server.build.graph_io import GraphStepper, ManifestLayout

    manifest = entry.manifest
    shape = ManifestLayout.of(manifest)  # any family: KV heads may be fewer than heads
    stepper = GraphStepper(entry.graph_path, shape, manifest["graph"]["kv_dtype"], "cpu")
    windows = list(windows)
    losses: list[tuple[float, int]] = []
    bar = tqdm(total=sum(len(w) - 1 for w in windows), desc=desc, disable=not progress)
    for window in windows:
        if len(window) > shape.max_length:
            raise ValueError(f"window of {len(window)} tokens exceeds {shape.max_length}")
        total = 0.0
        for position in range(len(window) - 1):
            logits = stepper([int(window[position])], position).astype(np.float64)
            top = logits.max()
            log_z = top + math.log(float(np.exp(logits - top).sum()))
            total += log_z - float(logits[int(window[position + 1])])
        losses.append((total, len(window) - 1))
        bar.update(len(window) - 1)
    bar.close()
    return losses


class BigramModel:
    """Token bigram counts with add-one unigram back-off, for greedy lines and perplexity.

    Uses the evaluated model's own tokenizer, so perplexities are per the
    same tokens. Greedy completion follows the most frequent successor of
    the last token until a newline (or `max_tokens`).
    """

    def __init__(self, train_ids: Sequence[int] | np.ndarray, vocab: int) -> None:
        train = np.asarray(train_ids, dtype=np.int64)
        if len(train) < 2:
            raise ValueError("the bigram model needs at least two training tokens")
        if train.max() >= vocab or train.min() < 0:
            raise ValueError(f"token ids must be in [0, {vocab})")
        self.vocab = vocab
        self.train = train
        counts = np.bincount(train, minlength=vocab).astype(np.float64)
        self.unigram = (counts + 1.0) / (len(train) + vocab)
        codes, pair_counts = np.unique(train[:-1] * vocab + train[1:], return_counts=True)
        self.pair_counts = dict(zip(codes.tolist(), pair_counts.tolist(), strict=True))
        self.context_counts = np.bincount(train[:-1], minlength=vocab)
        # most frequent successor per token: sort by (prev, count) and keep each prev's last
        order = np.lexsort((pair_counts, codes // vocab))
        prev = (codes // vocab)[order]
        last = np.r_[prev[1:] != prev[:-1], True]
        self.successor = np.full(vocab, int(np.argmax(counts)), dtype=np.int64)
        self.successor[prev[last]] = (codes % vocab)[order][last]

    def greedy(self, last_token: int, steps: int) -> list[int]:
        out = []
        token = last_token
        for _ in range(steps):
            token = int(self.successor[token])
            out.append(token)
        return out

    def baselines(self, windows: Sequence[Sequence[int]]) -> dict[str, float]:
        """Cross-entropy (nats/token) of count-based models on the windows' targets.

        uniform; unigram: training counts with add-one smoothing; bigram:
        training bigram counts interpolated with that unigram, the weight
        chosen *on these very tokens* from a grid, which flatters the baseline
        (a model that beats it beats any fixed interpolation weight).
        """
        vocab = self.vocab
        previous = np.concatenate([np.asarray(w[:-1], dtype=np.int64) for w in windows])
        targets = np.concatenate([np.asarray(w[1:], dtype=np.int64) for w in windows])
        pairs = np.array(
            [self.pair_counts.get(code, 0) for code in (previous * vocab + targets).tolist()],
            dtype=np.float64,
        )
        contexts = self.context_counts[previous].astype(np.float64)
        bigram_ml = np.divide(pairs, contexts, out=np.zeros_like(pairs), where=contexts > 0)
        p_unigram = self.unigram[targets]
        best = min(
            float(-np.log(weight * bigram_ml + (1 - weight) * p_unigram).mean())
            for weight in np.linspace(0.05, 0.95, 19)
        )
        return {
            "uniform": math.log(vocab),
            "unigram": float(-np.log(p_unigram).mean()),
            "bigram": best,
        }

    def cross_entropy(self, windows: Sequence[Sequence[int]]) -> float:
        """Nats per predicted token on `windows` of the interpolated bigram (`baselines`)."""
        return self.baselines(windows)["bigram"]


__all__ = [
    "BigramModel",
    "model_loss",
    "onnx_token_losses",
    "text_windows",
    "token_stream",
    "token_windows",
]
