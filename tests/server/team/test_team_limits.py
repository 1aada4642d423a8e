"""Load limits of a real team-server: per-token rate limit, full queue, request deadline.

The server runs with tight limits (batch of 1, a queue of 1, 1 request per 5 s per
token with a burst of 3, a 0.1 s deadline) so that each refusal is reached
with a handful of requests to the tiny model.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from team_helpers import TeamServer, auth, complete, metric, new_token


@pytest.fixture(scope="module")
def server(team_registry: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TeamServer]:
    log = tmp_path_factory.mktemp("team-limits") / "server.log"
    process = TeamServer(
        team_registry,
        log,
        "--max-batch", "1",
        "--max-queue", "1",
        "--rate", "0.2",
        "--burst", "3",
        "--deadline", "0.1",
    )  # fmt: skip
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()


def test_rate_limit_per_token_is_429_with_retry_after(
    server: TeamServer, team_registry: Path
) -> None:
    erin, frank = new_token(team_registry, "erin"), new_token(team_registry, "frank")
    statuses = [complete(server.url, erin, prompt="x", max_tokens=1).status_code for _ in range(3)]
    assert statuses == [200, 200, 200]
    limited = complete(server.url, erin, prompt="x", max_tokens=1)
    assert limited.status_code == 429
    assert limited.json()["error"]["type"] == "rate_limit_error"
    assert int(limited.headers["retry-after"]) >= 1
    # another token has its own bucket
    assert complete(server.url, frank, prompt="x", max_tokens=1).status_code == 200
    assert metric(server.metrics(), "acepilot_rate_limited_total", token="erin") == 1


async def test_full_queue_is_503_and_the_server_recovers(
    server: TeamServer, team_registry: Path
) -> None:
    tokens = [new_token(team_registry, f"queue-{i}") for i in range(8)]
    body = {"prompt": "x", "max_tokens": 500, "temperature": 0}
    async with httpx.AsyncClient(timeout=60) as http:
        responses = await asyncio.gather(
            *(
                http.post(server.url + "/v1/completions", headers=auth(token), json=body)
                for token in tokens
            )
        )
    statuses = [r.status_code for r in responses]
    assert statuses.count(200) >= 1
    full = [r for r in responses if r.status_code == 503]
    assert full, statuses
    assert set(statuses) <= {200, 503}
    for response in full:
        assert response.json()["error"]["code"] in ("queue_full", "queue_timeout")
        assert response.headers["retry-after"] == "1"
    assert any(r.json()["error"]["code"] == "queue_full" for r in full)
    await asyncio.sleep(1.0)
    assert complete(server.url, tokens[0], prompt="x", max_tokens=1).status_code == 200


def test_deadline_cuts_a_long_generation(server: TeamServer, team_registry: Path) -> None:
    gina = new_token(team_registry, "gina")
    before = server.metrics()
    response = complete(server.url, gina, prompt="x", max_tokens=500, temperature=0)
    assert response.status_code == 200
    usage = response.json()["usage"]
    assert usage["completion_tokens"] < 500
    assert response.json()["choices"][0]["finish_reason"] == "length"
    after = server.metrics()
    series = "acepilot_generations_total"
    assert metric(after, series, reason="deadline") > metric(before, series, reason="deadline")
