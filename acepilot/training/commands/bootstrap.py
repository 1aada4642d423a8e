"""`acepilot bootstrap`: train, evaluate, build and register acepilot-tiny (acepilot/training/bootstrap/).

A top-level command of the training side (registered through acepilot/training/cli.py,
so `server` never imports `training`). `acepilot demo` runs the same function
when no model is configured.
"""

from __future__ import annotations

import argparse
import os
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING, Any

from acepilot.server.commands.options import add_registry
from acepilot.server.errors import AcepilotError

if TYPE_CHECKING:
    from acepilot.training.bootstrap import BootstrapResult


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    from acepilot.training.bootstrap import MODEL_NAME, PRESETS, STAGES

    parser = subparsers.add_parser(
        "bootstrap",
        help=f"train Acepilot's own default model ({MODEL_NAME}) from local code, offline",
        description=(
            f"Reproduce {MODEL_NAME}, the default model shipped under models/, from nothing "
            "but this machine: a BPE tokenizer with fill-in-the-middle tokens and a small "
            "CodeGen trained (DeepSpeed, CPU or GPU) on the permissively licensed Python, "
            "JavaScript/TypeScript, Go and Rust found here, in FIM and repository format at "
            "1,024 tokens; held-out evaluation against a bigram model and 'repeat the previous "
            "line'; the int8 ONNX build with its parity gate; then it becomes production of "
            "acepilot-tiny in the registry. Seeded and deterministic. Every stage is kept in "
            "the work dir: a rerun skips what is done, an interrupted run resumes (training "
            "from its last checkpoint). The default recipe trains 10.2M tokens: about two "
            "hours on one free CPU core, minutes on a GPU (docs/acepilot-tiny.md); "
            "`acepilot demo` and `make run` "
            "use the shipped model and train nothing."
        ),
    )
    parser.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default="default",
        help="default: the real model; small: a one-minute miniature (tests, trying it out)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for everything (0)")
    parser.add_argument("--steps", type=int, help="training steps (default: the preset's)")
    parser.add_argument(
        "--work",
        type=Path,
        help="work dir for the stages (default: $ACEPILOT_CACHE/bootstrap, "
        "else ~/.cache/acepilot/bootstrap)",
    )
    add_registry(parser)
    parser.add_argument(
        "--stop-after", choices=STAGES, help="stop after this stage (inspect data, tokenizer...)"
    )
    parser.add_argument(
        "--allow-worse",
        action="store_true",
        help="publish even if the model does not beat both baselines",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(func=run_bootstrap)


def default_work_dir() -> Path:
    env = os.environ.get("ACEPILOT_CACHE")
    root = Path(env).expanduser() if env else Path.home() / ".cache" / "acepilot"
    return root / "bootstrap"


def ensure_tiny(
    work: Path | None = None,
    registry_root: Path | None = None,
    *,
    preset: str = "default",
    progress: bool = True,
    quiet: bool = False,
    stop_after: str | None = None,
    use_shipped: bool = True,
    **overrides: Any,
) -> BootstrapResult | None:
    """acepilot-tiny in the registry: the shipped one (models/, sha256 checked) when the
    default recipe is asked for and it is there, else built (reused when the work dir
    says it is current). `use_shipped=False` always runs the recipe (`acepilot bootstrap`).

    Errors a user can act on (missing training stack, bad settings, a model
    that loses to its baselines, a corrupt shipped model) become AcepilotError:
    one clear line.
    """
    if use_shipped and preset == "default" and not overrides and stop_after is None:
        shipped = shipped_result(registry_root)
        if shipped is not None:
            return shipped
    # Before torch loads OpenMP: its threads then sleep instead of spinning while they
    # wait. On a shared machine (an editor, other jobs) spinning threads wait for a
    # descheduled sibling and burn the CPU: measured here under load, a training
    # step took 2.6x longer with the default policy. It changes no result.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    # find_spec, not import: importing deepspeed alone takes seconds, and a cached
    # model needs none of it
    missing = [name for name in ("deepspeed", "torch", "transformers") if not find_spec(name)]
    if missing:
        raise AcepilotError(
            "building acepilot-tiny needs the training stack: "
            f"pip install 'acepilot[build,train]' (missing: {', '.join(missing)})"
        )
    from acepilot.server.registry import Registry
    from acepilot.training.bootstrap import BootstrapConfig, bootstrap

    try:
        config = BootstrapConfig.preset(preset, **overrides)
        config.check()
    except (TypeError, ValueError) as exc:
        raise AcepilotError(str(exc)) from None
    try:
        return bootstrap(
            config,
            (work or default_work_dir()).expanduser(),
            Registry(registry_root),
            progress=progress,
            quiet=quiet,
            stop_after=stop_after,
        )
    except RuntimeError as exc:
        raise AcepilotError(str(exc)) from None


def shipped_result(registry_root: Path | None) -> BootstrapResult | None:
    """The shipped model registered (no torch needed), or None when none is shipped."""
    from acepilot.server.errors import RegistryError
    from acepilot.server.registry import Registry
    from acepilot.training.bootstrap.pipeline import BootstrapResult
    from acepilot.training.bootstrap.shipped import (
        SHIPPED_DIGEST,
        ensure_shipped,
        shipped_dir,
        shipped_record,
    )

    if not SHIPPED_DIGEST or not (shipped_dir() / "manifest.json").is_file():
        return None
    try:
        entry = ensure_shipped(Registry(registry_root))
    except RegistryError as exc:
        raise AcepilotError(f"the shipped model is refused: {exc}") from None
    return BootstrapResult(entry, shipped_record(entry), cached=True)


def run_bootstrap(args: argparse.Namespace) -> int:
    overrides: dict[str, Any] = {"seed": args.seed}
    if args.steps is not None:
        overrides["steps"] = args.steps
    if args.allow_worse:
        overrides["require_better"] = False
    result = ensure_tiny(
        args.work,
        args.registry,
        preset=args.preset,
        progress=not args.no_progress,
        stop_after=args.stop_after,
        use_shipped=False,
        **overrides,
    )
    if result is None:
        work = (args.work or default_work_dir()).expanduser()
        print(f"stopped after {args.stop_after}: {work / args.stop_after}")
        return 0
    print(summary(result))
    return 0


def summary(result: BootstrapResult) -> str:
    """A few lines: where the model is, how good it is against the baselines, how long it took."""
    record = result.record
    evaluation = record.get("evaluation", {})
    lines = evaluation.get("line_completion", {})
    perplexity = evaluation.get("perplexity", {})
    out = [
        f"{record['name']} {record['version']} is production in {record['registry']}"
        + (
            " (the shipped model, registered from models/)"
            if record.get("shipped")
            else " (already built: cached)"
            if result.cached
            else ""
        ),
        f"  {record.get('parameters') or 0:,} parameters, artifact "
        f"{record.get('artifact_bytes', 0) / 1e6:.1f} MB ({record['config']['precision']})",
        "  held-out line completion (exact match / edit similarity):",
    ]
    for name, scores in lines.items():
        out.append(
            f"    {name:<22} {scores['exact_match']:6.1%}  {scores['edit_similarity']:.3f}"
            f"  (n={scores['n']})"
        )
    if perplexity:
        out.append(
            f"  held-out perplexity per token: model {perplexity['model']:.2f}, "
            f"bigram {perplexity['bigram']:.2f}, unigram {perplexity['unigram']:.2f} "
            f"({perplexity['tokens']} tokens)"
        )
    seconds = record.get("seconds_this_run", {})
    if seconds and not result.cached:
        out.append(
            "  wall time: "
            + ", ".join(f"{stage} {value:.0f} s" for stage, value in seconds.items())
        )
    return "\n".join(out)
