"""`acepilot complete PATH --line L --column C`: print the completion at a position.

The prompt is the file's text before the cursor (the language server builds
richer prompts); the completion is cut where the current block ends: at the
first blank line, at a line indented less than the cursor's line, or after
MAX_LINES lines.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from acepilot.server.errors import AcepilotError
from acepilot.server.registry import Registry

MAX_LINES = 20
MAX_FILE_BYTES = 32 << 20
TAB_SIZE = 8


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    parser = subparsers.add_parser(
        "complete",
        help="print the completion at a position of a file",
        description=(
            "Print the model's completion at LINE:COLUMN of PATH, using the text before that "
            "position as the prompt. LINE and COLUMN are 1-based; COLUMN counts characters "
            "(not bytes), and one past the last character is the end of the line. The "
            "completion ends with the current block: at a blank line or at a line indented "
            "less than the cursor's line."
        ),
    )
    parser.add_argument("path", type=Path, help="the source file (UTF-8)")
    parser.add_argument(
        "--line", type=positive_int, required=True, help="1-based line of the cursor"
    )
    parser.add_argument(
        "--column",
        type=positive_int,
        required=True,
        help="1-based column of the cursor, in characters (line length + 1 = end of line)",
    )
    parser.add_argument(
        "--model",
        help="registry name (its production version) or an entry directory "
        "(default: $ACEPILOT_MODEL, else the registry's only model)",
    )
    parser.add_argument(
        "--registry",
        type=Path,
        help="registry directory (default: $ACEPILOT_REGISTRY or ~/.local/share/acepilot/registry)",
    )
    parser.add_argument(
        "--max-tokens", type=positive_int, default=64, help="most tokens to generate (64)"
    )
    parser.add_argument(
        "--temperature",
        type=non_negative_float,
        default=0.0,
        help="sampling temperature; 0 (the default) is greedy",
    )
    parser.add_argument(
        "--threads", type=positive_int, help="onnxruntime threads (default: all cores)"
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print a JSON object with the completion, finish reason, token counts and timings",
    )
    parser.set_defaults(func=run_complete)


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0.0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text}")
    return value


def run_complete(args: argparse.Namespace) -> int:
    from acepilot.server.engine import Engine, GenerationParams

    text = read_source(args.path)
    offset = cursor_offset(text, args.line, args.column, args.path)
    prefix = text[:offset]
    line_prefix = prefix[prefix.rfind("\n") + 1 :]

    registry = Registry(args.registry)
    model = args.model or os.environ.get("ACEPILOT_MODEL") or only_model(registry)
    engine = Engine.load(registry.resolve(model), threads=args.threads)
    params = GenerationParams(
        max_new_tokens=args.max_tokens,
        temperature=args.temperature,
        stop=("\n\n",),  # a blank line ends the block anyway: stop generating there
    )
    result = engine.generate(prefix, params)
    completion = cut_at_block_end(result.text, line_prefix)
    if args.json:
        print(
            json.dumps(
                {
                    "completion": completion,
                    "model": f"{engine.entry.name} {engine.entry.version}",
                    "finish_reason": result.finish_reason,
                    "prompt_tokens": result.prompt_tokens,
                    "truncated_tokens": result.truncated_tokens,
                    "generated_tokens": len(result.token_ids),
                    "prefill_ms": round(result.prefill_ms, 2),
                    "decode_ms": round(result.decode_ms, 2),
                }
            )
        )
    else:
        print(completion)
    return 0


def read_source(path: Path) -> str:
    try:
        if path.is_dir():
            raise AcepilotError(f"{path}: is a directory, not a source file")
        if path.stat().st_size > MAX_FILE_BYTES:
            raise AcepilotError(f"{path}: too large for a source file (over 32 MiB)")
        data = path.read_bytes()
    except FileNotFoundError:
        raise AcepilotError(f"{path}: no such file") from None
    except OSError as exc:
        raise AcepilotError(f"{path}: cannot read the file ({exc.strerror or exc})") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise AcepilotError(f"{path}: not UTF-8 text (byte {exc.start})") from None


def cursor_offset(text: str, line: int, column: int, path: Path) -> int:
    """The character offset of 1-based (line, column); a clear error when out of range.

    Lines end at "\\n"; a "\\r" before it is not a column. The line after a
    final newline exists (the cursor can be at the start of an empty last line).
    """
    lines = text.split("\n")
    if line > len(lines):
        raise AcepilotError(
            f"{path}: line {line} is out of range (the file has {len(lines)} lines)"
        )
    content = lines[line - 1].removesuffix("\r")
    if column > len(content) + 1:
        raise AcepilotError(
            f"{path}: column {column} is out of range on line {line} "
            f"(it has {len(content)} characters; the end of the line is column {len(content) + 1})"
        )
    return sum(len(previous) + 1 for previous in lines[: line - 1]) + column - 1


def only_model(registry: Registry) -> str:
    names = registry.names()
    if len(names) == 1:
        return names[0]
    if not names:
        raise AcepilotError(
            f"no models in {registry.root}: build one with "
            "`acepilot model build SOURCE --precision int4`, or pass --model"
        )
    raise AcepilotError(f"several models in {registry.root} ({', '.join(names)}): pass --model")


def indent_width(line: str) -> int:
    expanded = line.expandtabs(TAB_SIZE)
    return len(expanded) - len(expanded.lstrip(" \t"))


def cut_at_block_end(completion: str, line_prefix: str, max_lines: int = MAX_LINES) -> str:
    """Keep the completion up to the end of the cursor's block.

    The first line continues the cursor's line and is always kept; a later
    line ends the completion if it is blank or indented less than the
    cursor's line (`line_prefix`: that line's text before the cursor).
    Trailing whitespace is dropped.
    """
    lines = completion.split("\n")
    base = indent_width(line_prefix)
    kept = [lines[0]]
    for line in lines[1:]:
        if len(kept) >= max_lines or not line.strip() or indent_width(line) < base:
            break
        kept.append(line)
    return "\n".join(kept).rstrip()
