"""`acepilot team-server`: one machine serves completions to the whole team.

    acepilot team-server --registry DIR --model NAME [--host 127.0.0.1 --port 8000]
    acepilot team-server token create NAME | list | revoke NAME [--registry DIR]
    acepilot team-server admin create NAME | list | revoke NAME [--registry DIR]

An OpenAI-compatible completions server (docs/team-server.md) with continuous
batching, per-user KV reuse, bearer tokens, limits and hot swap of the
registry's production version. Tokens live hashed in a SQLite file inside the
registry directory (--tokens-db to put it elsewhere). The dashboard at
/dashboard (sign in with an admin token) manages tokens and shows usage
reports, kept in a SQLite file beside the token database.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

from acepilot.server.commands.options import add_registry, positive_int

BACKLOG = 2048  # uvicorn's default listen backlog (lowered to fit the open-file limit)
KEEP_ALIVE_S = 5  # an idle kept-alive connection is closed after this (uvicorn's default)
SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*$", re.IGNORECASE)


def byte_size(text: str) -> int:
    """'8G', '512M', '1048576' -> bytes (powers of 1024)."""
    match = SIZE.match(text)
    if not match:
        raise argparse.ArgumentTypeError(f"expected a size such as 8G or 512M, got {text!r}")
    scale = 1024 ** " kmgt".index(match.group(2).lower() or " ")
    return int(float(match.group(1)) * scale)


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0 (an infinite timeout would never fire)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    parser = subparsers.add_parser(
        "team-server",
        help="serve completions to a team over HTTP (OpenAI API), or manage its tokens",
        description=(
            "Run the team server: POST /v1/completions (OpenAI completions API, streaming), "
            "GET /v1/models, POST /v1/telemetry, /healthz, /readyz, /metrics. Concurrent "
            "requests share forward passes (continuous batching); each token's requests reuse "
            "its KV cache; the server follows the registry's production pointer and swaps "
            "versions without failing requests. Every /v1 request needs "
            "'Authorization: Bearer TOKEN' (see the 'token' sub-command)."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_registry(parser)
    parser.add_argument("--tokens-db", type=Path, help="token database (default: in the registry)")
    parser.add_argument("--model", help="registry model name to serve (its production version)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on")
    parser.add_argument(
        "--device", choices=("cpu", "cuda"), help="force a device (default: the manifest's)"
    )
    parser.add_argument(
        "--threads", type=positive_int, help="onnxruntime threads (default: all cores)"
    )
    group = parser.add_argument_group("batching and memory")
    group.add_argument(
        "--max-batch",
        type=positive_int,
        default=16,
        help="most generations sharing a forward pass (1 turns batching off)",
    )
    group.add_argument(
        "--kv-memory",
        type=byte_size,
        default=byte_size("8G"),
        help="KV cache budget (address space; rows of max_length) for users' caches",
    )
    group.add_argument(
        "--prefill-chunk",
        type=positive_int,
        default=256,
        help="prompt tokens prefilled per step (running generations wait at most one chunk)",
    )
    group.add_argument(
        "--inline-prefill",
        type=int,
        default=8,
        help="a prompt adding at most this many tokens to a user's cache joins the running "
        "decode steps instead of a prefill run of its own (0: never)",
    )
    group.add_argument(
        "--poll", type=positive_float, default=2.0, help="seconds between registry checks"
    )
    limits = parser.add_argument_group("limits")
    limits.add_argument(
        "--max-queue", type=positive_int, default=64, help="queued requests (503 past it)"
    )
    limits.add_argument(
        "--max-body", type=byte_size, default=byte_size("1M"), help="request body size (413)"
    )
    limits.add_argument(
        "--max-prompt-tokens", type=positive_int, default=4096, help="prompt tokens (400)"
    )
    limits.add_argument("--max-tokens", type=positive_int, default=512, help="max_tokens (400)")
    limits.add_argument(
        "--rate", type=positive_float, default=20.0, help="requests/s per token (429)"
    )
    limits.add_argument("--burst", type=positive_int, default=40, help="burst per token")
    limits.add_argument(
        "--deadline", type=positive_float, default=30.0, help="seconds per request, queue included"
    )
    limits.add_argument(
        "--client-timeout",
        type=positive_float,
        default=10.0,
        help="seconds a client may take to send a request's headers (the connection is closed), "
        "and again its body (408)",
    )
    limits.add_argument(
        "--max-connections",
        type=positive_int,
        default=1000,
        help="open connections; past it the longest-idle one is closed (lowered to fit the "
        "open-file limit, ulimit -n)",
    )
    parser.add_argument(
        "--metrics-token",
        metavar="NAME",
        help="serve /metrics only to the token named NAME (token create NAME); default: open",
    )
    board = parser.add_argument_group("dashboard and usage reports")
    board.add_argument(
        "--no-dashboard",
        dest="dashboard",
        action="store_false",
        help="do not serve /dashboard (usage is still counted)",
    )
    board.add_argument(
        "--usage-db", type=Path, help="usage database (default: beside the token database)"
    )
    board.add_argument(
        "--usage-retention",
        type=positive_float,
        default=90.0,
        metavar="DAYS",
        help="usage rows older than this are deleted",
    )
    board.add_argument(
        "--session-hours",
        type=positive_float,
        default=8.0,
        help="a dashboard sign-in lasts this long",
    )
    tls = parser.add_argument_group("TLS (or terminate TLS at a reverse proxy)")
    tls.add_argument("--tls-cert", type=Path, help="certificate chain (PEM)")
    tls.add_argument("--tls-key", type=Path, help="private key (PEM)")
    parser.set_defaults(func=run_team_server)

    commands = parser.add_subparsers(dest="team_command", metavar="token|admin")
    for kind, what, effect in (
        ("token", "bearer tokens (the API's)", "401 from then on"),
        ("admin", "admin tokens (sign-in to /dashboard)", "its sessions end"),
    ):
        token = commands.add_parser(
            kind,
            help=f"create, list or revoke {what}",
            description=f"Manage the team server's {what}, stored as sha256 hashes.",
        )
        actions = token.add_subparsers(dest="token_action", metavar="ACTION", required=True)
        create = actions.add_parser("create", help="issue a token for NAME and print it once")
        create.add_argument("name", help="who the token is for, e.g. alice@laptop")
        actions.add_parser("list", help="list names, creation and revocation times")
        revoke = actions.add_parser("revoke", help=f"revoke NAME's token ({effect})")
        revoke.add_argument("name")
        for sub in (create, revoke, actions.choices["list"]):
            add_registry(sub, default=argparse.SUPPRESS)
            sub.add_argument("--tokens-db", type=Path, default=argparse.SUPPRESS)
        token.set_defaults(func=run_token, token_kind=kind)


def tokens_path(args: argparse.Namespace) -> Path:
    from acepilot.server.registry import default_root
    from acepilot.server.team.tokens import default_db

    if getattr(args, "tokens_db", None):
        return Path(args.tokens_db)
    return default_db(Path(args.registry) if getattr(args, "registry", None) else default_root())


def run_token(args: argparse.Namespace) -> int:
    from acepilot.server.team.tokens import AdminStore, TokenStore

    store = (AdminStore if args.token_kind == "admin" else TokenStore)(tokens_path(args))
    if args.token_action == "create":
        token = store.create(args.name)
        print(token)
        print(f"token for {args.name} (shown once; stored hashed in {store.path})", file=sys.stderr)
    elif args.token_action == "revoke":
        store.revoke(args.name)
        print(f"revoked {args.name}", file=sys.stderr)
    else:
        for info in store.list():
            state = f"revoked {info.revoked}" if info.revoked else "active"
            print(f"{info.name}\tcreated {info.created}\t{state}")
    return 0


def run_team_server(args: argparse.Namespace) -> int:
    import uvicorn

    from acepilot.server.engine import Engine
    from acepilot.server.engine.batch import BatchEngine
    from acepilot.server.errors import AcepilotError
    from acepilot.server.registry import Registry, check_name
    from acepilot.server.team.app import TeamServer
    from acepilot.server.team.connections import MAX_HEAD_BYTES, fit_to_file_limit, guarded_protocol
    from acepilot.server.team.limits import Limits
    from acepilot.server.team.logs import RateLimitFilter, install
    from acepilot.server.team.metrics import ServerMetrics
    from acepilot.server.team.models import ModelManager
    from acepilot.server.team.tokens import TokenStore

    if not args.model:
        raise AcepilotError("team-server: --model NAME is required (a registry model name)")
    check_name(args.model)
    if bool(args.tls_cert) != bool(args.tls_key):
        raise AcepilotError("team-server: give both --tls-cert and --tls-key, or neither")
    registry = Registry(args.registry)
    if not registry.versions(args.model):
        raise registry.unknown(args.model)
    metrics = ServerMetrics()

    def load(entry: Any) -> BatchEngine:
        engine = Engine.load(entry, threads=args.threads, device=args.device, max_sessions=1)
        return BatchEngine(
            engine,
            max_batch=args.max_batch,
            kv_memory=args.kv_memory,
            prefill_chunk=args.prefill_chunk,
            max_queue=args.max_queue,
            inline_prefill=max(0, args.inline_prefill),
            on_step=lambda size: metrics.batch.observe(size),
        )

    manager = ModelManager(registry, args.model, load, metrics, poll_s=args.poll)
    limits = Limits(
        max_body_bytes=args.max_body,
        max_prompt_tokens=args.max_prompt_tokens,
        max_tokens=args.max_tokens,
        rate=args.rate,
        burst=args.burst,
        deadline_s=args.deadline,
        client_timeout_s=args.client_timeout,
    )
    tokens = TokenStore(tokens_path(args))
    usage, dashboard = usage_and_dashboard(args, tokens, manager)
    server = TeamServer(
        manager,
        tokens,
        metrics,
        limits,
        metrics_token=args.metrics_token,
        usage=usage,
        dashboard=dashboard,
    )
    connections, backlog = fit_to_file_limit(args.max_connections, BACKLOG)
    protocol = guarded_protocol(
        connections,
        args.client_timeout,
        lambda reason: metrics.connections_closed.inc(reason=reason),
    )
    config = uvicorn.Config(
        server.app(),
        host=args.host,
        port=args.port,
        http=protocol,
        backlog=backlog,
        h11_max_incomplete_event_size=MAX_HEAD_BYTES,
        timeout_keep_alive=KEEP_ALIVE_S,
        log_level="info" if args.verbose else "warning",
        access_log=args.verbose >= 2,
        ssl_certfile=str(args.tls_cert) if args.tls_cert else None,
        ssl_keyfile=str(args.tls_key) if args.tls_key else None,
        timeout_graceful_shutdown=10,
    )
    install(RateLimitFilter())  # after uvicorn.Config, which sets up uvicorn's log handlers
    scheme = "https" if args.tls_cert else "http"
    lowered = (
        f", connections lowered to {connections} by the open-file limit"
        if connections < args.max_connections
        else ""
    )
    print(
        f"acepilot team-server: {scheme}://{args.host}:{args.port} serving {args.model} "
        f"from {registry.root} (batch {args.max_batch}{lowered})",
        file=sys.stderr,
        flush=True,
    )
    manager.start()
    usage.start()
    try:
        uvicorn.Server(config).run()
    finally:
        manager.stop()
        usage.stop()
    return 0


def usage_and_dashboard(args: argparse.Namespace, tokens: Any, manager: Any) -> tuple[Any, Any]:
    """The usage store (always) and the dashboard (unless --no-dashboard)."""
    import os

    from acepilot.server.errors import AcepilotError
    from acepilot.server.team.dashboard import Dashboard
    from acepilot.server.team.sessions import ENV_ADMIN, MIN_ENV_TOKEN_CHARS, Sessions
    from acepilot.server.team.store import UsageStore, default_db
    from acepilot.server.team.tokens import AdminStore

    usage = UsageStore(
        args.usage_db or default_db(tokens.path), retention_days=args.usage_retention
    )
    if not args.dashboard:
        return usage, None
    env_token = os.environ.get(ENV_ADMIN) or None
    if env_token is not None and len(env_token) < MIN_ENV_TOKEN_CHARS:
        raise AcepilotError(
            f"team-server: ${ENV_ADMIN} must be at least {MIN_ENV_TOKEN_CHARS} characters "
            "(or unset it and use: acepilot team-server admin create NAME)"
        )
    sessions = Sessions(
        AdminStore(tokens.path), lifetime_s=args.session_hours * 3600, env_token=env_token
    )
    return usage, Dashboard(usage, tokens, sessions, manager)
