"""Line completion, scored: exact match and edit similarity, grouped by language and domain.

- Exact match: prediction == target, ignoring trailing whitespace only
  (leading whitespace after a mid-line cursor matters: `x =` + ` 1`).
- Edit similarity: 1 - Levenshtein(prediction, target) / max(len), the
  CodeXGLUE / Copilot-paper measure; 1.0 for two empty strings.
- `evaluate` runs every predictor on every position and sums the scores
  overall, per language and per domain; `format_table` prints them.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from acepilot.training.eval.line_predictors import FimPredictor, Predictor
from acepilot.training.eval.line_tasks import LineTask


def levenshtein(a: str, b: str) -> int:
    """Edit distance (insertions, deletions, substitutions of characters)."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, 1):
        current = [i]
        for j, char_b in enumerate(b, 1):
            current.append(
                min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (char_a != char_b))
            )
        previous = current
    return previous[-1]


def normalize(text: str) -> str:
    """What is compared: the first line, without trailing whitespace."""
    return text.split("\n", 1)[0].rstrip()


def exact_match(prediction: str, target: str) -> bool:
    return normalize(prediction) == normalize(target)


def edit_similarity(prediction: str, target: str) -> float:
    """1 - edit distance / the longer length, on normalized text; in [0, 1]."""
    a, b = normalize(prediction), normalize(target)
    longest = max(len(a), len(b))
    if longest == 0:
        return 1.0
    return 1.0 - levenshtein(a, b) / longest


@dataclass
class Scores:
    """Sums for one group of positions; `summary` gives the means."""

    n: int = 0
    exact: int = 0
    similarity: float = 0.0

    def add(self, prediction: str, target: str) -> None:
        self.n += 1
        self.exact += exact_match(prediction, target)
        self.similarity += edit_similarity(prediction, target)

    def summary(self) -> dict[str, float | int]:
        return {
            "n": self.n,
            "exact_match": self.exact / self.n if self.n else math.nan,
            "edit_similarity": self.similarity / self.n if self.n else math.nan,
        }


@dataclass
class PredictorReport:
    overall: Scores = field(default_factory=Scores)
    languages: dict[str, Scores] = field(default_factory=lambda: defaultdict(Scores))
    domains: dict[str, Scores] = field(default_factory=lambda: defaultdict(Scores))
    examples: list[dict[str, Any]] = field(default_factory=list)

    def add(self, task: LineTask, prediction: str, keep_example: bool) -> None:
        for scores in (self.overall, self.languages[task.language], self.domains[task.domain]):
            scores.add(prediction, task.target)
        if keep_example:
            self.examples.append(
                {
                    "path": task.path,
                    "line": task.line,
                    "column": task.column,
                    "target": task.target,
                    "prediction": normalize(prediction),
                }
            )

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.overall.summary(),
            "languages": {k: v.summary() for k, v in sorted(self.languages.items())},
            "domains": {k: v.summary() for k, v in sorted(self.domains.items())},
        }


def evaluate(
    tasks: Sequence[LineTask],
    predictors: Mapping[str, Predictor | FimPredictor],
    *,
    progress: bool = True,
    keep_examples: int = 0,
) -> dict[str, PredictorReport]:
    """Run every predictor on every task; the first `keep_examples` predictions are kept."""
    from tqdm import tqdm

    reports = {name: PredictorReport() for name in predictors}
    for index, task in enumerate(
        tqdm(tasks, desc="line completion", unit="line", disable=not progress)
    ):
        for name, predict in predictors.items():
            if isinstance(predict, FimPredictor):
                prediction = predict(task.prefix, task.suffix)
            else:
                prediction = predict(task.prefix)
            reports[name].add(task, prediction, index < keep_examples)
    return reports


def format_table(results: Mapping[str, Mapping[str, Any]], group: str | None = None) -> str:
    """A plain-text table: one row per predictor (and per group member when `group` is set)."""
    header = f"{'predictor':<22} {'group':<18} {'n':>5} {'exact':>7} {'edit sim':>9}"
    rows = [header, "-" * len(header)]
    for name, result in results.items():
        members = [("all", result)] if group is None else list(result.get(group, {}).items())
        for member, scores in members:
            rows.append(
                f"{name:<22} {member[:18]:<18} {scores['n']:>5} "
                f"{scores['exact_match']:>7.1%} {scores['edit_similarity']:>9.3f}"
            )
    return "\n".join(rows)


__all__ = [
    "PredictorReport",
    "Scores",
    "edit_similarity",
    "evaluate",
    "exact_match",
    "format_table",
    "levenshtein",
    "normalize",
]
