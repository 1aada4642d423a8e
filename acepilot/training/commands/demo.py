"""`acepilot demo` (`make run`): a completion from Acepilot's own default model, offline.

No pretrained model can be downloaded on many self-hosted networks. When no
model is configured (--model or $ACEPILOT_MODEL), the demo makes sure
acepilot-tiny is production in the registry: built once by `acepilot
bootstrap` (acepilot/training/bootstrap.py: trained here on the Python standard
library, evaluated against baselines, int8 ONNX with its parity gate; about
6 minutes on an idle 2-core machine the first time, cached afterwards) and prints the
completion for a sample file or a position of your own file. The completion is
what an editor would show there: the language server's own pipeline, headless
(acepilot/server/lsp/headless.py). With a configured model it completes with
that one and trains nothing.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from acepilot.server.commands.options import add_registry
from acepilot.server.errors import AcepilotError

MODEL_NAME = "acepilot-tiny"

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
        help=f"complete a sample file with the configured model, else {MODEL_NAME} "
        "(built once by `acepilot bootstrap`)",
        description=(
            "Print a model's completion at a position of a file (default: a sample file, "
            "cursor at its end). The model is --model / $ACEPILOT_MODEL when given; otherwise "
            f"{MODEL_NAME}, Acepilot's own default model, which is trained, evaluated and built "
            "here the first time (`acepilot bootstrap`; about 6 minutes on an idle 2-core "
            "machine) and reused afterwards."
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
    from acepilot.server.lsp.headless import complete_file, cursor_position, read_source
    from acepilot.server.registry import Registry

    root = cache_root(args.cache)
    path, line, column = target_position(args, root)
    text = read_source(path)
    line0, column0 = cursor_position(text, line, column, path)

    registry = Registry(args.registry)
    configured = args.model or os.environ.get("ACEPILOT_MODEL")
    if configured:
        print(f"[1/2] model {configured} (configured) from {registry.root}")
        entry = registry.resolve(configured)
    else:
        print(
            f"[1/2] {MODEL_NAME}, Acepilot's own model (work dir {root / 'bootstrap'}; "
            "the first time this trains it: see docs/acepilot-tiny.md)",
            flush=True,
        )
        entry = default_model_entry(root, registry, args.preset)

    print(f"[2/2] completing {path} at line {line}, column {column}")
    # The editor's pipeline (acepilot/server/lsp/headless.py): what VS Code would show here.
    settings = {"backend": "local", "model": str(entry.path), "maxNewTokens": args.max_tokens}
    done = complete_file(
        path=path, text=text, line=line0, column=column0, settings=settings, root=path.parent
    )
    completion = done.text
    lines = text.split("\n")
    shown = "\n".join(lines[max(0, line0 - 7) : line0] + [lines[line0][:column0]])
    if sys.stdout.isatty():
        print(f"\n{shown}\033[1;32m{completion}\033[0m\n")
    else:
        print(f"\n{shown}{completion}\n")
    precision = entry.manifest.get("precision")
    result = done.result
    cost = (
        f"{result.generated_tokens} tokens, prompt {result.prompt_tokens} tokens, "
        f"prefill {result.prefill_ms:.0f} ms, decode {result.decode_ms:.0f} ms "
        f"({result.finish_reason})"
        if result is not None
        else "no generation"
    )
    print(f"completion by {entry.name} {entry.version} ({precision}, {done.device}): {cost}")
    print(f"completion text: {completion!r}")
    return 0


def default_model_entry(root: Path, registry: Any, preset: str) -> Any:
    """Acepilot's default model, built (trained, gated, registered) the first time."""
    from acepilot.training.commands.bootstrap import ensure_tiny, summary

    result = ensure_tiny(root / "bootstrap", registry.root, preset=preset)
    assert result is not None
    print(summary(result))
    return result.entry


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
    from acepilot.server.lsp.headless import read_source

    lines = read_source(path).split("\n")
    line = args.line if args.line is not None else len(lines)
    if not 1 <= line <= len(lines):
        raise AcepilotError(f"{path}: line {line} is out of range (1..{len(lines)})")
    column = args.column if args.column is not None else len(lines[line - 1]) + 1
    if column < 1:
        raise AcepilotError(f"column must be at least 1, got {column}")
    return path, line, column
