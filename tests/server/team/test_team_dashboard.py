"""The dashboard over real HTTP: one `acepilot team-server` process with the tiny model.

Sign-in with an admin token made by the CLI (and refused: wrong token, no
CSRF value, no session), the session cookie's flags, token creation shown
once and revocation refused by /v1/completions on the next request, CSRF
refused on every form, malformed forms and filters answered 4xx, a load whose
numbers the JSON report and the HTML page both show exactly, retention
telemetry stored, security headers, sign-out and revoked admins' sessions.
The browser version of this (Chromium) is tests/extension/test_dashboard_browser.py.
"""

from __future__ import annotations

import html
import json
import re
import sqlite3
import subprocess
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx
import pytest
from team_helpers import CLI, REPO, TeamServer, auth, complete

ADMIN = "ops@team"


def cli(registry: Path, *args: str) -> str:
    proc = subprocess.run(
        [*CLI, "team-server", *args, "--registry", str(registry)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        check=True,
    )
    return proc.stdout.strip()


@pytest.fixture(scope="module")
def admin_token(team_registry: Path) -> str:
    token = cli(team_registry, "admin", "create", ADMIN)
    assert token.startswith("acpadm_")
    return token


@pytest.fixture(scope="module")
def server(
    team_registry: Path, admin_token: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TeamServer]:
    log = tmp_path_factory.mktemp("team-dashboard") / "server.log"
    process = TeamServer(team_registry, log, "--max-batch", "4")
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()


def login_csrf(client: httpx.Client) -> str:
    page = client.get("/dashboard/login")
    assert page.status_code == 200
    match = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert match is not None
    return match.group(1)


def signed_in(server: TeamServer, admin_token: str) -> tuple[httpx.Client, str]:
    """A client with a session cookie, and the session's CSRF token."""
    client = httpx.Client(base_url=server.url, timeout=60, follow_redirects=False)
    csrf = login_csrf(client)
    response = client.post("/dashboard/login", data={"csrf": csrf, "token": admin_token})
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/dashboard"
    page = client.get("/dashboard")
    assert page.status_code == 200
    match = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert match is not None
    return client, match.group(1)


def test_refused_without_a_session(server: TeamServer) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        page = client.get("/dashboard")
        assert page.status_code == 303 and page.headers["location"] == "/dashboard/login"
        assert client.get("/dashboard/tokens").status_code == 303
        api = client.get("/dashboard/api/report")
        assert api.status_code == 401 and "sign in" in api.json()["error"]["message"]
        post = client.post("/dashboard/tokens", data={"csrf": "x", "name": "mallory"})
        assert post.status_code == 401
        assert "not signed in" in post.text
        # an API token is not an admin token
        bogus = client.get("/dashboard/api/report", headers=auth("acp_" + "x" * 43))
        assert bogus.status_code == 401
    with httpx.Client(base_url=server.url, cookies={"acepilot_session": "forged"}) as forged:
        assert forged.get("/dashboard").status_code == 303


def test_sign_in(server: TeamServer, admin_token: str) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        csrf = login_csrf(client)
        wrong = client.post("/dashboard/login", data={"csrf": csrf, "token": "acpadm_nope"})
        assert wrong.status_code == 401 and "Unknown or revoked admin token" in wrong.text
        assert "acepilot_session" not in client.cookies
        csrf = login_csrf(client)
        no_csrf = client.post("/dashboard/login", data={"token": admin_token})
        assert no_csrf.status_code == 403 and "CSRF" in no_csrf.text
        other = client.post("/dashboard/login", data={"csrf": "guess", "token": admin_token})
        assert other.status_code == 403
        ok = client.post("/dashboard/login", data={"csrf": csrf, "token": admin_token})
        assert ok.status_code == 303
        cookie = next(
            value
            for key, value in ok.headers.multi_items()
            if key == "set-cookie" and value.startswith("acepilot_session=")
        )
        flags = {part.strip().lower() for part in cookie.split(";")[1:]}
        assert {"httponly", "samesite=strict", "path=/dashboard"} <= flags
        assert any(flag.startswith("max-age=") for flag in flags)
        page = client.get("/dashboard")
        assert page.status_code == 200 and ADMIN in page.text
        headers = page.headers
        assert "script-src" not in headers["content-security-policy"]
        assert "default-src 'none'" in headers["content-security-policy"]
        assert headers["x-frame-options"] == "DENY" and headers["cache-control"] == "no-store"
        assert "<script" not in page.text and "http://" not in page.text.replace(
            "http://www.w3.org/2000/svg", ""
        )
        css = client.get("/dashboard/static/dashboard.css")
        assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")


def test_tokens_created_once_and_revoked_at_once(server: TeamServer, admin_token: str) -> None:
    client, csrf = signed_in(server, admin_token)
    with closing(client):
        created = client.post("/dashboard/tokens", data={"csrf": csrf, "name": "carol"})
        assert created.status_code == 200
        match = re.search(r'<pre id="new-token">([^<]+)</pre>', created.text)
        assert match is not None
        token = html.unescape(match.group(1))
        assert complete(server.url, token, prompt="def f(x):\n", max_tokens=2).status_code == 200
        listing = client.get("/dashboard/tokens")
        assert "carol" in listing.text and token not in listing.text  # shown once only

        again = client.post("/dashboard/tokens", data={"csrf": csrf, "name": "carol"})
        assert again.status_code == 409 and "exists" in again.text
        bad_name = client.post("/dashboard/tokens", data={"csrf": csrf, "name": "<b>x</b>"})
        assert bad_name.status_code == 400 and "<b>x</b>" not in bad_name.text
        no_csrf = client.post("/dashboard/tokens/revoke", data={"name": "carol"})
        assert no_csrf.status_code == 403
        assert complete(server.url, token, prompt="x = ", max_tokens=1).status_code == 200

        revoked = client.post("/dashboard/tokens/revoke", data={"csrf": csrf, "name": "carol"})
        assert revoked.status_code == 200 and "Revoked carol" in revoked.text
        refused = complete(server.url, token, prompt="x = ", max_tokens=1)
        assert refused.status_code == 401
        unknown = client.post("/dashboard/tokens/revoke", data={"csrf": csrf, "name": "nobody"})
        assert unknown.status_code == 409 and "no token named" in unknown.text


def test_malformed_forms_and_filters(server: TeamServer, admin_token: str) -> None:
    client, csrf = signed_in(server, admin_token)
    with closing(client):
        as_json = client.post("/dashboard/tokens", json={"csrf": csrf, "name": "dave"})
        assert as_json.status_code == 415
        huge = client.post("/dashboard/tokens", data={"csrf": csrf, "name": "x" * 20000})
        assert huge.status_code == 413
        extra = client.post("/dashboard/tokens", data={"csrf": csrf, "name": "d", "admin": "1"})
        assert extra.status_code == 400
        twice = client.post(
            "/dashboard/tokens",
            content=f"csrf={csrf}&name=a&name=b",
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
        assert twice.status_code == 400
        assert client.get("/dashboard?period=5y").status_code == 400
        assert client.get("/dashboard?token=<x>").status_code == 400
        assert client.get("/dashboard/api/report?version=latest").status_code == 400
        assert client.get("/dashboard/api/report?secret=1").status_code == 400
        assert client.get("/healthz").status_code == 200  # still serving


def cell(page: str, table: str, key: str, column: str) -> str:
    """The text of a report table's cell (row key, data-col)."""
    body = page.split(f'id="{table}"', 1)[1].split("</table>", 1)[0]
    row = body.split(f'data-key="{key}"', 1)[1].split("</tr>", 1)[0]
    match = re.search(rf'data-col="{column}">([^<]*)<', row)
    assert match is not None, (table, key, column)
    return html.unescape(match.group(1))


def rate(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f}%"


def test_load_numbers_on_the_page_equal_the_api(
    server: TeamServer, admin_token: str, team_registry: Path
) -> None:
    token = cli(team_registry, "token", "create", "erin")
    statuses = [
        complete(server.url, token, prompt=f"def f{i}(x):\n", max_tokens=4, temperature=0)
        for i in range(6)
    ]
    assert [r.status_code for r in statuses] == [200] * 6
    bad = complete(server.url, token, prompt="x", max_tokens=0)
    assert bad.status_code == 400
    events: list[dict[str, Any]] = [{"event": "shown", "language": "python"}] * 4
    events += [
        {"event": "accepted", "language": "python", "chars": 40},
        {"event": "accepted", "language": "python", "chars": 10},
        {
            "event": "retained",
            "language": "python",
            "chars": 40,
            "after_s": 30,
            "retained_chars": 40,
        },
        {
            "event": "retained",
            "language": "python",
            "chars": 10,
            "after_s": 30,
            "retained_chars": 5,
        },
        {
            "event": "retained",
            "language": "python",
            "chars": 40,
            "after_s": 120,
            "retained_chars": 30,
        },
    ]
    sent = httpx.post(
        server.url + "/v1/telemetry", headers=auth(token), json={"events": events}, timeout=30
    )
    assert sent.status_code == 200 and sent.json() == {"received": len(events)}

    api = httpx.get(
        server.url + "/dashboard/api/report",
        params={"token": "erin"},
        headers=auth(admin_token),
        timeout=30,
    )
    assert api.status_code == 200
    report = api.json()
    totals = report["totals"]
    assert totals["requests"] == 6 and totals["completed"] == 6
    assert totals["shown"] == 4 and totals["accepted"] == 2
    assert totals["acceptance_rate"] == pytest.approx(0.5)
    assert totals["accepted_chars"] == 50
    assert totals["retained_30s"]["rate"] == pytest.approx(45 / 50)
    assert totals["retained_30s"]["intact"] == 1
    assert totals["retained_120s"]["rate"] == pytest.approx(30 / 40)
    assert totals["latency_p50_ms"] is not None and totals["latency_p95_ms"] is not None
    assert {"kind": "invalid_request_error", "count": 1} in report["errors"]
    assert report["model"]["name"] == "tiny" and report["model"]["version"] == "v1"

    history = team_registry / "tiny" / "promotions.jsonl"  # as `acepilot promote` writes it
    history.write_text(
        json.dumps({"event": "promote", "from": None, "to": "v1", "time": "2026-12-01T10:00:00Z"})
        + "\n"
    )
    client, _ = signed_in(server, admin_token)
    with closing(client):
        page = client.get("/dashboard", params={"token": "erin"}).text
        from_session = client.get("/dashboard/api/report", params={"token": "erin"}).json()
    assert from_session["totals"] == totals
    row = report["by_token"][0]
    assert row["token"] == "erin"
    assert cell(page, "by-token", "erin", "requests") == str(row["requests"])
    assert cell(page, "by-token", "erin", "accepted") == str(row["accepted"])
    assert cell(page, "by-token", "erin", "acceptance_rate") == rate(row["acceptance_rate"])
    assert cell(page, "by-token", "erin", "retained_30s") == rate(row["retained_30s"]["rate"])
    assert cell(page, "by-token", "erin", "retained_120s") == rate(row["retained_120s"]["rate"])
    assert cell(page, "by-token", "erin", "latency_p95_ms") == f"{row['latency_p95_ms']:.1f} ms"
    assert cell(page, "by-language", "python", "accepted_chars") == "50"
    assert cell(page, "errors", "invalid_request_error", "count") == "1"
    assert "<svg" in page and "Latency p50 / p95" in page
    promotions = page.split('id="promotions"', 1)[1].split("</table>", 1)[0]
    assert "2026-12-01T10:00:00Z" in promotions and "<td>v1</td>" in promotions
    # the telemetry's Prometheus series
    values = server.metrics()
    assert values['acepilot_telemetry_chars_total{token="erin",kind="accepted"}'] == 50
    assert values['acepilot_telemetry_chars_total{token="erin",kind="retained_30s"}'] == 45


def test_logout_and_revoked_admins(server: TeamServer, team_registry: Path) -> None:
    second = cli(team_registry, "admin", "create", "temp-admin")
    client, csrf = signed_in(server, second)
    with closing(client):
        no_csrf = client.post("/dashboard/logout", data={"csrf": "wrong"})
        assert no_csrf.status_code == 403
        assert client.post("/dashboard/logout", data={"csrf": csrf}).status_code == 303
        assert client.get("/dashboard").status_code == 303
    client, _ = signed_in(server, second)
    with closing(client):
        cli(team_registry, "admin", "revoke", "temp-admin")
        assert client.get("/dashboard").status_code == 303  # the session ended with the token
    listed = cli(team_registry, "admin", "list")
    assert "temp-admin" in listed and "revoked" in listed


def test_usage_is_on_disk_beside_the_tokens(server: TeamServer) -> None:
    """Rows are in SQLite beside the token database (flushed before every report)."""
    usage = server.registry / "team-usage.sqlite3"
    with sqlite3.connect(usage) as db:
        requests = db.execute("SELECT SUM(requests) FROM usage").fetchone()[0]
    assert requests is not None and requests >= 6
