"""`acepilot gate CANDIDATE --against production`: may this model replace production?

CANDIDATE and --against (and each --baseline) are evaluation results
directories (from `acepilot eval humaneval`) or models; models are evaluated
here with the same settings and seeds, so the results are paired per problem.
The policy is a small config file (acepilot/training/config/gate_default.py documents
every field); the decision, its table and charts go to --out.

gate.json also records the production version and digest of --name as it was
when the gate started: `acepilot promote` refuses the gate once production has
changed (the candidate was never compared with the new production).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from acepilot.server.commands.options import add_registry


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    parser = subparsers.add_parser(
        "gate",
        help="compare a candidate with production per language; decide promote or reject",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Paired comparison per HumanEval language (McNemar's exact test on per-problem "
            "pass/fail, or a paired bootstrap): promote only if the target improves by delta "
            "and no language regresses by more than epsilon. Writes OUT/gate.json, "
            "OUT/report.md, OUT/report.html and PNG charts. Exit status 0 = promote, "
            "1 = reject.\n\n"
            "examples:\n"
            "  acepilot gate runs/ft/hf --against production --name team-model --out gates/ft "
            "--data ../shared/data/humaneval-x\n"
            "  acepilot gate runs/cand --against runs/prod --baseline big=runs/6b --policy "
            "gate_vue --set target=humaneval:js --out gates/x"
        ),
    )
    parser.add_argument(
        "candidate", help="results directory, registry NAME[@vN], entry or checkpoint dir"
    )
    parser.add_argument(
        "--against",
        default="production",
        help="'production' (of --name), a results directory or a model (default production)",
    )
    parser.add_argument(
        "--name",
        help="registry model whose production is the baseline and that a promotion would "
        "replace (default: the candidate's); without it the gate cannot be promoted",
    )
    parser.add_argument(
        "--baseline",
        action="append",
        default=[],
        metavar="LABEL=REF",
        help="another baseline to report (and, by policy, to block on), e.g. big=codegen-2B",
    )
    parser.add_argument(
        "--policy",
        action="append",
        default=[],
        help="policy config file (path or name in acepilot/training/config/), repeatable",
    )
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a policy field"
    )
    parser.add_argument("--out", type=Path, required=True, help="report directory")
    parser.add_argument(
        "--completion",
        action="append",
        default=[],
        type=Path,
        metavar="PATH",
        help="held-out code (files/dirs, repeatable): also compare in-domain line completion "
        "per position (metrics completion:<language>:exact_match, ...); models must be built",
    )
    parser.add_argument(
        "--completion-positions", type=int, default=200, help="cursor positions (200)"
    )
    parser.add_argument(
        "--completion-loglik-files",
        type=int,
        default=16,
        metavar="N",
        help="held-out files per language whose log-likelihood is compared "
        "(completion:<language>:log_likelihood, nats per character; 0 = off; 16)",
    )
    add_registry(parser)
    from acepilot.training.eval.models import add_eval_arguments

    add_eval_arguments(parser)
    parser.set_defaults(func=run_gate)


def run_gate(args: argparse.Namespace) -> int:
    from acepilot.server.registry import Registry
    from acepilot.training.eval.gate import Results, decide, production_record, write_report
    from acepilot.training.eval.gate_report import decision_table
    from acepilot.training.eval.models import eval_config, resolve_entry
    from acepilot.training.eval.workflow import (
        GateError,
        is_results,
        load_policy,
        production_ref,
        results_for,
    )

    registry = Registry(args.registry)
    policy = load_policy(args.policy, args.set)
    config = eval_config(args)
    against = args.against
    name = args.name
    if name is None and not is_results(args.candidate):
        entry = resolve_entry(args.candidate, registry)
        name = entry.name if entry is not None else None
    if against == "production":
        if name is None:
            raise GateError("--against production needs --name (the registry model)")
        against = production_ref(registry, name)
    # Taken before evaluating: the baseline above is this production.
    production = production_record(registry, name) if name is not None else None
    work = args.out / "evaluations"
    completion = None
    if args.completion:
        from acepilot.training.eval.indomain import CompletionSettings

        if args.completion_loglik_files < 0:
            raise GateError("--completion-loglik-files must be >= 0")
        completion = CompletionSettings(
            tuple(str(p) for p in args.completion),
            args.completion_positions,
            args.seed,
            loglik_files=args.completion_loglik_files,
        )

    def results(ref: str, label: str) -> Results:
        return results_for(
            ref, label, registry, config, work, threads=args.threads, completion=completion
        )

    candidate = results(args.candidate, "candidate")
    baseline = results(against, against)
    others = []
    for item in args.baseline:
        label, sep, ref = item.partition("=")
        if not sep or not label or not ref:
            raise GateError(f"--baseline takes LABEL=REF, got {item!r}")
        others.append(results(ref, label))
    try:
        decision = decide(candidate, baseline, policy, others, production=production)
    except ValueError as exc:
        raise GateError(str(exc)) from None
    path = write_report(decision, args.out)
    print(decision_table(decision))
    print()
    print(("PROMOTE" if decision.promote else "REJECT") + ": " + "; ".join(decision.reasons))
    print(f"report: {args.out / 'report.html'} ({path})")
    if production is None:
        print("note: no --name, so this gate records no production and cannot be promoted")
    return 0 if decision.promote else 1
