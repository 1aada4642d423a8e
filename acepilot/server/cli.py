"""The `acepilot` command line.

Each sub-command lives in its own module with a `register(subparsers)`
function, so adding one never touches the others. The serving side lists its
own modules here; the training side plugs in through the `acepilot.commands`
entry-point group, because `server` must never import `training`.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points

from acepilot.server import __version__
from acepilot.server.errors import AcepilotError

SERVER_COMMANDS = (
    "acepilot.server.commands.model",
    "acepilot.server.commands.complete",
    "acepilot.server.commands.serve",
    "acepilot.server.commands.team_server",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="acepilot",
        description=(
            "Self-hosted code completion: build fused ONNX CodeGen models, "
            "serve them to editors, fine-tune and gate them."
        ),
    )
    parser.add_argument("--version", action="version", version=f"acepilot {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more logging (-vv: debug)"
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name in SERVER_COMMANDS:
        importlib.import_module(module_name).register(subparsers)
    for entry in entry_points(group="acepilot.commands"):
        try:
            entry.load()(subparsers)
        except Exception as exc:  # a broken or partial training install must not stop serving
            print(
                f"acepilot: warning: the {entry.name} commands are unavailable "
                f"({type(exc).__name__}: {exc})",
                file=sys.stderr,
            )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = (logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        result = args.func(args)
    except AcepilotError as exc:
        print(f"acepilot: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("acepilot: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
