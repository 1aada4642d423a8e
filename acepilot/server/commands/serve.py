"""`acepilot serve`: the language server, on stdio (default) or TCP.

    acepilot serve                       # an editor starts it and talks over stdio
    acepilot serve --tcp 127.0.0.1:2087  # for debugging, or editors that connect

Settings come from the editor (initializationOptions, workspace/configuration);
the environment gives defaults: $ACEPILOT_MODEL, $ACEPILOT_REGISTRY. Logs go to
stderr or --log-file, never stdout, and never hold document text below -vv.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="run the language server (stdio, or --tcp HOST:PORT)",
        description=(
            "Run the Acepilot language server: inline completions (LSP 3.18 "
            "textDocument/inlineCompletion) and the same completion as textDocument/completion. "
            "It speaks LSP on stdin/stdout unless --tcp is given."
        ),
    )
    parser.add_argument(
        "--tcp", metavar="HOST:PORT", type=host_port, help="listen on TCP instead of stdio"
    )
    parser.add_argument("--log-file", type=Path, help="write logs to this file instead of stderr")
    parser.set_defaults(func=run_serve)


def host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT such as 127.0.0.1:2087, got {text!r}")
    return host.strip("[]"), int(port)


def run_serve(args: argparse.Namespace) -> int:
    from acepilot.server.lsp.logs import setup_logging
    from acepilot.server.lsp.server import create_server
    from acepilot.server.lsp.transport import run_stdio, run_tcp

    setup_logging(args.verbose, args.log_file)
    if args.tcp:
        host, port = args.tcp
        return run_tcp(host, port, create_server)
    return run_stdio(create_server)
