"""`acepilot demo`: the whole path on a model made here, from nothing to a completion.

No pretrained model can be downloaded on the machines Acepilot is developed
on, and the embedded default model is a later issue. So the demo trains the
tiny CodeGen on the Python standard library (training/tiny.py; a few minutes
on 2 cores the first time, cached afterwards), builds it through the same
`model build` path a real checkpoint takes (fused graph, int4, parity gate,
registry entry `acepilot-tiny`) and prints the engine's completion for a
sample file. The tiny model writes plausible Python, not good Python; the
machinery is the real one.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from server.errors import AcepilotError

if TYPE_CHECKING:
    from server.registry import ModelEntry, Registry

MODEL_NAME = "acepilot-tiny"
PRECISION = "int4"

# The default file to complete; the cursor goes at the end of its last line.
SAMPLE = '''\
import os


def find_python_files(root):
    """Return the paths of the Python files under root, sorted."""
    paths = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames:
            if name.endswith(".py"):
                paths.append(os.path.'''


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="train (or reuse) the tiny local model, build it int4 and complete a sample file",
        description=(
            "Train the tiny CodeGen on the Python standard library (cached), build it into "
            f"the registry as {MODEL_NAME} ({PRECISION}, through `model build` and its parity "
            "gate) and print its completion at a position of a file (default: a sample file, "
            "cursor at its end)."
        ),
    )
    parser.add_argument(
        "--cache",
        type=Path,
        help="where the tiny model is trained and kept "
        "(default: $ACEPILOT_CACHE, else ~/.cache/acepilot)",
    )
    parser.add_argument(
        "--registry",
        type=Path,
        help="registry directory (default: $ACEPILOT_REGISTRY or ~/.local/share/acepilot/registry)",
    )
    parser.add_argument("--file", type=Path, help="file to complete (default: a sample file)")
    parser.add_argument("--line", type=int, help="1-based cursor line (default: the last line)")
    parser.add_argument(
        "--column", type=int, help="1-based cursor column (default: the end of the line)"
    )
    parser.add_argument("--max-tokens", type=int, default=48, help="most tokens to generate (48)")
    parser.set_defaults(func=run_demo)


def cache_root(option: Path | None) -> Path:
    if option is not None:
        return option.expanduser()
    env = os.environ.get("ACEPILOT_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "acepilot"


def run_demo(args: argparse.Namespace) -> int:
    from server.commands.complete import cursor_offset, cut_at_block_end, read_source
    from server.registry import Registry

    root = cache_root(args.cache)
    path, line, column = target_position(args, root)
    text = read_source(path)
    offset = cursor_offset(text, line, column, path)

    print(f"[1/3] tiny CodeGen, trained on the Python standard library (cache: {root / 'tiny'})")
    checkpoint = train(root / "tiny")

    registry = Registry(args.registry)
    print(f"[2/3] {MODEL_NAME} {PRECISION} in the registry {registry.root}")
    entry = build(checkpoint, registry)

    print(f"[3/3] completing {path} at line {line}, column {column}")
    from server.engine import Engine, GenerationParams

    engine = Engine.load(entry)
    prefix = text[:offset]
    line_prefix = prefix[prefix.rfind("\n") + 1 :]
    result = engine.generate(
        prefix, GenerationParams(max_new_tokens=args.max_tokens, stop=("\n\n",))
    )
    completion = cut_at_block_end(result.text, line_prefix)
    shown = "\n".join(prefix.split("\n")[-8:])  # the end of the prompt, then the completion
    if sys.stdout.isatty():
        print(f"\n{shown}\033[1;32m{completion}\033[0m\n")
    else:
        print(f"\n{shown}{completion}\n")
    print(
        f"completion by {entry.name} {entry.version} ({PRECISION}, {engine.device}): "
        f"{len(result.token_ids)} tokens, prompt {result.prompt_tokens} tokens, "
        f"prefill {result.prefill_ms:.0f} ms, decode {result.decode_ms:.0f} ms "
        f"({result.finish_reason})"
    )
    print(f"completion text: {completion!r}")
    return 0


def target_position(args: argparse.Namespace, root: Path) -> tuple[Path, int, int]:
    """The file and 1-based cursor: --file/--line/--column, else the sample file's end."""
    if args.file is None:
        if args.line is not None or args.column is not None:
            raise AcepilotError("--line and --column need --file")
        root.mkdir(parents=True, exist_ok=True)
        path = root / "sample.py"
        if not path.exists() or path.read_text("utf-8") != SAMPLE:
            path.write_text(SAMPLE, "utf-8")
    else:
        path = args.file
    from server.commands.complete import read_source

    lines = read_source(path).split("\n")
    line = args.line if args.line is not None else len(lines)
    if not 1 <= line <= len(lines):
        raise AcepilotError(f"{path}: line {line} is out of range (1..{len(lines)})")
    column = args.column if args.column is not None else len(lines[line - 1]) + 1
    if column < 1:
        raise AcepilotError(f"column must be at least 1, got {column}")
    return path, line, column


def train(directory: Path) -> Path:
    from training.tiny import train_tiny_codegen, training_record

    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as exc:
        raise AcepilotError(
            f"training the tiny model needs torch and transformers: pip install 'acepilot[build]' ({exc})"
        ) from None
    train_tiny_codegen(directory)
    record = training_record(directory)
    if record is not None:
        held_out = record["held_out"]
        print(
            f"      {record['parameters']:,} parameters, {record['steps']} steps; held-out loss "
            f"{held_out['loss']:.2f} nats/token (unigram {held_out['baselines']['unigram']:.2f}, "
            f"bigram {held_out['baselines']['bigram']:.2f}, uniform "
            f"{held_out['baselines']['uniform']:.2f}), {held_out['bits_per_char']:.2f} bits/char"
        )
    return directory


def build(checkpoint: Path, registry: Registry) -> ModelEntry:
    """The registry entry of this checkpoint at PRECISION: reused if present, else built.

    An entry is reused only if its manifest names this exact checkpoint (the
    hash of its files): a retrained model gets a new version. The version
    used becomes the production one of `acepilot-tiny`, so `acepilot complete
    --model acepilot-tiny` serves what the demo just showed.
    """
    from server.build.checkpoint import hash_directory
    from server.build.pipeline import build_model
    from server.errors import RegistryError

    digest = hash_directory(checkpoint)
    entry = None
    for version in reversed(registry.versions(MODEL_NAME)):
        try:
            candidate = registry.entry(MODEL_NAME, version)
        except RegistryError:
            continue  # a damaged old version: build a fresh one
        manifest = candidate.manifest
        if (
            manifest.get("precision") == PRECISION
            and manifest.get("device") == "cpu"
            and manifest.get("source", {}).get("sha256") == digest
        ):
            entry = candidate
            print(f"      reusing {MODEL_NAME} {version} (same checkpoint)")
            break
    if entry is None:
        entry = build_model(
            str(checkpoint), precision=PRECISION, registry=registry, name=MODEL_NAME
        )
        parity = entry.manifest.get("parity", {})
        print(
            f"      built {MODEL_NAME} {entry.version}: parity {parity.get('status')}, "
            f"top-1 agreement {parity.get('top1_agreement', float('nan')):.3f}, "
            f"perplexity change {parity.get('perplexity_change', float('nan')):+.2%}"
        )
    if registry.production(MODEL_NAME) != entry.version:
        registry.set_production(MODEL_NAME, entry.version)
    return entry
