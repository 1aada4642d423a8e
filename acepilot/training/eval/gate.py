"""The gate: promote a candidate only if the target improves and no language regresses.

Inputs are evaluation results of the candidate and of the baseline (the
production model) on the same problems with the same settings, plus
optionally other baselines (e.g. a larger untouched model). Each result is
turned into metrics — one per HumanEval language ("humaneval:go") and, with
in-domain completion results, one per completion group and measure
("completion:vue:exact_match") — each a score per item (problem or cursor
position): the problem's pass fraction c/n, 0/1 exact match, or edit
similarity.

The policy (`GatePolicy`, a small config file; see docs/evaluation.md):

- target improvement: the `target` metric must improve by at least `delta`
  (absolute), and, with `require_significant_gain`, significantly (one-sided
  paired test at `alpha`);
- no regression: a guarded metric "regresses" when it drops by more than
  `epsilon` (`log_likelihood_epsilon` for held-out log-likelihoods, in nats per
  character; per-metric overrides in `epsilon_per_metric`) AND the paired
  one-sided test says the drop is real (p < alpha). A drop larger than epsilon
  that the test cannot tell from noise is reported as such and does not block;
  a large drop on few problems is a reason to evaluate more problems, and the
  report's intervals show it;
- paired tests on per-item results: McNemar's exact test (binomial on the
  discordant pairs) when every score is 0/1, otherwise a paired bootstrap of
  the mean difference (items resampled with replacement);
- other baselines: with `block_if_baseline_better`, a baseline that beats the
  candidate significantly on the target blocks promotion (the seed's lesson:
  the untouched bigger model beat the fine-tune even on its own domain).

A NaN or infinite score (or policy number) fails the gate: every comparison
with NaN is false, so it would otherwise pass every check.

`decide` returns a `GateDecision` with one row per metric (baseline,
candidate, difference, 95% interval of the difference, p-values, verdict)
and, from the caller, the production version and digest the candidate was
compared against (`production_record`): promotion refuses a gate whose
production has changed since. `write_report` writes gate.json (strict JSON),
report.md, report.html and PNG charts (rendered by gate_report.py).
"""

from __future__ import annotations

import fnmatch
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from acepilot.server.metrics_check import nonfinite_fields, reject_constant

if TYPE_CHECKING:
    from acepilot.server.registry import Registry

GATE_FILE = "gate.json"
FORMAT = 2  # 2: records the production it was run against (format 1 gates cannot be promoted)
GUARDED = ("humaneval:*", "completion:*:exact_match", "completion:*:log_likelihood")
VERDICTS = ("improved", "no change", "drop within epsilon", "drop within noise", "regression")


@dataclass(frozen=True)
class GatePolicy:
    target: str = ""  # metric that must improve, e.g. "humaneval:js"; "" = none
    delta: float = 0.0  # minimum absolute improvement of the target (0.02 = 2 points)
    require_significant_gain: bool = True  # the target's gain must also pass the paired test
    epsilon: float = 0.02  # largest tolerated absolute drop of a guarded metric
    epsilon_per_metric: dict = field(default_factory=dict)  # {"humaneval:rust": 0.05, ...}
    # Largest tolerated drop of a held-out log-likelihood (nats per character; 0.03 is about
    # 3% more perplexity per character) unless epsilon_per_metric names the metric.
    log_likelihood_epsilon: float = 0.03
    guarded: list = field(default_factory=lambda: list(GUARDED))  # must not regress (fnmatch)
    required: list = field(default_factory=list)  # metrics that must be present on both sides
    test: str = "auto"  # "mcnemar", "bootstrap" or "auto" (McNemar for 0/1 scores)
    alpha: float = 0.05  # one-sided significance level
    block_if_baseline_better: bool = True  # a better --baseline on the target blocks
    bootstrap_replicates: int = 10000  # paired bootstrap replicates
    seed: int = 0  # bootstrap seed

    def check(self) -> None:
        """Refuse settings that would make checks vacuous: a NaN epsilon, for one, made
        every drop "within epsilon" (comparisons with NaN are false)."""
        if self.test not in ("auto", "mcnemar", "bootstrap"):
            raise ValueError(f"test must be auto, mcnemar or bootstrap, got {self.test!r}")
        numbers = {
            "alpha": self.alpha,
            "epsilon": self.epsilon,
            "delta": self.delta,
            "log_likelihood_epsilon": self.log_likelihood_epsilon,
        }
        if not isinstance(self.epsilon_per_metric, dict):
            raise ValueError("epsilon_per_metric must be a dict of metric -> number")
        for metric, value in self.epsilon_per_metric.items():
            numbers[f"epsilon_per_metric[{metric!r}]"] = value
        for key, value in numbers.items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{key} must be a number, got {value!r}")
            if not math.isfinite(value):
                raise ValueError(f"{key} must be a finite number, got {value}")
            if value < 0:
                raise ValueError(f"{key} must be >= 0, got {value}")
        if not 0.0 < self.alpha < 0.5:
            raise ValueError(f"alpha must be a finite number in (0, 0.5), got {self.alpha}")
        if not 1 <= self.bootstrap_replicates <= 100_000:
            raise ValueError("bootstrap_replicates must be in [1, 100000]")

    def epsilon_for(self, metric: str) -> float:
        if metric in self.epsilon_per_metric:
            return float(self.epsilon_per_metric[metric])
        if metric.endswith(":log_likelihood"):
            return float(self.log_likelihood_epsilon)
        return float(self.epsilon)

    def is_guarded(self, metric: str) -> bool:
        return any(fnmatch.fnmatchcase(metric, pattern) for pattern in self.guarded)


Scores = dict[str, float]  # item id -> score


@dataclass(frozen=True)
class Results:
    """One model's evaluation: metrics (item scores), a label and where they came from."""

    label: str
    metrics: dict[str, Scores]
    settings_key: str | None = None
    model: dict[str, Any] = field(default_factory=dict)
    source: str = ""


def from_humaneval(summary: Mapping[str, Any], label: str, source: str = "") -> Results:
    """A HumanEval summary -> one metric per language, the problem's c/n per problem."""
    metrics = {
        f"humaneval:{language}": {task: pass_fraction(n, c, task) for task, (n, c) in tasks.items()}
        for language, tasks in summary["per_problem"].items()
    }
    return Results(label, metrics, summary.get("settings_key"), dict(summary["model"]), source)


def pass_fraction(n: Any, c: Any, task: str) -> float:
    """c/n of one problem, refusing counts no evaluation can produce (a summary is a file)."""
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (n, c)) or not 0 <= c <= n:
        raise ValueError(f"{task}: invalid pass counts n={n!r}, c={c!r}")
    return c / n if n else math.nan  # no samples: not a score (the gate refuses NaN)


def merge(base: Results, extra: Results) -> Results:
    """Add another evaluation's metrics (e.g. in-domain completion) to a result."""
    return Results(
        base.label, {**base.metrics, **extra.metrics}, base.settings_key, base.model, base.source
    )


@dataclass(frozen=True)
class Comparison:
    """Candidate vs one baseline on one metric (paired over the same items)."""

    metric: str
    items: int
    baseline: float
    candidate: float
    difference: float
    low: float  # 95% paired bootstrap interval of the difference
    high: float
    test: str
    p_worse: float  # one-sided: the candidate is worse
    p_better: float  # one-sided: the candidate is better
    epsilon: float
    guarded: bool
    verdict: str


def is_binary(values: np.ndarray) -> bool:
    return bool(np.all((values == 0.0) | (values == 1.0)))


def mcnemar(base: np.ndarray, cand: np.ndarray) -> tuple[float, float]:
    """Exact McNemar: (p that the candidate is worse, p that it is better), one-sided."""
    from scipy.stats import binomtest

    lost = int(np.sum((base == 1) & (cand == 0)))
    won = int(np.sum((base == 0) & (cand == 1)))
    if lost + won == 0:
        return 1.0, 1.0
    worse = binomtest(lost, lost + won, 0.5, alternative="greater").pvalue
    better = binomtest(won, lost + won, 0.5, alternative="greater").pvalue
    return float(worse), float(better)


def paired_bootstrap(
    base: np.ndarray, cand: np.ndarray, replicates: int, seed: int
) -> tuple[np.ndarray, float, float]:
    """Bootstrap distribution of mean(cand - base) over resampled items, and one-sided
    p-values: the share of replicates on the other side of zero (+1 smoothing)."""
    diffs = cand - base
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(diffs), size=(replicates, len(diffs)))
    means = diffs[picks].mean(axis=1)
    if not np.any(diffs):
        return means, 1.0, 1.0
    worse = (np.sum(means >= 0) + 1) / (replicates + 1)
    better = (np.sum(means <= 0) + 1) / (replicates + 1)
    return means, float(worse), float(better)


def compare(
    metric: str, base_scores: Scores, cand_scores: Scores, policy: GatePolicy
) -> Comparison:
    if set(base_scores) != set(cand_scores):
        only_base = sorted(set(base_scores) - set(cand_scores))[:5]
        only_cand = sorted(set(cand_scores) - set(base_scores))[:5]
        raise ValueError(
            f"{metric}: the two results are not on the same items (only in baseline: "
            f"{only_base}, only in candidate: {only_cand}); evaluate both with the same settings"
        )
    items = sorted(base_scores)
    if not items:
        raise ValueError(f"{metric}: no items")
    base = np.array([base_scores[i] for i in items], dtype=np.float64)
    cand = np.array([cand_scores[i] for i in items], dtype=np.float64)
    means, p_worse, p_better = paired_bootstrap(
        base, cand, policy.bootstrap_replicates, policy.seed
    )
    test = policy.test
    if test == "auto":
        test = "mcnemar" if is_binary(base) and is_binary(cand) else "bootstrap"
    if test == "mcnemar":
        if not (is_binary(base) and is_binary(cand)):
            raise ValueError(f"{metric}: McNemar needs 0/1 scores (use test='bootstrap')")
        p_worse, p_better = mcnemar(base, cand)
    low, high = np.percentile(means, [2.5, 97.5])
    difference = float(cand.mean() - base.mean())
    epsilon = policy.epsilon_for(metric)
    if difference < -epsilon - 1e-12:
        verdict = "regression" if p_worse < policy.alpha else "drop within noise"
    elif difference < 0:
        verdict = "drop within epsilon"
    elif difference > 0 and p_better < policy.alpha:
        verdict = "improved"
    else:
        verdict = "no change"
    return Comparison(
        metric,
        len(items),
        float(base.mean()),
        float(cand.mean()),
        difference,
        float(low),
        float(high),
        test,
        p_worse,
        p_better,
        epsilon,
        policy.is_guarded(metric),
        verdict,
    )


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    reasons: list[str]
    policy: dict[str, Any]
    candidate: dict[str, Any]
    baseline: dict[str, Any]
    rows: list[Comparison]
    target: dict[str, Any] | None
    others: list[dict[str, Any]]
    production: dict[str, Any] | None = None  # see production_record

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "decision": "promote" if self.promote else "reject",
            "promote": self.promote,
            "reasons": self.reasons,
            "policy": self.policy,
            "candidate": self.candidate,
            "baseline": self.baseline,
            "rows": [asdict(row) for row in self.rows],
            "target": self.target,
            "other_baselines": self.others,
            "production": self.production,
        }


def production_record(registry: Registry, name: str) -> dict[str, Any]:
    """What production of `name` is now: {name, version, digest} (version and digest
    None when there is none). A gate records it; promotion compares it with production
    at the moment of the flip, so a gate never replaces a model it was not compared with."""
    version = registry.production(name)
    digest = registry.entry(name, version).digest if version is not None else None
    return {"name": name, "version": version, "digest": digest}


def nonfinite_metrics(results: Results) -> dict[str, list[str]]:
    """metric -> items whose score is NaN or infinite."""
    found: dict[str, list[str]] = {}
    for metric, scores in results.metrics.items():
        bad = [item for item, value in scores.items() if not math.isfinite(float(value))]
        if bad:
            found[metric] = sorted(bad)
    return found


def decide(
    candidate: Results,
    baseline: Results,
    policy: GatePolicy,
    others: Sequence[Results] = (),
    *,
    production: Mapping[str, Any] | None = None,
) -> GateDecision:
    """Compare per metric and apply the policy (see the module docstring).

    `production`: what production was when the gate ran (`production_record`), kept
    in the decision for promotion to check; None when the gate is not about a
    registry model (such a gate cannot be promoted).
    """
    policy.check()
    reasons: list[str] = []  # what blocks promotion
    notes: list[str] = []  # what the reader should know but does not block
    unusable: set[str] = set()  # metrics with a NaN or infinite score: not compared
    for measured in (candidate, baseline, *others):
        for metric, items in sorted(nonfinite_metrics(measured).items()):
            unusable.add(metric)
            reasons.append(
                f"{metric} of {measured.label} has {len(items)} score(s) that are not a finite "
                f"number (NaN or infinity, e.g. {items[0]}): the gate cannot compare it"
            )
    if (
        candidate.settings_key
        and baseline.settings_key
        and candidate.settings_key != baseline.settings_key
    ):
        raise ValueError(
            "candidate and baseline were evaluated with different settings "
            f"({candidate.settings_key} vs {baseline.settings_key}): results are not paired"
        )
    shared = [m for m in candidate.metrics if m in baseline.metrics and m not in unusable]
    for metric in sorted(set(candidate.metrics) ^ set(baseline.metrics)):
        side = "candidate" if metric in candidate.metrics else "baseline"
        notes.append(f"{metric} was evaluated only for the {side}: not compared")
    for metric in policy.required:
        if metric not in shared and metric not in unusable:
            reasons.append(f"required metric {metric} is missing on one side")
    rows = [
        compare(metric, baseline.metrics[metric], candidate.metrics[metric], policy)
        for metric in shared
    ]
    blocked = [r for r in rows if r.guarded and r.verdict == "regression"]
    for row in blocked:
        reasons.append(
            f"{row.metric} regressed: {row.baseline:.3f} -> {row.candidate:.3f} "
            f"({row.difference:+.3f}, more than epsilon {row.epsilon}, p={row.p_worse:.3g})"
        )
    target_info: dict[str, Any] | None = None
    target_ok = True
    if policy.target:
        found = next((r for r in rows if r.metric == policy.target), None)
        if found is None and policy.target in unusable:
            target_ok = False  # the reason is given above
        elif found is None:
            target_ok = False
            reasons.append(f"target {policy.target} was not evaluated on both sides")
        else:
            row = found
            significant = row.p_better < policy.alpha
            target_ok = row.difference >= policy.delta - 1e-12 and (
                significant or not policy.require_significant_gain
            )
            target_info = {
                "metric": row.metric,
                "difference": row.difference,
                "delta": policy.delta,
                "p_better": row.p_better,
                "met": target_ok,
            }
            if not target_ok:
                why = (
                    f"{row.difference:+.3f} < delta {policy.delta}"
                    if row.difference < policy.delta - 1e-12
                    else f"gain not significant (p={row.p_better:.3g} >= {policy.alpha})"
                )
                reasons.append(f"target {row.metric} did not improve enough: {why}")
    other_rows = []
    for other in others:
        for metric in [policy.target] if policy.target else []:
            if metric in other.metrics and metric in candidate.metrics and metric not in unusable:
                row = compare(metric, other.metrics[metric], candidate.metrics[metric], policy)
                beaten = row.p_worse < policy.alpha and row.difference < 0
                other_rows.append(
                    {
                        "label": other.label,
                        "source": other.source,
                        "comparison": asdict(row),
                        "beats_candidate": beaten,
                    }
                )
                if beaten and policy.block_if_baseline_better:
                    reasons.append(
                        f"{other.label} is significantly better than the candidate on "
                        f"{metric} ({row.baseline:.3f} vs {row.candidate:.3f})"
                    )
    promote = not reasons
    if promote:
        reasons.append(
            "no guarded metric regressed" + (" and the target improved" if policy.target else "")
        )
    return GateDecision(
        promote,
        reasons + notes,
        asdict(policy),
        {"label": candidate.label, "model": candidate.model, "source": candidate.source},
        {"label": baseline.label, "model": baseline.model, "source": baseline.source},
        rows,
        target_info,
        other_rows,
        dict(production) if production is not None else None,
    )


def write_report(decision: GateDecision, out_dir: Path) -> Path:
    """gate.json (written last, atomically: its presence means a complete report),
    report.md, report.html, scores.png, differences.png."""
    from acepilot.training.eval.gate_report import charts, html_report, markdown

    out_dir.mkdir(parents=True, exist_ok=True)
    if decision.rows:
        charts(decision, out_dir)
    (out_dir / "report.md").write_text(markdown(decision), encoding="utf-8")
    (out_dir / "report.html").write_text(html_report(decision), encoding="utf-8")
    record = decision.to_dict()
    bad = nonfinite_fields(record)
    if bad:  # decide() never compares non-finite scores; this is a bug guard
        raise ValueError(f"gate result has non-finite numbers: {bad[:3]}")
    temp = out_dir / (GATE_FILE + ".tmp")
    temp.write_text(json.dumps(record, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    os.replace(temp, out_dir / GATE_FILE)
    return out_dir / GATE_FILE


MAX_GATE_BYTES = 64 << 20


def load_gate(path: Path) -> dict[str, Any]:
    """gate.json as written by `write_report`: strict JSON, this format."""
    file = path / GATE_FILE if path.is_dir() else path
    try:
        if file.stat().st_size > MAX_GATE_BYTES:
            raise ValueError("implausibly large")
        data = json.loads(file.read_text(encoding="utf-8"), parse_constant=reject_constant)
    except (OSError, UnicodeDecodeError, RecursionError, json.JSONDecodeError) as exc:
        raise ValueError(f"{file}: not a gate result ({str(exc)[:200]})") from None
    except ValueError as exc:  # reject_constant, or too large
        raise ValueError(f"{file}: not a gate result: {exc}") from None
    if not isinstance(data, dict) or "promote" not in data:
        raise ValueError(f"{file}: not a gate result written by acepilot gate")
    if data.get("format") != FORMAT:
        raise ValueError(
            f"{file}: gate format {data.get('format')!r}, this acepilot writes and promotes "
            f"format {FORMAT} (it records the production the candidate was compared with); "
            "run `acepilot gate` again"
        )
    return data
