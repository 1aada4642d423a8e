"""The gate's statistics and decisions on constructed result sets, and its report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from acepilot.training.eval.gate import (
    GatePolicy,
    Results,
    compare,
    decide,
    load_gate,
    mcnemar,
    paired_bootstrap,
    write_report,
)
from acepilot.training.eval.workflow import GateError, load_policy

LANGS = ("python", "cpp", "java", "js", "go", "rust")


def outcomes(rate: float, n: int, seed: int) -> np.ndarray:
    """n pass/fail results with exactly round(rate * n) passes, in a seeded order."""
    passes = round(rate * n)
    values = np.array([1.0] * passes + [0.0] * (n - passes))
    np.random.default_rng(seed).shuffle(values)
    return values


def results(label: str, per_language: dict[str, np.ndarray]) -> Results:
    metrics = {
        f"humaneval:{lang}": {f"{lang}/{i}": float(v) for i, v in enumerate(values)}
        for lang, values in per_language.items()
    }
    return Results(label, metrics, settings_key="same", model={"kind": "test", "label": label})


def flip(values: np.ndarray, lose: int, win: int, seed: int) -> np.ndarray:
    """Turn `lose` passes into fails and `win` fails into passes."""
    out = values.copy()
    rng = np.random.default_rng(seed)
    passed, failed = np.flatnonzero(out == 1), np.flatnonzero(out == 0)
    out[rng.choice(passed, lose, replace=False)] = 0
    out[rng.choice(failed, win, replace=False)] = 1
    return out


@pytest.fixture
def production() -> dict[str, np.ndarray]:
    return {lang: outcomes(0.3 + 0.05 * i, 164, i) for i, lang in enumerate(LANGS)}


def test_mcnemar_exact_matches_the_binomial_tail() -> None:
    base = np.array([1] * 10 + [0] * 10 + [1] * 5, dtype=float)
    cand = np.array([0] * 10 + [1] * 2 + [0] * 8 + [1] * 5, dtype=float)
    worse, better = mcnemar(base, cand)  # 10 lost, 2 won
    # P(X >= 10 | Bin(12, 1/2)) = (C(12,10) + C(12,11) + C(12,12)) / 2^12 = 79/4096
    assert worse == pytest.approx(79 / 4096)
    assert better == pytest.approx(4083 / 4096)  # P(X >= 2) = 1 - (1 + 12) / 4096
    assert mcnemar(base, base) == (1.0, 1.0)


def test_paired_bootstrap_brackets_the_difference() -> None:
    rng = np.random.default_rng(0)
    base = rng.random(300)
    cand = base + 0.05 + rng.normal(0, 0.01, 300)
    means, worse, better = paired_bootstrap(base, cand, 4000, seed=1)
    assert np.percentile(means, 2.5) > 0.04 and np.percentile(means, 97.5) < 0.06
    assert better < 0.001 and worse > 0.99


def test_a_clear_win_is_promoted(production: dict[str, np.ndarray]) -> None:
    candidate = {
        lang: flip(values, lose=1, win=20 if lang == "js" else 2, seed=i)
        for i, (lang, values) in enumerate(production.items())
    }
    policy = GatePolicy(target="humaneval:js", delta=0.05)
    decision = decide(results("cand", candidate), results("prod", production), policy)
    assert decision.promote, decision.reasons
    rows = {r.metric: r for r in decision.rows}
    assert rows["humaneval:js"].verdict == "improved"
    assert rows["humaneval:js"].difference == pytest.approx(19 / 164)
    assert rows["humaneval:js"].test == "mcnemar"
    assert rows["humaneval:js"].low > 0
    assert decision.target is not None and decision.target["met"]


def test_a_hidden_regression_in_one_language_is_rejected(
    production: dict[str, np.ndarray],
) -> None:
    """The seed's failure: the target and the average improve, Go quietly drops 12 points."""
    candidate = {
        lang: flip(values, lose=2, win=25 if lang == "js" else 6, seed=i)
        for i, (lang, values) in enumerate(production.items())
    }
    candidate["go"] = flip(production["go"], lose=22, win=2, seed=9)
    cand, prod = results("cand", candidate), results("prod", production)
    mean = lambda r: np.mean([np.mean(list(s.values())) for s in r.metrics.values()])  # noqa: E731
    assert mean(cand) > mean(prod)  # the average hides it
    decision = decide(cand, prod, GatePolicy(target="humaneval:js", delta=0.05))
    assert not decision.promote
    verdicts = {r.metric: r.verdict for r in decision.rows}
    assert verdicts["humaneval:go"] == "regression"
    assert [m for m, v in verdicts.items() if v == "regression"] == ["humaneval:go"]
    assert any("humaneval:go regressed" in reason for reason in decision.reasons)


def test_noise_level_differences_are_not_a_regression() -> None:
    """A 3-point drop on 20 problems (3 lost, 2 won... and a 10-point drop from 2 lost of
    20) are within what chance does: reported, never blocking."""
    base = {lang: outcomes(0.5, 20, i) for i, lang in enumerate(LANGS)}
    cand = {
        lang: flip(values, lose=2, win=0, seed=i) for i, (lang, values) in enumerate(base.items())
    }
    decision = decide(results("cand", cand), results("prod", base), GatePolicy())
    assert decision.promote, decision.reasons
    for row in decision.rows:
        assert row.difference == pytest.approx(-0.1)
        assert row.verdict == "drop within noise"  # beyond epsilon, but p = 0.25
        assert row.p_worse == pytest.approx(0.25)
    # identical results: no change at all
    same = decide(results("cand", base), results("prod", base), GatePolicy())
    assert same.promote and {r.verdict for r in same.rows} == {"no change"}


def test_target_must_improve_by_delta_and_significantly(production: dict[str, np.ndarray]) -> None:
    small = {lang: v.copy() for lang, v in production.items()}
    small["js"] = flip(production["js"], lose=0, win=3, seed=3)  # +1.8 points, p = 0.125
    decision = decide(
        results("c", small), results("p", production), GatePolicy(target="humaneval:js")
    )
    assert not decision.promote and "not significant" in decision.reasons[0]
    loose = GatePolicy(target="humaneval:js", require_significant_gain=False, delta=0.01)
    assert decide(results("c", small), results("p", production), loose).promote
    strict = GatePolicy(target="humaneval:js", require_significant_gain=False, delta=0.05)
    assert not decide(results("c", small), results("p", production), strict).promote


def test_another_baseline_that_beats_the_candidate_blocks(
    production: dict[str, np.ndarray],
) -> None:
    candidate = {lang: flip(v, 0, 15 if lang == "js" else 0, 1) for lang, v in production.items()}
    bigger = {lang: flip(v, 0, 60 if lang == "js" else 0, 2) for lang, v in production.items()}
    policy = GatePolicy(target="humaneval:js", delta=0.05)
    decision = decide(
        results("cand", candidate), results("prod", production), policy, [results("6B", bigger)]
    )
    assert not decision.promote
    assert decision.others[0]["beats_candidate"] and "6B is significantly better" in " ".join(
        decision.reasons
    )
    relaxed = GatePolicy(target="humaneval:js", delta=0.05, block_if_baseline_better=False)
    assert decide(
        results("cand", candidate), results("prod", production), relaxed, [results("6B", bigger)]
    ).promote


def test_unpaired_or_incomparable_results_are_refused(production: dict[str, np.ndarray]) -> None:
    fewer = {lang: v[:100] for lang, v in production.items()}
    with pytest.raises(ValueError, match="not on the same items"):
        decide(results("c", fewer), results("p", production), GatePolicy())
    other = Results("c", results("c", production).metrics, settings_key="different")
    with pytest.raises(ValueError, match="different settings"):
        decide(other, results("p", production), GatePolicy())
    missing = {lang: v for lang, v in production.items() if lang != "rust"}
    decision = decide(
        results("c", missing), results("p", production), GatePolicy(required=["humaneval:rust"])
    )
    assert not decision.promote and "required metric humaneval:rust" in decision.reasons[0]


def test_continuous_scores_use_the_paired_bootstrap() -> None:
    rng = np.random.default_rng(0)
    base = {f"x{i}": float(v) for i, v in enumerate(rng.random(200))}
    cand = {k: max(0.0, v - 0.1) for k, v in base.items()}
    row = compare("completion:vue:edit_similarity", base, cand, GatePolicy(epsilon=0.02))
    assert row.test == "bootstrap" and row.verdict == "regression" and row.high < 0


def test_report_files_and_policy_config(tmp_path: Path, production: dict[str, np.ndarray]) -> None:
    candidate = dict(production)
    candidate["go"] = flip(production["go"], lose=22, win=2, seed=9)
    policy_file = tmp_path / "policy.py"
    policy_file.write_text(
        "# team policy\nepsilon = 0.03\nepsilon_per_metric = {'humaneval:rust': 0.1}\n"
    )
    policy = load_policy([str(policy_file)], ["alpha=0.01"])
    assert policy.epsilon == 0.03 and policy.alpha == 0.01
    assert policy.epsilon_for("humaneval:rust") == 0.1
    with pytest.raises(GateError, match="unknown setting"):
        load_policy([], ["epsilonn=0.1"])
    with pytest.raises(GateError, match="test must be"):
        load_policy([], ["test=ttest"])
    decision = decide(results("cand", candidate), results("prod", production), policy)
    out = tmp_path / "report"
    write_report(decision, out)
    gate = load_gate(out)
    assert gate["decision"] == "reject" and len(gate["rows"]) == 6
    md = (out / "report.md").read_text()
    assert "# Gate: REJECT" in md and "| humaneval:go | 164 |" in md and "**regression**" in md
    assert "<h1" in (out / "report.html").read_text()
    for chart in ("scores.png", "differences.png"):
        assert (out / chart).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_gate_command_on_results_directories(tmp_path: Path) -> None:
    """`acepilot gate A --against B` on two summaries: exit status 1 for a rejection."""

    def summary(per_problem: dict[str, dict[str, list[int]]]) -> dict[str, object]:
        return {
            "kind": "humaneval",
            "format": 1,
            "settings_key": "k",
            "model": {"kind": "t"},
            "per_problem": per_problem,
        }

    base = {"python": {f"Python/{i}": [1, int(i < 100)] for i in range(164)}}
    cand = {"python": {f"Python/{i}": [1, int(i < 70)] for i in range(164)}}
    for name, data in (("a", cand), ("b", base)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "summary.json").write_text(json.dumps(summary(data)))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "acepilot.server.cli",
            "gate",
            str(tmp_path / "a"),
            "--against",
            str(tmp_path / "b"),
            "--out",
            str(tmp_path / "g"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stderr
    assert "REJECT" in done.stdout and "humaneval:python regressed" in done.stdout
    assert load_gate(tmp_path / "g")["decision"] == "reject"
    # no --name: no production recorded, and the report says it cannot be promoted
    assert load_gate(tmp_path / "g")["production"] is None
    assert "cannot be promoted" in done.stdout


def test_completion_positions_become_paired_metrics() -> None:
    """In-domain line completion per position -> per-language and per-domain metrics
    that the gate pairs (McNemar for exact match, bootstrap for similarity)."""
    from acepilot.training.eval.indomain import completion_metrics

    def result(exact: list[int]) -> dict[str, object]:
        return {
            "items": [
                {
                    "id": f"app/f{i}.vue:{i}:1",
                    "language": "vue" if i % 2 else "typescript",
                    "domain": "app",
                    "exact_match": float(e),
                    "edit_similarity": 0.5 + 0.5 * e,
                }
                for i, e in enumerate(exact)
            ]
        }

    base = completion_metrics(result([0] * 200))
    better = completion_metrics(result([1 if i % 2 and i < 120 else 0 for i in range(200)]))
    assert set(base) == {
        f"completion:{group}:{measure}"
        for group in ("vue", "typescript", "domain:app")
        for measure in ("exact_match", "edit_similarity")
    }
    assert len(base["completion:vue:exact_match"]) == 100
    cand = Results("cand", better, settings_key="k")
    prod = Results("prod", base, settings_key="k")
    decision = decide(cand, prod, GatePolicy(target="completion:vue:exact_match", delta=0.3))
    assert decision.promote, decision.reasons
    rows = {r.metric: r for r in decision.rows}
    assert rows["completion:vue:exact_match"].test == "mcnemar"
    assert rows["completion:vue:exact_match"].difference == pytest.approx(0.6)
    assert rows["completion:vue:edit_similarity"].test == "bootstrap"
    assert rows["completion:typescript:exact_match"].verdict == "no change"


# ---- integrity: NaN and infinity, strict gate files (issue 13) ----------------------


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_a_non_finite_score_fails_the_gate(production: dict[str, np.ndarray], value) -> None:
    """A NaN never exceeds a threshold: before, one NaN problem made Go "no change" and an
    infinite one made the target "improved" by infinity."""
    candidate = {lang: flip(v, 0, 20 if lang == "js" else 0, 1) for lang, v in production.items()}
    cand = results("cand", candidate)
    cand.metrics["humaneval:go"]["go/3"] = value
    cand.metrics["humaneval:js"]["js/5"] = value
    decision = decide(cand, results("prod", production), GatePolicy(target="humaneval:js"))
    assert not decision.promote
    blocking = " ".join(decision.reasons)
    assert "humaneval:go" in blocking and "humaneval:js" in blocking
    assert "not a finite number" in blocking
    assert {r.metric for r in decision.rows}.isdisjoint({"humaneval:go", "humaneval:js"})
    # the baseline side too
    prod = results("prod", production)
    prod.metrics["humaneval:rust"]["rust/0"] = value
    assert not decide(results("cand", candidate), prod, GatePolicy()).promote


@pytest.mark.parametrize(
    "override",
    ["epsilon=1e999", "delta=1e999", "alpha=1e999", "epsilon_per_metric={'humaneval:go': 1e999}"],
)
def test_a_policy_with_a_non_finite_number_is_refused(override: str) -> None:
    with pytest.raises(GateError, match="finite"):
        load_policy([], [override])


def test_a_nan_policy_from_a_config_file_is_refused(tmp_path: Path) -> None:
    """`epsilon = float("nan")` made every drop "drop within epsilon": nothing could block."""
    policy_file = tmp_path / "policy.py"
    policy_file.write_text('epsilon = float("nan")\n')
    with pytest.raises(GateError, match="finite"):
        load_policy([str(policy_file)], [])


def test_gate_files_are_strict_json_and_record_production(
    tmp_path: Path, production: dict[str, np.ndarray]
) -> None:
    record = {"name": "team", "version": "v3", "digest": "a" * 64}
    decision = decide(
        results("cand", production), results("prod", production), GatePolicy(), production=record
    )
    write_report(decision, tmp_path / "g")
    gate = load_gate(tmp_path / "g")
    assert gate["production"] == record
    text = (tmp_path / "g" / "gate.json").read_text()
    (tmp_path / "g" / "gate.json").write_text(text.replace('"v3"', "NaN", 1))
    with pytest.raises(ValueError, match="not strict JSON"):
        load_gate(tmp_path / "g")
    (tmp_path / "g" / "gate.json").write_text("[" * 100_000)
    with pytest.raises(ValueError, match="not a gate result"):
        load_gate(tmp_path / "g")
