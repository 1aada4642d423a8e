"""`acepilot complete PATH --line L --column C`: print what the editor would show there.

A headless editor (acepilot/server/lsp/headless.py): the file goes through the
language server's own pipeline (same prompt, same stop, same post-processing),
so the printed completion is the ghost text an editor shows for the same text
and cursor with the same model and settings. `--workspace DIR` indexes DIR and
adds the editor's workspace context (acepilot/server/context/); `--explain`
prints the prompt's parts with their source and token count before the
completion: what a user debugging a bad suggestion wants to see.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from acepilot.server.commands.options import (
    add_model,
    add_registry,
    non_negative_float,
    positive_int,
)

if TYPE_CHECKING:
    from acepilot.server.lsp.prompt import PromptPart


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    parser = subparsers.add_parser(
        "complete",
        help="print the completion at a position of a file",
        description=(
            "Print the completion an editor would show at LINE:COLUMN of PATH: the language "
            "server's prompt (header, the text before and, for FIM models, after the cursor) "
            "and post-processing (single line, or the rest of the block). LINE and COLUMN are "
            "1-based; COLUMN counts characters (not bytes), and one past the last character "
            "is the end of the line."
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
    add_model(parser)
    add_registry(parser)
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
        "--root", type=Path, help="the workspace folder (default: the current directory)"
    )
    parser.add_argument(
        "--workspace",
        type=Path,
        help=(
            "index this folder (as the editor does its workspace) and add its cross-file "
            "context to the prompt; it is also the root"
        ),
    )
    parser.add_argument(
        "--explain",
        action="store_true",
        help=(
            "print the prompt's parts (prefix, suffix, each context chunk with its file, "
            "kind and token count) before the completion"
        ),
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print a JSON object with the completion, finish reason, token counts and timings",
    )
    parser.set_defaults(func=run_complete)


def model_settings(
    model: str | None, registry: Path | None, hint: str = "pass --model"
) -> dict[str, Any]:
    """The language server's settings for a model chosen on the command line."""
    from acepilot.server.production import default_model
    from acepilot.server.registry import Registry

    chosen = default_model(Registry(registry), model, hint)
    return {"backend": "local", "model": chosen, "registry": str(registry) if registry else None}


def run_complete(args: argparse.Namespace) -> int:
    from acepilot.server.lsp.headless import complete_file, cursor_position, read_source

    text = read_source(args.path)
    line, column = cursor_position(text, args.line, args.column, args.path)
    settings = {
        **model_settings(args.model, args.registry),
        "maxNewTokens": args.max_tokens,
        "temperature": args.temperature,
        "threads": args.threads,
    }
    root = args.root or Path.cwd()
    done = complete_file(
        path=args.path,
        text=text,
        line=line,
        column=column,
        settings=settings,
        root=root,
        workspace=args.workspace,
    )
    if not args.json:
        if args.explain:
            print(explain(done.parts), end="")
            print("=== completion")
        print(done.text)
        return 0
    result = done.result
    extra = {"parts": [part_json(part) for part in done.parts]} if args.explain else {}
    print(
        json.dumps(
            {
                **extra,
                "completion": done.text,
                "model": done.model,
                "finish_reason": result.finish_reason if result else None,
                "prompt_tokens": result.prompt_tokens if result else 0,
                "generated_tokens": result.generated_tokens if result else 0,
                "prefill_ms": round(result.prefill_ms, 2) if result else 0.0,
                "decode_ms": round(result.decode_ms, 2) if result else 0.0,
            }
        )
    )
    return 0


def part_json(part: PromptPart) -> dict[str, Any]:
    """One prompt part for `--explain --json`."""
    return {
        "kind": part.kind,
        "source": part.source,
        "path": part.path,
        "start_line": part.start_line,
        "end_line": part.end_line,
        "tokens": part.tokens,
        "text": part.text,
    }


def explain(parts: tuple[PromptPart, ...]) -> str:
    """The prompt's parts in prompt order, each under a line naming its source and size."""
    out = []
    for part in parts:
        where = part.path
        if part.start_line is not None and part.end_line is not None:
            where += f":{part.start_line + 1}-{part.end_line + 1}"
        label = part.kind if part.kind == part.source else f"{part.kind} {part.source}"
        out.append(f"=== {label} {where} ({part.tokens} tokens)\n")
        out.append(part.text if part.text.endswith("\n") or not part.text else part.text + "\n")
    return "".join(out)
