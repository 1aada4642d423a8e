"""The token store, the command line's errors, and TLS served by the team server itself."""

from __future__ import annotations

import shutil
import sqlite3
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from team_helpers import CLI, REPO, TeamServer, auth, complete, new_token

from acepilot.server.team.limits import RateLimiter, retry_after
from acepilot.server.team.tokens import TokenError, TokenStore, token_hash


def test_token_store_keeps_hashes_only(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "tokens.sqlite3")
    token = store.create("alice")
    assert store.check(token) == "alice"
    assert store.check(token + "x") is None
    assert store.check("acp_" + "A" * 43) is None
    assert store.check("") is None
    with sqlite3.connect(tmp_path / "tokens.sqlite3") as db:
        rows = db.execute("SELECT name, hash FROM tokens").fetchall()
    assert rows == [("alice", token_hash(token))]
    assert token.encode() not in (tmp_path / "tokens.sqlite3").read_bytes()

    with pytest.raises(TokenError, match="exists"):
        store.create("alice")
    with pytest.raises(TokenError, match="invalid token name"):
        store.create("bad name; drop table")
    store.revoke("alice")
    assert store.check(token) is None
    with pytest.raises(TokenError, match="already revoked"):
        store.revoke("alice")
    with pytest.raises(TokenError, match="no token named"):
        store.revoke("nobody")
    again = store.create("alice")  # a revoked name may be issued again
    assert again != token and store.check(again) == "alice" and store.check(token) is None
    assert [info.name for info in store.list()] == ["alice"]


def test_rate_limiter_refills() -> None:
    limiter = RateLimiter(rate=2.0, burst=2)
    assert limiter.allow("a", now=0.0) == 0 and limiter.allow("a", now=0.0) == 0
    wait = limiter.allow("a", now=0.0)
    assert wait == pytest.approx(0.5)
    assert retry_after(wait) == "1"
    assert limiter.allow("b", now=0.0) == 0  # buckets are per token
    assert limiter.allow("a", now=0.5) == 0


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], cwd=REPO, capture_output=True, text=True, timeout=120)


def test_cli_errors_are_clear(team_registry: Path, tmp_path: Path) -> None:
    missing = run_cli("team-server", "--registry", str(team_registry))
    assert missing.returncode == 2 and "--model NAME is required" in missing.stderr
    unknown = run_cli("team-server", "--registry", str(team_registry), "--model", "nope")
    assert unknown.returncode == 2 and "unknown model 'nope'" in unknown.stderr
    half_tls = run_cli(
        "team-server", "--registry", str(team_registry), "--model", "tiny", "--tls-cert", "x"
    )
    assert half_tls.returncode == 2 and "--tls-key" in half_tls.stderr
    for option in ("--client-timeout", "--deadline"):
        endless = run_cli(
            "team-server", "--registry", str(team_registry), "--model", "tiny", option, "inf"
        )
        assert endless.returncode == 2 and "finite number > 0" in endless.stderr
    revoke = run_cli(
        "team-server", "token", "revoke", "ghost", "--tokens-db", str(tmp_path / "t.db")
    )
    assert revoke.returncode == 2 and "no token named 'ghost'" in revoke.stderr
    assert "Authorization: Bearer" in run_cli("team-server", "--help").stdout.replace("'", "")


@pytest.fixture(scope="module")
def tls_server(
    team_registry: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[TeamServer, ssl.SSLContext]]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed (needed to make a test certificate)")
    directory = tmp_path_factory.mktemp("team-tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    server = TeamServer(
        team_registry, directory / "server.log", "--tls-cert", str(cert), "--tls-key", str(key)
    )
    server.url = server.url.replace("http://", "https://")
    trust = ssl.create_default_context(cafile=str(cert))
    try:
        deadline = time.monotonic() + 180
        while True:
            assert server.process.poll() is None, server.log_text()
            try:
                if httpx.get(server.url + "/readyz", verify=trust, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, server.log_text()
            time.sleep(0.1)
        yield server, trust
    finally:
        server.stop()


def test_tls(tls_server: tuple[TeamServer, ssl.SSLContext], team_registry: Path) -> None:
    server, trust = tls_server
    token = new_token(team_registry, "tls-user")
    response = httpx.post(
        server.url + "/v1/completions",
        headers=auth(token),
        json={"prompt": "x", "max_tokens": 4},
        verify=trust,
    )
    assert response.status_code == 200
    with pytest.raises(httpx.HTTPError):  # plain HTTP to the TLS port is refused
        complete(server.url.replace("https://", "http://"), token, prompt="x", max_tokens=1)
