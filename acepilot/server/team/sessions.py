"""Dashboard sign-in: admin tokens exchanged for a session cookie, with a CSRF token each.

An admin signs in with an admin token (`acepilot team-server admin create
NAME`, stored as a sha256 hash like API tokens; or $ACEPILOT_ADMIN_TOKEN,
hashed when the server starts). The answer is a random session id in a
cookie that scripts cannot read (HttpOnly), that other sites' requests do not
carry (SameSite=Strict), scoped to /dashboard, and Secure over HTTPS. The
server keeps only the sha256 of the id, so its memory does not hold a
working cookie either.

Each session has its own CSRF token, put in every form and checked on every
POST (constant-time). Sessions end after `lifetime_s` (absolute: no sliding),
on sign-out, when the admin token is revoked, and when the server restarts
(they live in memory: signing in again is cheap, and no session outlives
the process that checked its token).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

from acepilot.server.team.tokens import MAX_TOKEN_CHARS, AdminStore, token_hash

COOKIE = "acepilot_session"
LOGIN_COOKIE = "acepilot_login"  # the sign-in form's CSRF value (double submit: no session yet)
ENV_ADMIN = "ACEPILOT_ADMIN_TOKEN"
ENV_ADMIN_NAME = "admin (env)"
MAX_SESSIONS = 1000
MIN_ENV_TOKEN_CHARS = 24


@dataclass
class Session:
    admin: str
    csrf: str
    expires: float


def _key(session_id: str) -> str:
    return hashlib.sha256(session_id.encode("utf-8")).hexdigest()


def same(a: str | None, b: str | None) -> bool:
    """Constant-time equality of two secrets; a missing one never matches."""
    if not a or not b:
        return False
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))


class Sessions:
    """Signed-in admins (see the module docstring)."""

    def __init__(
        self,
        admins: AdminStore,
        lifetime_s: float = 8 * 3600,
        env_token: str | None = None,
        clock: object = None,
    ) -> None:
        self.admins = admins
        self.lifetime_s = lifetime_s
        self._env_hash = token_hash(env_token) if env_token else None
        self._clock = clock if callable(clock) else time.monotonic
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self._lock = threading.Lock()

    def admin_of(self, token: str) -> str | None:
        """The admin name of an admin token, or None."""
        token = token.strip()
        if not token or len(token) > MAX_TOKEN_CHARS:
            return None
        if self._env_hash is not None and same(token_hash(token), self._env_hash):
            return ENV_ADMIN_NAME
        return self.admins.check(token)

    def still_admin(self, name: str) -> bool:
        return (name == ENV_ADMIN_NAME and self._env_hash is not None) or self.admins.active(name)

    def start(self, admin: str) -> tuple[str, Session]:
        """A new session for `admin`: (the cookie value, the session)."""
        session_id = secrets.token_urlsafe(32)
        session = Session(admin, secrets.token_urlsafe(32), self._clock() + self.lifetime_s)
        with self._lock:
            self._sessions[_key(session_id)] = session
            while len(self._sessions) > MAX_SESSIONS:  # the oldest sign-in goes first
                self._sessions.popitem(last=False)
        return session_id, session

    def get(self, session_id: str | None) -> Session | None:
        """The live session of a cookie value; None if unknown, expired or revoked."""
        if not session_id or len(session_id) > 128:
            return None
        key = _key(session_id)
        with self._lock:
            session = self._sessions.get(key)
            if session is not None and session.expires <= self._clock():
                del self._sessions[key]
                session = None
        if session is None:
            return None
        if not self.still_admin(session.admin):
            self.end(session_id)
            return None
        return session

    def end(self, session_id: str | None) -> None:
        if session_id:
            with self._lock:
                self._sessions.pop(_key(session_id), None)
