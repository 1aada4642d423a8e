"""The team server's dashboard in a real browser: Debian chromium driven by playwright-core.

A real `acepilot team-server` with the tiny trained model (tests/engine_fixtures.py)
and an admin token from the CLI; tests/extension/dashboard_browser.mjs signs in,
creates and revokes tokens, sends a scripted load to /v1/completions and
/v1/telemetry, and reads the report page and the JSON report. Checked here:
the numbers on the page are the API's, and the API's are the load's; the
revoked token is refused by the next completion; no session, a wrong CSRF
token and a wrong admin token are refused; the page fetched nothing from
outside the server. Screenshots go to $ACEPILOT_TEST_ARTIFACTS/dashboard,
else the test's tmp dir (the path is printed). Chromium missing: skipped with
the reason, as the VS Code end-to-end test does.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from node_tools import ROOT, artifacts_dir
from server.team.team_helpers import TeamServer, copy_registry

with contextlib.suppress(ImportError):  # needs the build extra (torch)
    from engine_fixtures import built_tiny_registry  # noqa: F401

CHROMIUM = "/usr/bin/chromium"
SCRIPT = Path(__file__).with_name("dashboard_browser.mjs")
REQUESTS = 8
EVENTS: list[dict[str, Any]] = [
    *[{"event": "shown", "language": "python"}] * 6,
    {"event": "accepted", "language": "python", "chars": 30},
    {"event": "accepted", "language": "python", "chars": 20},
    {"event": "accepted", "language": "go", "chars": 10},
    {"event": "retained", "language": "python", "chars": 30, "after_s": 30, "retained_chars": 30},
    {"event": "retained", "language": "python", "chars": 20, "after_s": 30, "retained_chars": 10},
    {"event": "retained", "language": "python", "chars": 30, "after_s": 120, "retained_chars": 15},
]


def rate(value: float | None) -> str:
    """dashboard.fmt_rate: the page's way of writing a rate."""
    return "—" if value is None else f"{value * 100:.1f}%"


def ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f} ms"


def as_page(row: dict[str, Any]) -> dict[str, str]:
    """A report row of the API as the page writes its cells."""
    return {
        "requests": str(row["requests"]),
        "completed": str(row["completed"]),
        "cancelled": str(row["cancelled"]),
        "shown": str(row["shown"]),
        "accepted": str(row["accepted"]),
        "acceptance_rate": rate(row["acceptance_rate"]),
        "accepted_chars": str(row["accepted_chars"]),
        "retained_30s": rate(row["retained_30s"]["rate"]),
        "retained_120s": rate(row["retained_120s"]["rate"]),
        "latency_p50_ms": ms(row["latency_p50_ms"]),
        "latency_p95_ms": ms(row["latency_p95_ms"]),
    }


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return artifacts_dir(tmp_path_factory, "dashboard")


def test_dashboard_in_chromium(
    built_tiny_registry: Path, node_modules: Path, artifacts: Path, tmp_path: Path
) -> None:
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"{CHROMIUM} is missing: apt-get install chromium (make system-deps)")
    registry = copy_registry(built_tiny_registry, tmp_path / "registry")
    admin = subprocess.run(
        [
            sys.executable,  # the interpreter running the tests (it has acepilot)
            "-m",
            "acepilot.server.cli",
            "team-server",
            "admin",
            "create",
            "ops",
            "--registry",
            str(registry),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
        timeout=120,
    ).stdout.strip()
    server = TeamServer(registry, tmp_path / "server.log", "--max-batch", "4")
    try:
        server.wait_ready()
        config = {
            "url": server.url,
            "adminToken": admin,
            "chromium": CHROMIUM,
            "artifacts": str(artifacts),
            "result": str(tmp_path / "result.json"),
            "load": {"requests": REQUESTS, "concurrency": 4, "maxTokens": 4, "events": EVENTS},
        }
        (tmp_path / "config.json").write_text(json.dumps(config))
        proc = subprocess.run(
            ["node", str(SCRIPT), str(tmp_path / "config.json")],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    finally:
        server.stop()
    print(f"dashboard screenshots: {artifacts}")
    print(proc.stderr[-3000:])
    result: dict[str, Any] = json.loads((tmp_path / "result.json").read_text())
    (artifacts / "result.json").write_text(json.dumps(result, indent=2))
    assert proc.returncode == 0 and result.get("ok"), (
        f"the browser run failed: {result.get('error')}\nscreenshots: {artifacts}"
    )

    # Sign-in: no session -> the sign-in page; a wrong token refused; the cookie's flags.
    assert result["unauthenticatedUrl"].endswith("/dashboard/login")
    assert "Unknown or revoked admin token" in result["wrongSignIn"]
    assert result["signedInUrl"].endswith("/dashboard")
    session = next(c for c in result["cookies"] if c["name"] == "acepilot_session")
    assert session == {
        "name": "acepilot_session",
        "httpOnly": True,
        "sameSite": "Strict",
        "path": "/dashboard",
    }

    # Tokens: revoked in the page, refused by the API on the next request; shown once.
    assert result["revokedState"].startswith("revoked")
    assert result["revokedStatus"] == 401
    assert result["tokenShownAgain"] is False

    # The load went through, and the report says exactly that.
    assert result["loadStatuses"] == [200] * REQUESTS
    assert result["malformedStatus"] == 400 and result["telemetryStatus"] == 200
    api = result["api"]
    totals = api["totals"]
    assert totals["requests"] == REQUESTS and totals["completed"] == REQUESTS
    assert totals["shown"] == 6 and totals["accepted"] == 3 and totals["accepted_chars"] == 60
    assert totals["retained_30s"]["chars"] == 40 and totals["retained_30s"]["of_chars"] == 50
    assert totals["retained_120s"]["rate"] == 0.5
    assert totals["latency_p50_ms"] is not None
    assert {"kind": "invalid_request_error", "count": 1} in api["errors"]

    # The page shows the API's numbers.
    page = result["page"]
    assert page["byToken"] == {"dev-a": as_page(api["by_token"][0])}
    assert page["byVersion"] == {"v1": as_page(api["by_version"][0])}
    assert page["totals"] == {
        **{
            key: value
            for key, value in as_page(totals).items()
            if key not in ("completed", "cancelled", "rejected")
        },
        "errors": str(totals["errors"]),
    }
    languages = {row["language"]: row for row in api["by_language"]}
    assert set(page["byLanguage"]) == {"go", "python"}
    for language, cells in page["byLanguage"].items():
        expected = as_page(languages[language])
        assert cells == {key: expected[key] for key in cells}
    assert page["errors"] == {row["kind"]: {"count": str(row["count"])} for row in api["errors"]}
    assert page["charts"] == 4
    assert page["model"] == "tiny v1"

    # Refusals: wrong CSRF token, no session.
    assert result["csrfStatus"] == 403 and "CSRF" in result["csrfText"]
    assert result["malloryListed"] is False
    assert result["strangerUrl"].endswith("/dashboard/login")
    assert result["strangerApi"] == 401 and result["strangerPost"] == 401
    assert result["afterLogoutUrl"].endswith("/dashboard/login")
    assert result["foreignRequests"] == []
    assert len(result["screenshots"]) >= 5
