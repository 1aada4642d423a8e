"""`acepilot demo` (`make run`): completions from Acepilot's own default model, offline.

No pretrained model can be downloaded on many self-hosted networks. When no
model is configured (--model or $ACEPILOT_MODEL), the demo registers the
shipped acepilot-tiny (models/acepilot-tiny, sha256 checked; `acepilot
bootstrap` rebuilds it from scratch) and completes a tour of small files in
Python, JavaScript, TypeScript, Go and Rust, at the end of a file (prefix
only) and inside one (with the code after the cursor as the suffix), each
with its latency — or one position of your own file (--file). Every
completion is what an editor would show there: the language server's own
pipeline, headless (acepilot/server/lsp/headless.py).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from acepilot.server.commands.options import add_registry
from acepilot.server.errors import AcepilotError
from acepilot.training.commands.demo_samples import SAMPLES

MODEL_NAME = "acepilot-tiny"


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    parser = subparsers.add_parser(
        "demo",
        help=f"completions at sample positions in five languages with the configured model, "
        f"else {MODEL_NAME} (shipped in models/)",
        description=(
            "Print what the editor would show at a few positions of sample files in Python, "
            "JavaScript, TypeScript, Go and Rust (at a file's end, and inside a file with the "
            "code after the cursor as the suffix), each with its latency; or at a position of "
            "your own file (--file, --line, --column). The model is --model / $ACEPILOT_MODEL "
            f"when given; otherwise {MODEL_NAME}, Acepilot's own default model, shipped built "
            "in models/acepilot-tiny and registered on first use with its sha256 checked "
            "(`acepilot bootstrap` reproduces it from scratch)."
        ),
    )
    parser.add_argument(
        "--model",
        help="registry model name or entry directory (default: $ACEPILOT_MODEL, else "
        f"{MODEL_NAME}, built if needed)",
    )
    parser.add_argument(
        "--cache",
        type=Path,
        help=f"where {MODEL_NAME} is trained and kept "
        "(default: $ACEPILOT_CACHE, else ~/.cache/acepilot)",
    )
    add_registry(parser)
    parser.add_argument(
        "--preset",
        default="default",
        choices=("default", "small"),
        help=f"the {MODEL_NAME} recipe when it must be built (small: a one-minute miniature)",
    )
    parser.add_argument(
        "--file",
        type=Path,
        help="file to complete (default: a tour of sample files in five languages)",
    )
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
    from acepilot.server.registry import Registry

    if args.file is None and (args.line is not None or args.column is not None):
        raise AcepilotError("--line and --column need --file")
    root = cache_root(args.cache)
    registry = Registry(args.registry)
    configured = args.model or os.environ.get("ACEPILOT_MODEL")
    if configured:
        print(f"[1/2] model {configured} (configured) from {registry.root}")
        entry = registry.resolve(configured)
    else:
        print(
            f"[1/2] {MODEL_NAME}, Acepilot's own model (see docs/acepilot-tiny.md)",
            flush=True,
        )
        entry = default_model_entry(root, registry, args.preset)
    # The editor's pipeline (acepilot/server/lsp/headless.py): what VS Code would show.
    settings = {"backend": "local", "model": str(entry.path), "maxNewTokens": args.max_tokens}
    if args.file is None:
        return run_tour(root, entry, settings)
    return run_file(args, entry, settings)


def run_file(args: argparse.Namespace, entry: Any, settings: dict[str, Any]) -> int:
    """One position of the user's file (--file, --line, --column)."""
    from acepilot.server.lsp.headless import complete_file, cursor_position, read_source

    path, line, column = target_position(args)
    text = read_source(path)
    line0, column0 = cursor_position(text, line, column, path)
    print(f"[2/2] completing {path} at line {line}, column {column}")
    done = complete_file(
        path=path, text=text, line=line0, column=column0, settings=settings, root=path.parent
    )
    print()
    print(render(text, line0, column0, done.text))
    print()
    print(f"completion by {entry.name} {entry.version} ({describe(entry, done)}): {cost(done)}")
    print(f"completion text: {done.text!r}")
    return 0


def run_tour(root: Path, entry: Any, settings: dict[str, Any]) -> int:
    """The sample files, one model load, each completion with its latency."""
    from acepilot.server.lsp.headless import Position, complete_files

    folder = root / "demo"
    folder.mkdir(parents=True, exist_ok=True)
    positions = []
    for sample in SAMPLES:
        text, line, column = sample.split()
        path = folder / sample.filename
        if not path.exists() or path.read_text("utf-8") != text:
            path.write_text(text, "utf-8")
        positions.append(Position(path=path, text=text, line=line, column=column))
    fim = "reads the suffix" if entry.manifest.get("tokenizer", {}).get("fim") else "prefix only"
    print(f"[2/2] completing {len(SAMPLES)} positions in {folder} (the model {fim})")
    done = complete_files(positions, settings=settings, root=folder)
    for sample, position, completion in zip(SAMPLES, positions, done, strict=True):
        where = "inside the file: prefix and suffix" if sample.has_suffix else "end of the file"
        print(f"\n--- {sample.language}, {sample.filename} ({where})")
        print(render(position.text, position.line, position.column, completion.text))
        print(f"    {completion.latency_ms:.0f} ms: {cost(completion)}")
    print(f"\ncompletions by {entry.name} {entry.version} ({describe(entry, done[0])})")
    print("| language | file | position | completion | latency |")
    print("|---|---|---|---|---|")
    for sample, completion in zip(SAMPLES, done, strict=True):
        shown = completion.text.replace("|", "\\|").replace("\n", "\\n")
        where = "with suffix" if sample.has_suffix else "prefix only"
        row = (
            sample.language,
            sample.filename,
            where,
            f"`{shown}`",
            f"{completion.latency_ms:.0f} ms",
        )
        print("| " + " | ".join(row) + " |")
    return 0


def describe(entry: Any, done: Any) -> str:
    return f"{entry.manifest.get('precision')}, {done.device}"


def cost(done: Any) -> str:
    result = done.result
    if result is None:
        return "no generation"
    return (
        f"{result.generated_tokens} tokens, prompt {result.prompt_tokens} tokens, "
        f"prefill {result.prefill_ms:.0f} ms, decode {result.decode_ms:.0f} ms "
        f"({result.finish_reason})"
    )


def render(text: str, line: int, column: int, completion: str) -> str:
    """Six lines before the cursor, the completion (green on a terminal), two after."""
    lines = text.split("\n")
    before = "\n".join(lines[max(0, line - 6) : line] + [lines[line][:column]])
    after = "\n".join([lines[line][column:]] + lines[line + 1 : line + 3]).rstrip()
    shown = f"\033[1;32m{completion}\033[0m" if sys.stdout.isatty() else completion
    if after.strip() and sys.stdout.isatty():
        after = f"\033[2m{after}\033[0m"
    return before + shown + after


def default_model_entry(root: Path, registry: Any, preset: str) -> Any:
    """Acepilot's default model: the shipped one, else built (trained, gated, registered)."""
    from acepilot.training.commands.bootstrap import ensure_tiny, summary

    result = ensure_tiny(root / "bootstrap", registry.root, preset=preset)
    assert result is not None
    print(summary(result))
    return result.entry


def target_position(args: argparse.Namespace) -> tuple[Path, int, int]:
    """--file and its 1-based cursor (default: the end of its last line)."""
    from acepilot.server.lsp.headless import read_source

    path = args.file
    lines = read_source(path).split("\n")
    line = args.line if args.line is not None else len(lines)
    if not 1 <= line <= len(lines):
        raise AcepilotError(f"{path}: line {line} is out of range (1..{len(lines)})")
    column = args.column if args.column is not None else len(lines[line - 1]) + 1
    if column < 1:
        raise AcepilotError(f"column must be at least 1, got {column}")
    return path, line, column
