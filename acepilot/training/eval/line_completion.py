"""In-domain line completion: exact match, edit similarity and perplexity on held-out code.

What a Copilot user feels is "did the ghost text finish my line". This
evaluation measures exactly that on code the model never saw: it picks cursor
positions in held-out files (deterministically, from a seed), gives each
predictor the file's text before the cursor and compares what it writes up to
the end of the line with what the file really has there. Its parts:

| stage | module |
|---|---|
| cursor positions in held-out files | line_tasks.py |
| predictors: the model (prefix only, or FIM), "repeat the previous line", a token bigram | line_predictors.py |
| exact match, edit similarity, per language and domain; the table | line_metrics.py |
| perplexity through the built (ONNX) graph, and the bigram's | ../perplexity.py |

This module is the command: `acepilot eval completion MODEL PATH...` runs it
on a registry model (`add_parser` registers it under `acepilot eval`);
`acepilot/training/bootstrap/evaluate.py` calls the same functions for
acepilot-tiny, with `FimPredictor` for the same positions with the text after
the line as a fill-in-the-middle suffix.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from acepilot.server.commands.options import add_registry
from acepilot.training.eval.line_metrics import evaluate, format_table
from acepilot.training.eval.line_predictors import (
    Predictor,
    bigram_predictor,
    engine_predictor,
    repeat_previous_line,
)
from acepilot.training.eval.line_tasks import collect_files, sample_tasks
from acepilot.training.perplexity import BigramModel, onnx_token_losses, token_windows

if TYPE_CHECKING:
    from acepilot.server.engine import Engine


def add_parser(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Register `completion` (under `acepilot eval`)."""
    parser = subparsers.add_parser(
        "completion",
        help="line completion (exact match, edit similarity) and perplexity on held-out code",
        description=(
            "Pick N cursor positions (seeded) in held-out code files, let the model finish "
            "each line (greedy, stopped at the newline) and report exact match and edit "
            "similarity overall, per language and per domain (first folder under each given "
            "directory), beside a 'repeat the previous line' baseline and, with --bigram-train, "
            "a token bigram baseline. Perplexity is measured through the built graph."
        ),
    )
    parser.add_argument("model", help="registry model name (production version) or entry directory")
    parser.add_argument("paths", nargs="+", type=Path, help="held-out code files or directories")
    add_registry(parser)
    parser.add_argument("-n", "--positions", type=int, default=200, help="cursor positions (200)")
    parser.add_argument("--seed", type=int, default=0, help="position sampling seed (0)")
    parser.add_argument("--max-tokens", type=int, default=48, help="most tokens per line (48)")
    parser.add_argument(
        "--context-chars", type=int, default=4000, help="characters of prompt before the cursor"
    )
    parser.add_argument(
        "--perplexity-tokens",
        type=int,
        default=4096,
        help="held-out tokens for perplexity through the graph (0 = skip; 4096)",
    )
    parser.add_argument(
        "--bigram-train",
        type=Path,
        nargs="*",
        default=[],
        help="files/directories to train the bigram baseline on (with the model's tokenizer)",
    )
    parser.add_argument("--json", type=Path, help="also write the full results here")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(func=run_completion_eval)


def run_completion_eval(args: argparse.Namespace) -> int:
    from acepilot.server.engine import Engine
    from acepilot.server.errors import AcepilotError
    from acepilot.server.registry import Registry

    if args.positions < 1:
        raise AcepilotError("--positions must be at least 1")
    registry = Registry(args.registry)
    entry = registry.resolve(args.model)
    try:
        files = collect_files(args.paths)
        tasks = sample_tasks(files, args.positions, args.seed, context_chars=args.context_chars)
    except (FileNotFoundError, ValueError) as exc:
        raise AcepilotError(str(exc)) from None
    progress = not args.no_progress
    engine = Engine.load(entry)
    predictors: dict[str, Predictor] = {
        f"{entry.name} {entry.version}": engine_predictor(engine, args.max_tokens),
        "repeat previous line": repeat_previous_line,
    }
    bigram = None
    if args.bigram_train:
        ids = encode_files(engine, [path for _, path in collect_files(args.bigram_train)])
        bigram = BigramModel(ids, engine.vocab_size)
        predictors["bigram"] = bigram_predictor(bigram, engine.tokenizer)
    reports = evaluate(tasks, predictors, progress=progress)
    results: dict[str, Any] = {name: report.to_dict() for name, report in reports.items()}
    print(format_table(results))
    print()
    print(format_table(results, "languages"))
    print()
    print(format_table(results, "domains"))
    perplexity: dict[str, float] = {}
    if args.perplexity_tokens > 0:
        held_ids = encode_files(engine, [path for _, path in files])
        seq_len = min(256, entry.manifest["graph"]["max_length"])
        windows = token_windows(held_ids, seq_len, args.perplexity_tokens)
        total, count = onnx_token_losses(entry, windows, progress=progress)
        perplexity["model"] = math.exp(total / count)
        if bigram is not None:
            perplexity["bigram"] = math.exp(bigram.cross_entropy(windows))
        print(
            "\nperplexity per token on "
            f"{count} held-out tokens: "
            + ", ".join(f"{name} {value:.2f}" for name, value in perplexity.items())
        )
    if args.json:
        args.json.write_text(
            json.dumps({"line_completion": results, "perplexity": perplexity}, indent=2) + "\n"
        )
    return 0


def encode_files(engine: Engine, paths: Sequence[Path]) -> list[int]:
    """The files' tokens in one stream, each followed by EOS (when there is one)."""
    ids: list[int] = []
    for path in paths:
        try:
            text = path.read_bytes().decode("utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        ids.extend(engine.encode(text))
        if engine.eos_token_id is not None:
            ids.append(engine.eos_token_id)
    return ids


__all__ = ["add_parser", "encode_files", "run_completion_eval"]
