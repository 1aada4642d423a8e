"""The dashboard's parts without a model: sessions (expiry, revocation, the env admin,
the bound), the SVG charts (escaped, well-formed, no script) and the promotion history
read from a registry's log."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

from acepilot.server.registry import Registry
from acepilot.server.team import charts
from acepilot.server.team.promotions import history
from acepilot.server.team.sessions import ENV_ADMIN_NAME, MAX_SESSIONS, Sessions
from acepilot.server.team.tokens import AdminStore, TokenStore


class Clock:
    now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_sessions_expire_and_end_with_the_admin_token(tmp_path: Path) -> None:
    admins = AdminStore(tmp_path / "tokens.sqlite3")
    token = admins.create("ops")
    clock = Clock()
    sessions = Sessions(admins, lifetime_s=60, clock=clock)
    assert sessions.admin_of(token) == "ops"
    assert sessions.admin_of("acpadm_" + "x" * 43) is None
    # an API token of the same database is not an admin token
    api = TokenStore(tmp_path / "tokens.sqlite3").create("ops")
    assert sessions.admin_of(api) is None
    cookie, session = sessions.start("ops")
    assert sessions.get(cookie) is session and len(session.csrf) >= 32
    assert sessions.get(cookie + "x") is None and sessions.get(None) is None
    clock.now += 61
    assert sessions.get(cookie) is None  # expired (and forgotten)
    cookie, _ = sessions.start("ops")
    admins.revoke("ops")
    assert sessions.get(cookie) is None


def test_env_admin_and_the_bound(tmp_path: Path) -> None:
    secret = "s" * 40
    sessions = Sessions(AdminStore(tmp_path / "t.sqlite3"), env_token=secret)
    assert sessions.admin_of(secret) == ENV_ADMIN_NAME
    assert sessions.admin_of(secret[:-1]) is None
    first, _ = sessions.start(ENV_ADMIN_NAME)
    for _ in range(MAX_SESSIONS):
        sessions.start(ENV_ADMIN_NAME)
    assert sessions.get(first) is None  # the oldest went first
    without = Sessions(AdminStore(tmp_path / "t.sqlite3"))
    assert without.admin_of(secret) is None


def test_charts_are_escaped_svg_without_script() -> None:
    hostile = '<script>alert(1)</script>&"'
    figures = [
        charts.bars("Requests", ["00:00", hostile], [3, 7]),
        charts.lines("Latency", ["a", "b", "c"], {"p50": [10.0, None, 30.0], hostile: [1, 2, 3]}),
        charts.hbars("Rates", [(hostile, 0.5), ("nobody", None)], lambda v: f"{v:.0%}", 1.0),
        charts.bars("Empty", [], []),
    ]
    for svg in figures:
        root = ET.fromstring(str(svg))  # well-formed XML
        assert root.tag.endswith("svg")
        assert "<script" not in str(svg)
    assert "&lt;script&gt;" in str(figures[0])


def test_promotion_history_with_verdicts(tmp_path: Path) -> None:
    registry = Registry(tmp_path)
    (tmp_path / "m").mkdir()
    for version, gate in (("v1", None), ("v2", {"decision": "promote", "reasons": ["ok"]})):
        (tmp_path / "m" / version).mkdir()
        manifest = {"name": "m", "version": version, "files": {}}
        if gate:
            manifest["gate"] = gate
        (tmp_path / "m" / version / "manifest.json").write_text(json.dumps(manifest))
    log = tmp_path / "m" / "promotions.jsonl"
    log.write_text(
        json.dumps({"event": "promote", "from": "v1", "to": "v2", "time": "T1"})
        + "\n{not json\n"
        + json.dumps({"event": "rollback", "from": "v2", "to": "v1", "time": "T2"})
        + "\n"
    )
    events = history(registry, "m")
    assert [e["event"] for e in events] == ["rollback", "promote"]
    promoted = events[1]
    assert promoted["to"] == "v2"
    assert promoted["gate"] == {"decision": "promote", "reason": "ok", "target": None}
    assert events[0]["gate"] == {}  # a rollback has no gate
    assert history(registry, "absent") == []
