"""One real `acepilot team-server` process with the tiny model: the API as clients see it.

OpenAI client conformance (stream and not), /v1/models, auth (missing, wrong,
unknown, revoked through the CLI), malformed requests, request limits (body
size, prompt tokens, max_tokens), telemetry, streaming cancellation seen in
/metrics, batched server results equal to the engine's unbatched greedy
results, and finally: no token and no prompt or completion text in the
server's log (it runs at -vv).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from team_helpers import CLI, MODEL, REPO, TeamServer, auth, complete, metric, new_token

from acepilot.server.engine import Engine, GenerationParams
from acepilot.server.registry import ModelEntry

MARKER = "zqxPROMPTMARKER"  # in prompts: must never reach the log
PROMPT = f"# {MARKER}\nimport os\n\n\ndef read_lines(path):\n"


@pytest.fixture(scope="module")
def server(team_registry: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TeamServer]:
    log = tmp_path_factory.mktemp("team-api") / "server.log"
    process = TeamServer(
        team_registry,
        log,
        "--max-body",
        "64K",
        "--max-prompt-tokens",
        "300",
        "--max-tokens",
        "500",
        "--max-batch",
        "8",
    )
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def token(team_registry: Path) -> str:
    return new_token(team_registry, "alice")


@pytest.fixture(scope="module")
def tokens_seen() -> list[str]:
    """Every token this module sends: none may appear in the log."""
    return []


def client(server: TeamServer, token: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=token, max_retries=0)


def test_openai_client_completions(server: TeamServer, token: str, tokens_seen: list[str]) -> None:
    tokens_seen.append(token)
    api = client(server, token)
    result = api.completions.create(model=MODEL, prompt=PROMPT, max_tokens=20, temperature=0)
    choice = result.choices[0]
    assert choice.finish_reason in ("length", "stop")
    assert choice.text
    assert result.usage is not None and result.usage.completion_tokens > 0
    assert result.model == MODEL

    stream = api.completions.create(
        model=MODEL,
        prompt=PROMPT,
        max_tokens=20,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces, reasons, usages = [], [], []
    for chunk in stream:
        if chunk.choices:
            pieces.append(chunk.choices[0].text)
            reasons.append(chunk.choices[0].finish_reason)
        if chunk.usage is not None:
            usages.append(chunk.usage)
    assert "".join(pieces) == choice.text  # greedy: the same completion, streamed
    assert reasons[-1] == choice.finish_reason and all(r is None for r in reasons[:-1])
    assert len(pieces) > 2  # really streamed, not one block
    assert usages and usages[0].completion_tokens == result.usage.completion_tokens

    # suffix is accepted (this model has no FIM: ignored), model may be omitted
    body = {"prompt": PROMPT, "suffix": "\n\nprint(1)\n", "max_tokens": 20, "temperature": 0}
    plain = complete(server.url, token, **body)
    assert plain.status_code == 200
    assert plain.json()["choices"][0]["text"] == choice.text


def test_models_lists_the_served_model(server: TeamServer, token: str) -> None:
    models = client(server, token).models.list()
    assert [m.id for m in models.data] == [MODEL]
    extra = models.data[0].model_extra or {}
    assert extra["acepilot"]["fim"] is False
    assert extra["acepilot"]["fim_order"] is None
    assert extra["acepilot"]["family"] == "codegen"  # the tiny model's manifest
    assert extra["acepilot"]["version"] == "v1"


def test_openapi_describes_the_validated_requests(server: TeamServer) -> None:
    """/openapi.json comes from the schema that checks requests (no second copy)."""
    document = httpx.get(server.url + "/openapi.json").json()
    assert document["openapi"].startswith("3.1")
    schemas = document["components"]["schemas"]
    completion = schemas["CompletionBody"]["properties"]
    for field in ("prompt", "suffix", "max_tokens", "temperature", "top_p", "stop", "stream"):
        assert field in completion
    assert {"type": "string", "minLength": 1, "maxLength": 256} in completion["stop"]["anyOf"]
    assert "TelemetryBody" in schemas and "Error" in schemas
    post = document["paths"]["/v1/completions"]["post"]
    assert post["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/CompletionBody"
    }
    assert {"200", "400", "401", "413", "429", "503"} <= set(post["responses"])


def test_auth_failures_are_401_and_revocation_works(
    server: TeamServer, team_registry: Path, tokens_seen: list[str]
) -> None:
    body = json.dumps({"prompt": PROMPT, "max_tokens": 2})
    url = server.url + "/v1/completions"
    cases = [
        {},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer acp_not-a-real-token"},
        {"Authorization": "Bearer something-else-entirely"},
    ]
    for headers in cases:
        response = httpx.post(url, headers=headers, content=body)
        assert response.status_code == 401, headers
        assert response.json()["error"]["type"] == "authentication_error"
        assert response.headers["www-authenticate"] == "Bearer"
    assert httpx.get(server.url + "/v1/models").status_code == 401

    # A token issued and revoked with the CLI, while the server runs.
    created = subprocess.run(
        [*CLI, "team-server", "token", "create", "bob", "--registry", str(team_registry)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    bob = created.stdout.strip()
    tokens_seen.append(bob)
    assert bob.startswith("acp_") and len(bob) > 40
    assert complete(server.url, bob, prompt=PROMPT, max_tokens=2).status_code == 200
    listing = subprocess.run(
        [*CLI, "team-server", "token", "list", "--registry", str(team_registry)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "bob" in listing and bob not in listing
    subprocess.run(
        [*CLI, "team-server", "token", "revoke", "bob", "--registry", str(team_registry)],
        cwd=REPO,
        capture_output=True,
        check=True,
    )
    refused = complete(server.url, bob, prompt=PROMPT, max_tokens=2)
    assert refused.status_code == 401
    # The database holds hashes only.
    database = (team_registry / "team-tokens.sqlite3").read_bytes()
    assert bob.encode() not in database
    assert metric(server.metrics(), "acepilot_auth_failures_total") >= len(cases) + 2


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b"{not json", None),
        (b"\xff\xfe", None),
        (b"[1, 2]", None),
        (b'"a string"', None),
        (json.dumps({"prompt": 5}).encode(), "prompt"),
        (json.dumps({"prompt": ["a", "b"]}).encode(), "prompt"),
        (json.dumps({"prompt": "x", "max_tokens": "10"}).encode(), "max_tokens"),
        (json.dumps({"prompt": "x", "max_tokens": 0}).encode(), "max_tokens"),
        (json.dumps({"prompt": "x", "max_tokens": True}).encode(), "max_tokens"),
        (json.dumps({"prompt": "x", "temperature": -1}).encode(), "temperature"),
        (json.dumps({"prompt": "x", "temperature": "hot"}).encode(), "temperature"),
        (json.dumps({"prompt": "x", "top_p": 0}).encode(), "top_p"),
        (json.dumps({"prompt": "x", "stop": ["a", "b", "c", "d", "e"]}).encode(), "stop"),
        (json.dumps({"prompt": "x", "stop": 3}).encode(), "stop"),
        (json.dumps({"prompt": "x", "stream": "yes"}).encode(), "stream"),
        (json.dumps({"prompt": "x", "n": 2}).encode(), "n"),
        (json.dumps({"prompt": "x", "echo": True}).encode(), "echo"),
        (json.dumps({"prompt": "x", "suffix": 1}).encode(), "suffix"),
        (json.dumps({"prompt": "x", "model": 1}).encode(), "model"),
        (json.dumps({"prompt": [10**9]}).encode(), "prompt"),
    ],
)
def test_malformed_requests_get_400_json(
    server: TeamServer, token: str, body: bytes, param: str | None
) -> None:
    response = httpx.post(server.url + "/v1/completions", headers=auth(token), content=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert error["message"]


def test_unknown_model_is_404_and_the_server_keeps_serving(server: TeamServer, token: str) -> None:
    response = complete(server.url, token, model="gpt-4", prompt=PROMPT, max_tokens=2)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "model_not_found"
    assert complete(server.url, token, prompt=PROMPT, max_tokens=2).status_code == 200


def test_limits(server: TeamServer, token: str) -> None:
    too_big = json.dumps({"prompt": "x" * (70 << 10), "max_tokens": 2})
    response = httpx.post(server.url + "/v1/completions", headers=auth(token), content=too_big)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "body_too_large"

    # the same, streamed without a Content-Length (checked while reading)
    def chunks() -> Iterator[bytes]:
        for _ in range(80):
            yield b" " * 1024

    streamed = httpx.post(server.url + "/v1/completions", headers=auth(token), content=chunks())
    assert streamed.status_code == 413

    long_prompt = "def f(x):\n    return x\n" * 60  # well over 300 tokens, under 64 KiB
    response = complete(server.url, token, prompt=long_prompt, max_tokens=2)
    assert response.status_code == 400
    assert "at most 300" in response.json()["error"]["message"]

    response = complete(server.url, token, prompt="x", max_tokens=501)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "max_tokens"
    assert complete(server.url, token, prompt="x", max_tokens=2).status_code == 200


def test_telemetry_is_counted_per_token_and_validated(
    server: TeamServer, team_registry: Path, tokens_seen: list[str]
) -> None:
    carol = new_token(team_registry, "carol")
    tokens_seen.append(carol)
    url = server.url + "/v1/telemetry"
    events = [
        {"event": "shown", "language": "python"},
        {"event": "shown", "language": "python"},
        {"event": "accepted", "language": "python"},
        {"event": "rejected", "language": "typescript"},
    ]
    response = httpx.post(url, headers=auth(carol), json={"events": events})
    assert response.status_code == 200 and response.json() == {"received": 4}
    values = server.metrics()
    series = "acepilot_telemetry_events_total"
    assert metric(values, series, token="carol", event="shown", language="python") == 2
    assert metric(values, series, token="carol", event="accepted", language="python") == 1
    assert metric(values, series, token="carol", event="rejected", language="typescript") == 1

    for bad in (
        {"events": [{"event": "clicked", "language": "python"}]},
        {"events": [{"event": "shown", "language": 'py"} 1\n'}]},
        {"events": [{"event": "shown"}]},
        {"events": "shown"},
        {"events": [{"event": "shown", "language": "python"}] * 1001},
        [],
    ):
        assert httpx.post(url, headers=auth(carol), json=bad).status_code == 400
    assert httpx.post(url, json={"events": events}).status_code == 401
    # nothing of the refused batches was counted
    again = server.metrics()
    assert metric(again, series, token="carol", event="shown", language="python") == 2


async def test_closing_the_stream_stops_generation(
    server: TeamServer, team_registry: Path, tokens_seen: list[str]
) -> None:
    dave = new_token(team_registry, "dave")
    tokens_seen.append(dave)
    body = {"prompt": "x", "max_tokens": 500, "temperature": 0, "stream": True}
    before = server.metrics()
    async with (
        httpx.AsyncClient(timeout=30) as http,
        http.stream(
            "POST", server.url + "/v1/completions", headers=auth(dave), json=body
        ) as response,
    ):
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                break  # one token arrived: close the stream
    series = ("acepilot_generations_total", {"reason": "cancelled"})
    for _ in range(200):
        after = server.metrics()
        if metric(after, series[0], **series[1]) > metric(before, series[0], **series[1]):
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("the generation was not cancelled")
    generated = metric(after, "acepilot_token_completion_tokens_total", token="dave")
    assert 0 < generated < 500
    assert metric(after, "acepilot_active_requests") == 0


async def test_concurrent_requests_are_batched_and_equal_unbatched_greedy(
    server: TeamServer, token: str, built_tiny_entry: ModelEntry
) -> None:
    prompts = [
        f"# {MARKER}\nclass Stack:\n    def __init__(self):\n",
        f"# {MARKER}\ndef add(a, b):\n    return",
        f"# {MARKER}\nfor index in range(10):\n    print(",
        f"# {MARKER}\nimport re\nimport sys\n\n\ndef main(argv):\n",
        f"# {MARKER}\ndef fib(n):\n    if n < 2:\n        return n\n",
        f"# {MARKER}\nx = [",
    ]
    engine = Engine.load(built_tiny_entry, threads=1)
    expected = [engine.generate(p, GenerationParams(max_new_tokens=48)).text for p in prompts]
    before = server.metrics()
    async with httpx.AsyncClient(timeout=60) as http:

        async def one(index: int, prompt: str) -> str:
            response = await http.post(
                server.url + "/v1/completions",
                headers=auth(token),
                json={"prompt": prompt, "max_tokens": 48, "temperature": 0, "user": f"doc{index}"},
            )
            assert response.status_code == 200
            return str(response.json()["choices"][0]["text"])

        texts = await asyncio.gather(*(one(i, p) for i, p in enumerate(prompts)))
    assert texts == expected
    after = server.metrics()
    steps = metric(after, "acepilot_batch_size_count") - metric(before, "acepilot_batch_size_count")
    rows = metric(after, "acepilot_batch_size_sum") - metric(before, "acepilot_batch_size_sum")
    assert rows / steps > 1.5, "concurrent requests did not share decode steps"


def test_health_endpoints(server: TeamServer) -> None:
    assert httpx.get(server.url + "/healthz").json() == {"status": "ok"}
    ready = httpx.get(server.url + "/readyz").json()
    assert ready == {"status": "ready", "model": MODEL, "version": "v1"}
    text = httpx.get(server.url + "/metrics").text
    assert "# TYPE acepilot_request_seconds histogram" in text
    assert 'acepilot_model_info{model="tiny",version="v1"} 1' in text
    for phase in ("queue", "prefill", "decode", "total"):
        assert f'acepilot_request_seconds_count{{phase="{phase}"}}' in text


def test_zz_no_tokens_or_text_in_logs(
    server: TeamServer, token: str, tokens_seen: list[str]
) -> None:
    """Runs last in this module: everything above was logged at -vv."""
    completion = complete(server.url, token, prompt=PROMPT, max_tokens=40, temperature=0)
    text = completion.json()["choices"][0]["text"]
    log = server.log_text()
    assert "completion for alice" in log  # the log is really written, naming the token's name
    assert MARKER not in log
    for secret in {token, *tokens_seen}:
        assert secret not in log
        assert secret[4:20] not in log
    distinctive = max(text.splitlines(), key=len)
    assert len(distinctive) < 12 or distinctive not in log
    assert MARKER not in httpx.get(server.url + "/metrics").text
