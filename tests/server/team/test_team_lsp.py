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


async def test_inline_completion_through_the_team_server(
    server: TeamServer, team_registry: Path, tmp_path: Path
) -> None:
    token = new_token(team_registry, "lsp-user")
    options = {
        "backend": "remote",
        "remoteUrl": server.url + "/v1",
        "remoteToken": token,
        "remoteModel": MODEL,
        "debounceMs": 0,
        "maxNewTokens": 24,
        "temperature": 0,
    }
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
