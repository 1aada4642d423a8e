"""`acepilot promote GATE_DIR` and `acepilot rollback NAME` (acepilot/training/eval/promotion.py)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from acepilot.server.commands.options import add_registry


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    promote = subparsers.add_parser(
        "promote",
        help="make a gated candidate the production version (build, register, flip atomically)",
        description=(
            "Read GATE_DIR/gate.json (from `acepilot gate`); if it says promote, decide again "
            "from the evaluation results it names (a report edited by hand is refused) and "
            "check that production of NAME is still the version the gate compared with (a "
            "stale gate is refused: gate again). Then register the exact model the gate "
            "evaluated, by its sha256 digest (a registry entry: files copied, never "
            "hard-linked, and verified; a checkpoint: a verified private copy built with the "
            "parity gate enforced) as a new version of NAME with the evaluation and gate "
            "results in its manifest, verify its bytes, and flip the production pointer "
            "atomically. Interrupted? Run it again: it resumes."
        ),
    )
    promote.add_argument("gate", type=Path, help="gate report directory (or its gate.json)")
    promote.add_argument("--name", required=True, help="registry model name to promote into")
    add_registry(promote)
    promote.add_argument(
        "--precision",
        default="int4",
        choices=("fp32", "fp16", "int8", "int4"),
        help="for a checkpoint candidate: build precision (int4)",
    )
    promote.add_argument(
        "--device", default="cpu", choices=("cpu", "cuda"), help="for a checkpoint: target device"
    )
    promote.add_argument("--no-progress", action="store_true", help="no progress bar")
    promote.set_defaults(func=run_promote)

    rollback = subparsers.add_parser(
        "rollback",
        help="point production back at the version it had before the last promotion",
        description=(
            "Flip NAME's production pointer back (atomically) to the previous production "
            "version recorded in the registry's promotion history, or to --to VERSION."
        ),
    )
    rollback.add_argument("name", help="registry model name")
    rollback.add_argument("--to", help="this version instead of the previous one")
    add_registry(rollback)
    rollback.set_defaults(func=run_rollback)


def run_promote(args: argparse.Namespace) -> int:
    from acepilot.server.registry import Registry
    from acepilot.training.eval.promotion import promote

    result = promote(
        args.gate,
        Registry(args.registry),
        args.name,
        precision=args.precision,
        device=args.device,
        progress=not args.no_progress,
    )
    resumed = " (resumed: the version was already registered)" if result.reused else ""
    print(f"{result.name}: production {result.previous or '(none)'} -> {result.version}{resumed}")
    return 0


def run_rollback(args: argparse.Namespace) -> int:
    from acepilot.server.registry import Registry
    from acepilot.training.eval.history import rollback

    before, after = rollback(Registry(args.registry), args.name, args.to)
    print(f"{args.name}: production {before or '(none)'} -> {after}")
    return 0
