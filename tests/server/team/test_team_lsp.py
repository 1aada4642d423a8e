"""The language server's remote backend against a real team server, both real processes.

`acepilot serve` (stdio, driven by pytest-lsp's client) is configured with
backend "remote", the team server's URL and a bearer token; an inline
completion request must come back with the text the team server generated
(the tiny model, greedy), and the team server must have counted the request
under that token's name.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from team_helpers import MODEL, TeamServer, metric, new_token

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lsp"))
from lsp_helpers import inline, items_of, open_doc, running_server, wait_state

pytestmark = pytest.mark.timeout(600)

SOURCE = "import os\n\n\ndef read_lines(path):\n    with open(path) as handle:\n        "


@pytest.fixture(scope="module")
def server(team_registry: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TeamServer]:
    process = TeamServer(team_registry, tmp_path_factory.mktemp("team-lsp") / "server.log")
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()


def remote_options(server: TeamServer, token: str) -> dict[str, object]:
    """The language server's settings for the team server under test, greedy."""
    return {
        "backend": "remote",
        "remoteUrl": server.url + "/v1",
        "remoteToken": token,
        "remoteModel": MODEL,
        "debounceMs": 0,
        "maxNewTokens": 24,
        "temperature": 0,
    }


async def test_inline_completion_through_the_team_server(
    server: TeamServer, team_registry: Path, tmp_path: Path
) -> None:
    token = new_token(team_registry, "lsp-user")
    options = remote_options(server, token)
    async with running_server("visual_studio_code", options, tmp_path) as (client, _, statuses):
        await wait_state(statuses, "ready", 60)
        uri = (tmp_path / "lines.py").as_uri()
        open_doc(client, uri, SOURCE)
        lines = SOURCE.split("\n")
        items = items_of(await inline(client, uri, len(lines) - 1, len(lines[-1])))
    values = server.metrics()
    assert metric(values, "acepilot_token_requests_total", token="lsp-user") >= 1
    assert metric(values, "acepilot_requests_total", endpoint="completions", status="200") >= 1
    assert items, "no inline completion came back through the team server"
    text = items[0].insert_text
    assert isinstance(text, str) and text.strip()


async def test_acceptance_and_retention_reach_the_dashboard(
    server: TeamServer, team_registry: Path, tmp_path: Path
) -> None:
    """The editor's accept and its 30 s / 2 min checks, through the language server, are in
    the team server's report: counts and sizes only."""
    import httpx

    from acepilot.server.protocol import TELEMETRY
    from acepilot.server.team.tokens import AdminStore, default_db

    token = new_token(team_registry, "keeper")
    admin = AdminStore(default_db(team_registry)).create("lsp-admin")
    options = remote_options(server, token)
    async with running_server("visual_studio_code", options, tmp_path) as (client, _, statuses):
        await wait_state(statuses, "ready", 60)
        uri = (tmp_path / "kept.py").as_uri()
        open_doc(client, uri, SOURCE)
        lines = SOURCE.split("\n")
        item = items_of(await inline(client, uri, len(lines) - 1, len(lines[-1])))[0]
        assert item.command is not None
        completion_id = (item.command.arguments or [])[0]["id"]
        size = len(str(item.insert_text).encode("utf-16-le")) // 2
        base = {"id": completion_id, "languageId": "python"}
        client.protocol.notify(TELEMETRY, {**base, "event": "shown"})
        client.protocol.notify(TELEMETRY, {**base, "event": "accepted"})
        client.protocol.notify(
            TELEMETRY, {**base, "event": "retained", "afterS": 30, "retainedChars": size}
        )
        client.protocol.notify(
            TELEMETRY, {**base, "event": "retained", "afterS": 120, "retainedChars": 1}
        )
    # leaving the session shut the language server down: its queued telemetry was sent
    report = httpx.get(
        server.url + "/dashboard/api/report",
        params={"token": "keeper"},
        headers={"Authorization": f"Bearer {admin}"},
        timeout=30,
    ).json()
    totals = report["totals"]
    assert (totals["shown"], totals["accepted"], totals["accepted_chars"]) == (1, 1, size)
    assert totals["retained_30s"] == {
        "checked": 1,
        "intact": 1,
        "chars": size,
        "of_chars": size,
        "rate": 1.0,
    }
    assert totals["retained_120s"]["chars"] == 1 and totals["retained_120s"]["intact"] == 0
    assert report["by_language"][0]["language"] == "python"
