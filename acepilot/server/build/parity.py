"""The parity gate: the built graph against the PyTorch reference.

fp32 must match exactly (max |Δlogits| ≤ 1e-4, 100% greedy agreement over 32
tokens). Reduced precisions are judged by what users feel: relative logit
error, teacher-forced top-1 agreement and the perplexity change on held-out
code. The thresholds and why they are where they are: docs/parity.md.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from acepilot.server.errors import BuildError

GREEDY_TOKENS = 32
MAX_EVAL_TOKENS = 256

# (max relative logit error, min top-1 agreement, max perplexity increase)
THRESHOLDS: dict[str, tuple[float, float, float]] = {
    "fp32": (1e-5, 1.0, 1e-4),
    "fp16": (0.01, 0.98, 0.01),
    "int8": (0.05, 0.95, 0.03),
    "int4": (0.20, 0.85, 0.10),
}
FP32_MAX_ABS_LOGIT_ERROR = 1e-4

PARITY_PROMPTS = (
    "def fibonacci(n):\n    ",
    "import os\nimport sys\n\n\ndef main(argv):\n    for arg in argv:\n        ",
    "class Stack:\n    def __init__(self):\n        self.items = []\n\n    def push(self, item):\n",
)

# Held-out code for perplexity: not from any training corpus the tests use.
EVAL_TEXT = '''\
def merge_sorted(left, right):
    """Merge two sorted lists into one sorted list."""
    result = []
    i = j = 0
    while i < len(left) and j < len(right):
        if left[i] <= right[j]:
            result.append(left[i])
            i += 1
        else:
            result.append(right[j])
            j += 1
    result.extend(left[i:])
    result.extend(right[j:])
    return result


def word_counts(text):
    counts = {}
    for word in text.split():
        word = word.strip(".,;:!?").lower()
        if word:
            counts[word] = counts.get(word, 0) + 1
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))


class LRUCache:
    def __init__(self, capacity):
        self.capacity = capacity
        self.data = {}

    def get(self, key, default=None):
        if key not in self.data:
            return default
        value = self.data.pop(key)
        self.data[key] = value
        return value

    def put(self, key, value):
        self.data.pop(key, None)
        self.data[key] = value
        if len(self.data) > self.capacity:
            del self.data[next(iter(self.data))]
'''

StepFn = Callable[[Sequence[int], int], np.ndarray]
"""step(new_token_ids, cached_length) -> logits of the last new token (float32 [vocab])."""


@dataclass
class ParityReport:
    precision: str
    results: dict[str, Any]
    failures: list[str]

    @property
    def passed(self) -> bool:
        return not self.failures


def reference_logits(model: Any, ids: Sequence[int]) -> np.ndarray:
    """PyTorch logits at every position, float32 [len(ids), vocab]."""
    import torch

    with torch.no_grad():
        out = model(torch.tensor([list(ids)], dtype=torch.long)).logits[0]
    return out.float().numpy()


def reference_greedy(model: Any, prompt: Sequence[int], n: int) -> list[int]:
    import torch

    ids = list(prompt)
    past = None
    new: list[int] = []
    with torch.no_grad():
        step_ids = torch.tensor([ids], dtype=torch.long)
        for _ in range(n):
            out = model(step_ids, past_key_values=past, use_cache=True)
            past = out.past_key_values
            token = int(out.logits[0, -1].argmax())
            new.append(token)
            step_ids = torch.tensor([[token]], dtype=torch.long)
    return new


def artifact_teacher_forced(step: StepFn, ids: Sequence[int]) -> np.ndarray:
    """Artifact logits for positions 0..len-1, fed one token at a time (the decode path)."""
    return np.stack([step([token], i) for i, token in enumerate(ids)])


def artifact_greedy(step: StepFn, prompt: Sequence[int], n: int) -> list[int]:
    logits = step(prompt, 0)
    cached = len(prompt)
    new: list[int] = []
    for _ in range(n):
        token = int(np.argmax(logits))
        new.append(token)
        logits = step([token], cached)
        cached += 1
    return new


def log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def perplexity(logits: np.ndarray, targets: Sequence[int]) -> float:
    logp = log_softmax(logits.astype(np.float64))
    nll = -logp[np.arange(len(targets)), np.asarray(targets)]
    return float(math.exp(nll.mean()))


def check_parity(
    precision: str,
    model: Any,
    step: StepFn,
    encode: Callable[[str], list[int]],
    max_length: int,
    eval_text: str = EVAL_TEXT,
) -> ParityReport:
    """Compare artifact and reference; `step` must start a fresh sequence at cached length 0."""
    max_abs, greedy_same, greedy_total = 0.0, 0, 0
    for prompt in PARITY_PROMPTS:
        prompt_ids = encode(prompt)[: max_length - GREEDY_TOKENS - 1]
        expected = reference_greedy(model, prompt_ids, GREEDY_TOKENS)
        got = artifact_greedy(step, prompt_ids, GREEDY_TOKENS)
        agree = next(
            (i for i, (a, b) in enumerate(zip(expected, got, strict=True)) if a != b), GREEDY_TOKENS
        )
        greedy_same += agree
        greedy_total += GREEDY_TOKENS
        full = prompt_ids + expected
        ref = reference_logits(model, full)[len(prompt_ids) - 1 :]
        art = artifact_teacher_forced(step, full)[len(prompt_ids) - 1 :]
        max_abs = max(max_abs, float(np.abs(ref - art).max()))

    ids = encode(eval_text)[: min(MAX_EVAL_TOKENS, max_length)]
    if len(ids) < 16:
        raise BuildError("parity: the held-out evaluation text is too short for this tokenizer")
    ref = reference_logits(model, ids)[:-1]
    art = artifact_teacher_forced(step, ids)[:-1]
    targets = ids[1:]
    rel_error = float(np.mean(np.linalg.norm(art - ref, axis=-1) / np.linalg.norm(ref, axis=-1)))
    top1 = float(np.mean(art.argmax(-1) == ref.argmax(-1)))
    ppl_ref, ppl_art = perplexity(ref, targets), perplexity(art, targets)
    results: dict[str, Any] = {
        "max_abs_logit_error": max_abs,
        "greedy_agreement": greedy_same / greedy_total,
        "greedy_tokens": greedy_total,
        "relative_logit_error": rel_error,
        "top1_agreement": top1,
        "eval_tokens": len(targets),
        "perplexity_reference": ppl_ref,
        "perplexity": ppl_art,
        "perplexity_change": ppl_art / ppl_ref - 1.0,
    }
    max_rel, min_top1, max_ppl = THRESHOLDS[precision]
    failures = []
    if precision == "fp32":
        if max_abs > FP32_MAX_ABS_LOGIT_ERROR:
            failures.append(f"max |Δlogits| {max_abs:.3g} > {FP32_MAX_ABS_LOGIT_ERROR}")
        if greedy_same != greedy_total:
            failures.append(f"greedy agreement {greedy_same}/{greedy_total} tokens, expected all")
    if rel_error > max_rel:
        failures.append(f"relative logit error {rel_error:.3g} > {max_rel}")
    if top1 < min_top1:
        failures.append(f"top-1 agreement {top1:.3f} < {min_top1}")
    if results["perplexity_change"] > max_ppl:
        failures.append(f"perplexity change {results['perplexity_change']:+.2%} > {max_ppl:+.0%}")
    from acepilot.server.metrics_check import nonfinite_failures  # a NaN exceeds no threshold

    failures.extend(nonfinite_failures(results))
    results["thresholds"] = {
        "max_relative_logit_error": max_rel,
        "min_top1_agreement": min_top1,
        "max_perplexity_change": max_ppl,
        **({"max_abs_logit_error": FP32_MAX_ABS_LOGIT_ERROR} if precision == "fp32" else {}),
    }
    return ParityReport(precision, results, failures)
