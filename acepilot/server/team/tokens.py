"""Bearer tokens for the team server, in a small SQLite database next to the registry.

A token is `acp_` + 43 characters of URL-safe base64 (32 random bytes). Only its
sha256 is stored: a stolen database does not give working tokens, and a
random 256-bit secret needs no salt or slow hash. Lookup is by hash (an
index), followed by a constant-time comparison of the digests. The plain
token is shown once, by `create`, and never logged.

The database is opened per call (SQLite is cheap to open), so `acepilot
team-server token revoke` in another process takes effect on the next request.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from acepilot.server.errors import AcepilotError

PREFIX = "acp_"
TOKEN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}$")
DB_NAME = "team-tokens.sqlite3"
MAX_TOKEN_CHARS = 256

ADMIN_PREFIX = "acpadm_"
SCHEMA = """
CREATE TABLE IF NOT EXISTS {table} (
    name TEXT PRIMARY KEY,
    hash TEXT NOT NULL UNIQUE,
    created TEXT NOT NULL,
    revoked TEXT
)
"""


class TokenError(AcepilotError):
    """A token command cannot be done (bad name, duplicate, unknown name)."""


@dataclass(frozen=True)
class TokenInfo:
    name: str
    created: str
    revoked: str | None


def default_db(registry_root: Path) -> Path:
    """The token database of a registry: a file inside the registry directory."""
    return Path(registry_root) / DB_NAME


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class TokenStore:
    """Create, list, revoke and check tokens (see the module docstring)."""

    table = "tokens"
    prefix = PREFIX
    what = "token"
    command = "acepilot team-server token list"

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(sqlite3.connect(self.path, timeout=5.0)) as connection:
            connection.execute(SCHEMA.format(table=self.table))
            with connection:  # a transaction: committed on success
                yield connection

    def create(self, name: str) -> str:
        """A new token for `name` (a revoked name may be issued again); returns the token."""
        if not isinstance(name, str) or not TOKEN_NAME.match(name):
            raise TokenError(
                f"invalid token name {name!r}: use letters, digits and . _ @ + - "
                "(at most 64 characters, starting with a letter or digit)"
            )
        token = self.prefix + secrets.token_urlsafe(32)
        with self._connect() as db:
            row = db.execute(f"SELECT revoked FROM {self.table} WHERE name = ?", (name,)).fetchone()
            if row is not None and row[0] is None:
                raise TokenError(
                    f"a {self.what} named {name!r} exists; revoke it first to issue a new one"
                )
            db.execute(f"DELETE FROM {self.table} WHERE name = ?", (name,))
            db.execute(
                f"INSERT INTO {self.table} (name, hash, created, revoked) VALUES (?, ?, ?, NULL)",
                (name, token_hash(token), now()),
            )
        return token

    def list(self) -> list[TokenInfo]:
        with self._connect() as db:
            rows = db.execute(
                f"SELECT name, created, revoked FROM {self.table} ORDER BY name"
            ).fetchall()
        return [TokenInfo(str(name), str(created), revoked) for name, created, revoked in rows]

    def revoke(self, name: str) -> None:
        with self._connect() as db:
            cursor = db.execute(
                f"UPDATE {self.table} SET revoked = ? WHERE name = ? AND revoked IS NULL",
                (now(), name),
            )
            if cursor.rowcount == 0:
                known = db.execute(f"SELECT 1 FROM {self.table} WHERE name = ?", (name,)).fetchone()
                raise TokenError(
                    f"{self.what} {name!r} is already revoked"
                    if known
                    else f"no {self.what} named {name!r} (see: {self.command})"
                )

    def check(self, token: str) -> str | None:
        """The name of an active token, or None (unknown, revoked, malformed)."""
        if not token.startswith(self.prefix) or len(token) > MAX_TOKEN_CHARS:
            return None
        digest = token_hash(token)
        with self._connect() as db:
            row = db.execute(
                f"SELECT name, hash FROM {self.table} WHERE hash = ? AND revoked IS NULL",
                (digest,),
            ).fetchone()
        if row is None or not hmac.compare_digest(str(row[1]), digest):
            return None
        return str(row[0])


class AdminStore(TokenStore):
    """The dashboard's admin tokens: the same database, a table of their own.

    An admin token (`acpadm_...`) signs in to /dashboard and reads its JSON
    report; it is not an API token, and an API token is not an admin token."""

    table = "admins"
    prefix = ADMIN_PREFIX
    what = "admin token"
    command = "acepilot team-server admin list"

    def active(self, name: str) -> bool:
        """Whether `name` holds an active admin token (a revoked admin's sessions end)."""
        with self._connect() as db:
            row = db.execute(
                f"SELECT 1 FROM {self.table} WHERE name = ? AND revoked IS NULL", (name,)
            ).fetchone()
        return row is not None
