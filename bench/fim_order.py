"""FIM order and the per-document KV cache: prefix-suffix-middle against suffix-prefix-middle.

Not a test. While a developer types, the text before the cursor grows at its
end and the text after it stays the same. The language server reuses the KV
cache of the longest common token prefix of the previous prompt, so the order
decides what each keystroke costs:

- PSM `<fim_prefix>PREFIX<fim_suffix>SUFFIX<fim_middle>`: the prefix changes at
  its end, so the whole suffix after it is prefilled again on every request;
- SPM `<fim_prefix><fim_suffix>SUFFIX<fim_middle>PREFIX`: the suffix comes first
  and stays put, so only the newly typed tokens are prefilled.

This runs bench/typing_replay.py's typist (same keystrokes, same schedule, one
fresh `acepilot serve` per order, KV reuse on) against two registry copies of
one FIM model that differ only in the manifest's `tokenizer.fim.order`, and
prints the server's own counters: prompt tokens, tokens prefilled and reused
per generation, and latency. Which order a model is *served* with is decided by
quality (the bootstrap evaluation measures both, `best_fim_order`); this
measures the cost side. The model must have been trained on both orders for
its SPM completions to mean anything (acepilot-tiny's tokens are StarCoder's,
trained PSM and SPM); the counters do not depend on the weights.

    .venv/bin/python bench/fim_order.py                      # the shipped acepilot-tiny, 2 x 60 s
    .venv/bin/python bench/fim_order.py --model NAME --registry DIR --duration 120
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # `bench`

import argparse
import asyncio
import json
import random
import shutil
from pathlib import Path
from typing import Any

from acepilot.server.build.tokenizer import fim_from_vocab
from acepilot.server.registry import ModelEntry, Registry
from bench import typing_replay as replay
from bench.engine import DEFAULT_CACHE

ORDERS = ("psm", "spm")


def fim_manifest(entry: ModelEntry) -> dict[str, Any]:
    """The entry's FIM tokens: its manifest's, else detected in its tokenizer.json.

    The shipped acepilot-tiny offers no FIM to servers while the suffix measures
    worse than the prefix alone, yet its tokenizer has the tokens it was trained
    with: the cost measured here does not depend on how well it uses them.
    """
    fim = (entry.manifest.get("tokenizer") or {}).get("fim")
    if fim:
        return dict(fim)
    data = json.loads(entry.file_path("tokenizer.json").read_text("utf-8"))
    vocab = {**data["model"]["vocab"], **{t["content"]: t["id"] for t in data["added_tokens"]}}
    detected, _ = fim_from_vocab(vocab)
    if detected is None:
        raise SystemExit(f"{entry.name}: no fill-in-the-middle tokens in its tokenizer")
    return detected


def order_variants(entry: ModelEntry, registry: Registry) -> dict[str, str]:
    """One registry model per order, the same files, only `tokenizer.fim.order` differs."""
    fim = fim_manifest(entry)
    missing = [order for order in ORDERS if order not in fim.get("orders", ["psm"])]
    if missing:
        print(f"note: {entry.name} was not trained on {', '.join(missing)} (tokens only)")
    names = {}
    for order in ORDERS:
        name = f"{entry.name}-{order}"
        manifest = {
            key: value
            for key, value in entry.manifest.items()
            if key not in ("files", "name", "version", "created", "format")
        }
        manifest["tokenizer"] = {**manifest["tokenizer"], "fim": {**fim, "order": order}}
        with registry.stage(name) as staging:
            for file in entry.files:
                target = staging / file
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(entry.file_path(file), target)
            registry.commit(staging, name, manifest)
        names[order] = name
    return names


def source_entry(args: argparse.Namespace, cache: Path) -> ModelEntry:
    if args.model:
        return Registry(args.registry).resolve(args.model)
    from acepilot.training.bootstrap.shipped import ensure_shipped

    return ensure_shipped(Registry(cache / "shipped-registry"))


def replay_args(args: argparse.Namespace) -> argparse.Namespace:
    """What bench/typing_replay.py's Bench reads from its command line."""
    return argparse.Namespace(
        duration=args.duration,
        debounce_ms=50,
        overhead_requests=0,
        details=False,
        seed=args.seed,
    )


def table(results: dict[str, dict[str, Any]]) -> str:
    def per_generation(stats: dict[str, Any], key: str) -> float:
        return stats[key] / stats["generations"] if stats["generations"] else float("nan")

    rows = []
    for title, value, fmt in (
        ("generations", lambda r: r["stats"]["generations"], "{:.0f}"),
        (
            "prompt tokens per generation",
            lambda r: per_generation(r["stats"], "prompt_tokens"),
            "{:.0f}",
        ),
        (
            "tokens prefilled per generation",
            lambda r: per_generation(r["stats"], "prefilled_tokens"),
            "{:.1f}",
        ),
        (
            "tokens reused per generation",
            lambda r: per_generation(r["stats"], "reused_tokens"),
            "{:.0f}",
        ),
        (
            "share of the prompt reused",
            lambda r: (
                per_generation(r["stats"], "reused_tokens")
                / per_generation(r["stats"], "prompt_tokens")
            ),
            "{:.1%}",
        ),
        (
            "latency p50 ms (client)",
            lambda r: replay.percentile(r["measures"].answered, 0.5),
            "{:.0f}",
        ),
        (
            "latency p95 ms (client)",
            lambda r: replay.percentile(r["measures"].answered, 0.95),
            "{:.0f}",
        ),
    ):
        psm, spm = value(results["psm"]), value(results["spm"])
        ratio = f"{spm / psm:.2f}x" if psm and psm == psm and spm == spm else "-"
        rows.append(f"| {title} | {fmt.format(psm)} | {fmt.format(spm)} | {ratio} |")
    return "\n".join(["| | PSM | SPM | SPM / PSM |", "|---|---|---|---|", *rows])


async def main_async(args: argparse.Namespace) -> int:
    cache: Path = args.cache / "fim-order"
    shutil.rmtree(cache / "registry", ignore_errors=True)
    cache.mkdir(parents=True, exist_ok=True)
    entry = source_entry(args, cache)
    registry = Registry(cache / "registry")
    names = order_variants(entry, registry)
    tasks = replay.pick_tasks(args.files, args.per_file, random.Random(args.seed))
    results = {}
    for order, name in names.items():
        options = {
            "backend": "local",
            "registry": str(registry.root),
            "model": name,
            "maxNewTokens": args.max_new_tokens,
            "contextTokens": args.context_tokens,
            "timeoutMs": 0,
            "debounceMs": 0,
        }
        results[order] = await replay.run_mode(replay_args(args), "reuse", tasks, options)
    print(
        f"Model: {entry.name} {entry.version}, maxNewTokens {args.max_new_tokens}, contextTokens "
        f"{args.context_tokens}, {len(tasks)} functions typed back in stdlib files for up to "
        f"{args.duration:.0f} s per order, seed {args.seed}, load average "
        f"{os.getloadavg()[0]:.2f} ({os.cpu_count()} cores)\n"
    )
    print(table(results))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", help="a registry FIM model (default: the shipped acepilot-tiny)")
    parser.add_argument("--registry", type=Path, help="the registry of --model")
    parser.add_argument("--duration", type=float, default=60, help="seconds of typing per order")
    parser.add_argument("--files", type=int, default=2, help="stdlib files to type in (2)")
    parser.add_argument("--per-file", type=int, default=3, help="functions per file (3)")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--context-tokens", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    args = parser.parse_args()
    if bool(args.model) != bool(args.registry):
        parser.error("--model and --registry go together")
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
