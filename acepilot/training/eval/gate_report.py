"""The gate's report for people: a decision table, report.md, report.html and two charts.

gate.py decides and writes gate.json (what promotion trusts and checks again);
this module only renders a `GateDecision` for reading: the per-metric table
(also printed by `acepilot gate`), the Markdown and HTML reports, and
scores.png / differences.png (matplotlib, imported when charts are drawn).
"""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from acepilot.training.eval.gate import GateDecision


def fmt(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.3f}"


def decision_table(decision: GateDecision) -> str:
    header = (
        "| metric | items | baseline | candidate | difference | 95% interval | test | "
        "p (worse) | epsilon | verdict |"
    )
    lines = [header, "|---|---|---|---|---|---|---|---|---|---|"]
    for r in decision.rows:
        mark = "**" if r.verdict == "regression" else ""
        guarded = "" if r.guarded else " (not guarded)"
        lines.append(
            f"| {r.metric} | {r.items} | {fmt(r.baseline)} | {fmt(r.candidate)} | "
            f"{r.difference:+.3f} | [{r.low:+.3f}, {r.high:+.3f}] | {r.test} | "
            f"{r.p_worse:.3g} | {r.epsilon} | {mark}{r.verdict}{mark}{guarded} |"
        )
    return "\n".join(lines)


def markdown(decision: GateDecision) -> str:
    verdict = "PROMOTE" if decision.promote else "REJECT"
    policy = decision.policy
    lines = [
        f"# Gate: {verdict}",
        "",
        f"Candidate **{decision.candidate['label']}** against baseline "
        f"**{decision.baseline['label']}**.",
        "",
        *[f"- {reason}" for reason in decision.reasons],
        "",
        f"Policy: target `{policy['target'] or 'none'}` (delta {policy['delta']}), "
        f"epsilon {policy['epsilon']}, test {policy['test']}, alpha {policy['alpha']}.",
        "",
        decision_table(decision),
        "",
        "![per-metric scores](scores.png)",
        "",
        "![differences](differences.png)",
    ]
    if decision.others:
        lines += ["", "## Other baselines (on the target)", ""]
        for other in decision.others:
            c = other["comparison"]
            lines.append(
                f"- {other['label']}: {fmt(c['baseline'])} vs candidate {fmt(c['candidate'])}"
                f" (p={c['p_worse']:.3g}){' — beats the candidate' if other['beats_candidate'] else ''}"
            )
    return "\n".join(lines) + "\n"


def html_report(decision: GateDecision) -> str:
    verdict = "PROMOTE" if decision.promote else "REJECT"
    color = "#1a7f37" if decision.promote else "#cf222e"
    rows = []
    for r in decision.rows:
        style = ' style="color:#cf222e;font-weight:bold"' if r.verdict == "regression" else ""
        cells = [
            r.metric,
            str(r.items),
            fmt(r.baseline),
            fmt(r.candidate),
            f"{r.difference:+.3f}",
            f"[{r.low:+.3f}, {r.high:+.3f}]",
            r.test,
            f"{r.p_worse:.3g}",
            str(r.epsilon),
        ]
        tds = "".join(f"<td>{html.escape(c)}</td>" for c in cells)
        rows.append(f"<tr>{tds}<td{style}>{html.escape(r.verdict)}</td></tr>")
    reasons = "".join(f"<li>{html.escape(reason)}</li>" for reason in decision.reasons)
    head = "".join(
        f"<th>{h}</th>"
        for h in (
            "metric",
            "items",
            "baseline",
            "candidate",
            "difference",
            "95% interval",
            "test",
            "p (worse)",
            "epsilon",
            "verdict",
        )
    )
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Gate: {verdict}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}
td:first-child{{text-align:left}}</style></head><body>
<h1 style="color:{color}">Gate: {verdict}</h1>
<p>Candidate <b>{html.escape(decision.candidate["label"])}</b> against baseline
<b>{html.escape(decision.baseline["label"])}</b>.</p>
<ul>{reasons}</ul>
<table><tr>{head}</tr>{"".join(rows)}</table>
<p><img src="scores.png" alt="scores"> <img src="differences.png" alt="differences"></p>
</body></html>
"""


def charts(decision: GateDecision, out_dir: Path) -> None:
    """scores.png: baseline vs candidate bars per metric; differences.png: the
    difference with its interval against -epsilon."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = decision.rows
    names = [r.metric.replace("humaneval:", "") for r in rows]
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(rows)), 4))
    ax.bar(x - 0.2, [r.baseline for r in rows], 0.4, label=decision.baseline["label"])
    ax.bar(x + 0.2, [r.candidate for r in rows], 0.4, label=decision.candidate["label"])
    ax.set_xticks(x, names, rotation=30, ha="right")
    ax.set_ylabel("score (pass@1 / exact match / similarity)")
    ax.set_title("candidate vs baseline")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_dir / "scores.png", dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(rows)), 4))
    diffs = np.array([r.difference for r in rows])
    errors = np.array([[r.difference - r.low for r in rows], [r.high - r.difference for r in rows]])
    colors = ["#cf222e" if r.verdict == "regression" else "#1f77b4" for r in rows]
    ax.bar(x, diffs, color=colors, yerr=errors, capsize=4)
    for i, r in enumerate(rows):
        ax.hlines(-r.epsilon, i - 0.4, i + 0.4, colors="gray", linestyles="dashed")
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(x, names, rotation=30, ha="right")
    ax.set_ylabel("candidate - baseline (95% interval)")
    ax.set_title("differences (dashed: -epsilon)")
    fig.tight_layout()
    fig.savefig(out_dir / "differences.png", dpi=100)
    plt.close(fig)


__all__ = ["charts", "decision_table", "html_report", "markdown"]
