"""Where completions come from (stage 4 of the pipeline): base, local and remote backends.

- base.py: `Request`, `Result`, `Ticket`, the `Backend` protocol, `BackendError`.
- local.py: `LocalBackend`, the engine in this process.
- remote.py: `RemoteBackend`, an OpenAI-compatible server over HTTP.
"""

from __future__ import annotations

from acepilot.server.lsp.backends.base import (
    Backend,
    BackendError,
    Observer,
    Request,
    Result,
    Ticket,
)
from acepilot.server.lsp.backends.local import LocalBackend, result_of
from acepilot.server.lsp.backends.remote import (
    RemoteBackend,
    base_url,
    build_body,
    completions_url,
    model_supports_fim,
    parse_chunk,
    parse_event,
    parse_response,
)
from acepilot.server.lsp.config import Config

__all__ = [
    "Backend",
    "BackendError",
    "LocalBackend",
    "Observer",
    "RemoteBackend",
    "Request",
    "Result",
    "Ticket",
    "base_url",
    "build_body",
    "completions_url",
    "load_backend",
    "model_supports_fim",
    "parse_chunk",
    "parse_event",
    "parse_response",
    "result_of",
]


def load_backend(config: Config) -> Backend:
    """A backend for `config` (blocking for the local engine: call it off the loop)."""
    if config.backend == "remote":
        return RemoteBackend(config)
    return LocalBackend.load(config)
