"""Choosing the next token from logits, in numpy: greedy, temperature and top-p."""

from __future__ import annotations

import numpy as np

# Top-p first looks at this many of the most probable tokens (a partition, cheap),
# and sorts all probabilities only when they do not reach top_p.
TOP_P_CANDIDATES = 1024
# Tokens whose scaled logit is this far below the best have probability < e^-40:
# below float64 resolution of a sum near 1, so dropping them first changes nothing.
NEGLIGIBLE_LOGIT = 40.0


def sample(logits: np.ndarray, temperature: float, top_p: float, rng: np.random.Generator) -> int:
    """One token id. temperature 0 is greedy (argmax; ties go to the lowest id)."""
    if temperature <= 0.0:
        return int(np.argmax(logits))
    scaled = logits.astype(np.float64) / temperature
    best = scaled.max()
    candidates = np.flatnonzero(scaled > best - NEGLIGIBLE_LOGIT)
    probs = np.exp(scaled[candidates] - best)
    probs /= probs.sum()
    if top_p < 1.0:
        inside = nucleus(probs, top_p)
        candidates, probs = candidates[inside], probs[inside]
    cumulative = np.cumsum(probs)
    pick = int(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right"))
    return int(candidates[min(pick, candidates.size - 1)])


def nucleus(probs: np.ndarray, top_p: float) -> np.ndarray:
    """Indices of the smallest set of most probable tokens whose probability reaches top_p.

    Tokens tied with the least probable member are all kept. Sorting the
    probabilities' values (not an argsort) finds the threshold; the indices
    come back in increasing order.
    """
    if probs.size > TOP_P_CANDIDATES:
        ranked = np.sort(np.partition(probs, -TOP_P_CANDIDATES)[-TOP_P_CANDIDATES:])[::-1]
        cumulative = np.cumsum(ranked)
        if cumulative[-1] < top_p:  # a flat distribution: the nucleus is wider
            ranked = np.sort(probs)[::-1]
            cumulative = np.cumsum(ranked)
    else:
        ranked = np.sort(probs)[::-1]
        cumulative = np.cumsum(ranked)
    size = min(int(np.searchsorted(cumulative, top_p, side="left")) + 1, ranked.size)
    return np.flatnonzero(probs >= ranked[size - 1])
