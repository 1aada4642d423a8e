#!/usr/bin/env python3
"""The figures of docs/vue-story.md from a finished `acepilot pipeline pipeline_vue_story`.

Reads WORK/gate/gate.json (the gate's per-metric rows, with the held-out log-likelihood per
language where the gate had it), measures perplexity per token and language through each
built model with `acepilot eval completion ... --perplexity-tokens N` (on more text than the
gate reads), prints the page's tables and draws three small charts:

    .venv/bin/python scripts/vue-story-report.py ~/.cache/acepilot/vue-story/run docs/img

vue-story-scores.png (exact match and edit similarity per language, base vs fine-tune),
vue-story-differences.png (each difference with its 95% interval and the gate's verdict)
and vue-story-perplexity.png. The perplexity results are kept in WORK/perplexity/.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

LANGUAGES = ("vue", "javascript", "python", "cpp", "java", "go", "rust")
HUMANEVAL = {"javascript": "js"}  # completion language -> HumanEval-X folder suffix


def rows_by_metric(gate: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["metric"]: row for row in gate["rows"]}


def held_out_paths(work: Path, corpus_dir: Path, language: str) -> list[Path]:
    """Vue: the held-out package's .vue files; the others: HumanEval-X's programs."""
    if language == "vue":
        return sorted((work / "heldout").rglob("*.vue"))
    return [corpus_dir / "heldout-humaneval-x" / f"humaneval-{HUMANEVAL.get(language, language)}"]


def perplexity(
    acepilot: str, entry: str, paths: list[Path], out: Path, tokens: int
) -> float | None:
    if not out.is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        command = [acepilot, "eval", "completion", entry, *map(str, paths), "--positions", "1"]
        command += ["--perplexity-tokens", str(tokens), "--no-progress", "--json", str(out)]
        subprocess.run(command, check=True, capture_output=True, text=True)
    value = json.loads(out.read_text())["perplexity"].get("model")
    return float(value) if value is not None else None


def charts(rows: dict[str, dict[str, Any]], ppl: dict[str, dict[str, float]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    x = np.arange(len(LANGUAGES))
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    for ax, measure, title in zip(
        axes, ("exact_match", "edit_similarity"), ("exact match", "edit similarity"), strict=True
    ):
        found = [rows[f"completion:{lang}:{measure}"] for lang in LANGUAGES]
        ax.bar(x - 0.2, [r["baseline"] for r in found], 0.4, label="base", color="#8c8c8c")
        ax.bar(
            x + 0.2, [r["candidate"] for r in found], 0.4, label="Vue fine-tune", color="#2f7d4f"
        )
        ax.set_xticks(x, LANGUAGES, rotation=30, ha="right")
        ax.set_title(f"held-out line completion: {title}", fontsize=10)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "vue-story-scores.png", dpi=80)
    plt.close(fig)

    panels = [("exact_match", "exact match"), ("edit_similarity", "edit similarity")]
    if all(f"completion:{lang}:log_likelihood" in rows for lang in LANGUAGES):
        panels.append(("log_likelihood", "log-likelihood, nats/char"))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.2))
    for ax, (measure, title) in zip(axes, panels, strict=True):
        found = [rows[f"completion:{lang}:{measure}"] for lang in LANGUAGES]
        diffs = np.array([r["difference"] for r in found])
        errors = np.array(
            [
                [r["difference"] - r["low"] for r in found],
                [r["high"] - r["difference"] for r in found],
            ]
        )
        colors = [
            "#cf222e"
            if r["verdict"] == "regression"
            else "#2f7d4f"
            if r["verdict"] == "improved"
            else "#8c8c8c"
            for r in found
        ]
        ax.bar(x, diffs, color=colors, yerr=errors, capsize=3)
        ax.axhline(0, color="black", linewidth=0.8)
        epsilon = max(r["epsilon"] for r in found)
        ax.hlines(-epsilon, -0.5, len(LANGUAGES) - 0.5, colors="gray", linestyles="dashed")
        ax.set_xticks(x, LANGUAGES, rotation=30, ha="right")
        ax.set_title(f"fine-tune - base: {title} (95% interval)", fontsize=10)
    fig.tight_layout()
    fig.savefig(out / "vue-story-differences.png", dpi=80)
    plt.close(fig)

    if ppl:
        fig, ax = plt.subplots(figsize=(6, 3.2))
        ax.bar(
            x - 0.2, [ppl["base"][lang] for lang in LANGUAGES], 0.4, label="base", color="#8c8c8c"
        )
        ax.bar(
            x + 0.2,
            [ppl["candidate"][lang] for lang in LANGUAGES],
            0.4,
            label="Vue fine-tune",
            color="#2f7d4f",
        )
        ax.set_yscale("log")
        ax.set_xticks(x, LANGUAGES, rotation=30, ha="right")
        ax.set_title("perplexity per token (lower is better)", fontsize=10)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / "vue-story-perplexity.png", dpi=80)
        plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("work", type=Path, help="the pipeline's work_dir")
    parser.add_argument("img", type=Path, help="where the charts go (docs/img)")
    parser.add_argument("--corpus", type=Path, default=Path("~/.cache/acepilot/vue-corpus"))
    parser.add_argument("--perplexity-tokens", type=int, default=4096)
    parser.add_argument("--acepilot", default=str(Path(sys.executable).with_name("acepilot")))
    args = parser.parse_args()
    work, corpus_dir = args.work.expanduser(), args.corpus.expanduser()
    gate = json.loads((work / "gate" / "gate.json").read_text())
    rows = rows_by_metric(gate)
    models = {
        "base": gate["baseline"]["model"]["path"],
        "candidate": gate["candidate"]["model"]["path"],
    }
    ppl: dict[str, dict[str, float]] = {}
    if args.perplexity_tokens > 0:
        for label, entry in models.items():
            ppl[label] = {}
            for lang in LANGUAGES:
                out = work / "perplexity" / f"{label}-{lang}.json"
                paths = held_out_paths(work, corpus_dir, lang)
                value = perplexity(args.acepilot, entry, paths, out, args.perplexity_tokens)
                ppl[label][lang] = value if value is not None else float("nan")
    print(f"gate: {gate['decision']}")
    for reason in gate["reasons"]:
        print(f"- {reason}")
    print()
    loglik = any(metric.endswith(":log_likelihood") for metric in rows)
    print(
        "| language | positions | exact match base → fine-tune | edit similarity base → fine-tune"
        + (" | log-likelihood, nats/char (gate) |" if loglik else " |")
        + (" perplexity base → fine-tune |" if ppl else "")
    )
    print("|---|---|---|---|" + ("---|" if loglik else "") + ("---|" if ppl else ""))
    for lang in LANGUAGES:
        em, es = rows[f"completion:{lang}:exact_match"], rows[f"completion:{lang}:edit_similarity"]
        line = (
            f"| {lang} | {em['items']} | {em['baseline']:.3f} → {em['candidate']:.3f} "
            f"({em['difference']:+.3f}, {em['verdict']}) | {es['baseline']:.3f} → "
            f"{es['candidate']:.3f} ({es['difference']:+.3f}, {es['verdict']}) |"
        )
        ll = rows.get(f"completion:{lang}:log_likelihood")
        if loglik:
            line += (
                f" {ll['baseline']:.3f} → {ll['candidate']:.3f} ({ll['difference']:+.3f}, "
                f"{ll['verdict']}) |"
                if ll
                else " - |"
            )
        if ppl:
            base, cand = ppl["base"][lang], ppl["candidate"][lang]
            line += f" {base:.1f} → {cand:.1f} ({(cand / base - 1) * 100:+.0f}%) |"
        print(line)
    print()
    print("| HumanEval-X | problems | pass@1 base → fine-tune | verdict |")
    print("|---|---|---|---|")
    for metric, row in rows.items():
        if metric.startswith("humaneval:"):
            print(
                f"| {metric.split(':')[1]} | {row['items']} | {row['baseline']:.3f} → "
                f"{row['candidate']:.3f} | {row['verdict']} |"
            )
    args.img.mkdir(parents=True, exist_ok=True)
    charts(rows, ppl, args.img)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
