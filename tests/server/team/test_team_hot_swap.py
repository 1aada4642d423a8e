"""Hot swap: the server follows the registry's production pointer under load.

Clients hammer a real team-server (streamed and plain requests) while the
test registers v2 and promotes it, then rolls back to v1: no request may
fail, both versions must have answered, and the drained version is freed.
Then a version whose file fails its sha256 check, and one onnxruntime
cannot load, are refused (visible in /metrics) while the old one keeps
serving.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from team_helpers import TeamServer, auth, metric, new_token, register_version

from acepilot.server.registry import Registry

MODEL = "tiny"


@pytest.fixture(scope="module")
def server(team_registry: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TeamServer]:
    log = tmp_path_factory.mktemp("team-swap") / "server.log"
    process = TeamServer(team_registry, log, "--poll", "0.2", "--rate", "1000", "--burst", "1000")
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()


class Hammer:
    """Client threads sending requests until stopped; every answer is recorded."""

    def __init__(self, url: str, tokens: list[str]) -> None:
        self.url = url
        self.tokens = tokens
        self.stop = threading.Event()
        self.failures: list[str] = []
        self.versions: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.threads = [
            threading.Thread(target=self.run, args=(i,), daemon=True) for i in range(len(tokens))
        ]

    def run(self, index: int) -> None:
        token = self.tokens[index]
        stream = index % 2 == 1
        with httpx.Client(timeout=60) as http:
            count = 0
            while not self.stop.is_set():
                count += 1
                body = {
                    "prompt": "def f(x):\n" * (1 + count % 4),
                    "max_tokens": 16,
                    "temperature": 0,
                    "stream": stream,
                }
                try:
                    fingerprint = self.one(http, token, body)
                except Exception as exc:  # any failure is a test failure
                    with self.lock:
                        self.failures.append(f"{type(exc).__name__}: {exc}")
                    continue
                with self.lock:
                    self.versions[fingerprint] += 1

    def one(self, http: httpx.Client, token: str, body: dict[str, object]) -> str:
        if not body["stream"]:
            response = http.post(self.url + "/v1/completions", headers=auth(token), json=body)
            if response.status_code != 200:
                raise AssertionError(f"HTTP {response.status_code}: {response.text[:200]}")
            return str(response.json()["system_fingerprint"])
        fingerprint = ""
        done = False
        with http.stream(
            "POST", self.url + "/v1/completions", headers=auth(token), json=body
        ) as response:
            if response.status_code != 200:
                raise AssertionError(f"HTTP {response.status_code}")
            for line in response.iter_lines():
                if line == "data: [DONE]":
                    done = True
                elif line.startswith("data: "):
                    if '"error"' in line:
                        raise AssertionError(line)
                    fingerprint = line.split('"system_fingerprint": "')[1].split('"')[0]
        if not done:
            raise AssertionError("stream ended without [DONE]")
        return fingerprint

    def __enter__(self) -> Hammer:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(60)


def wait_version(server: TeamServer, version: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if httpx.get(server.url + "/readyz").json().get("version") == version:
            return
        time.sleep(0.05)
    raise AssertionError(f"the server never switched to {version}:\n{server.log_text()[-2000:]}")


def wait_loaded(server: TeamServer, count: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if metric(server.metrics(), "acepilot_model_loaded") == count:
            return
        time.sleep(0.05)
    raise AssertionError(
        f"still {metric(server.metrics(), 'acepilot_model_loaded')} versions loaded"
    )


def test_promotion_and_rollback_under_load_fail_no_request(
    server: TeamServer, team_registry: Path
) -> None:
    registry = Registry(team_registry)
    tokens = [new_token(team_registry, f"swap-{i}") for i in range(4)]
    v2 = register_version(team_registry)
    with Hammer(server.url, tokens) as hammer:
        time.sleep(1.0)
        registry.set_production(MODEL, v2)
        wait_version(server, v2)
        time.sleep(1.0)
        registry.set_production(MODEL, "v1")  # a rollback is a swap too
        wait_version(server, "v1")
        time.sleep(1.0)
    assert hammer.failures == []
    assert hammer.versions[f"{MODEL}-v1"] > 0 and hammer.versions[f"{MODEL}-{v2}"] > 0
    assert sum(hammer.versions.values()) >= 12
    assert metric(server.metrics(), "acepilot_model_swaps_total") == 2
    wait_loaded(server, 1)  # the drained versions were freed
    assert metric(server.metrics(), "acepilot_model_info", model=MODEL, version="v1") == 1


@pytest.mark.parametrize("corruption", ["sha256", "graph"])
def test_a_broken_version_is_refused_and_the_old_one_keeps_serving(
    server: TeamServer, team_registry: Path, corruption: str
) -> None:
    registry = Registry(team_registry)
    serving = httpx.get(server.url + "/readyz").json()["version"]
    token = new_token(team_registry, f"refused-{corruption}")
    bad = register_version(team_registry, corrupt=corruption)
    with Hammer(server.url, [token]) as hammer:
        registry.set_production(MODEL, bad)
        deadline = time.monotonic() + 60
        while metric(server.metrics(), "acepilot_model_refused_total", version=bad) < 1:
            assert time.monotonic() < deadline, server.log_text()[-2000:]
            time.sleep(0.05)
        time.sleep(0.5)  # polls go on: the refused version is not retried, nothing changes
    assert hammer.failures == []
    assert set(hammer.versions) == {f"{MODEL}-{serving}"}
    assert httpx.get(server.url + "/readyz").json()["version"] == serving
    values = server.metrics()
    assert metric(values, "acepilot_model_refused_total", version=bad) == 1
    assert metric(values, "acepilot_model_loaded") == 1
    log = server.log_text()
    assert f"refused {MODEL} {bad}" in log
    assert ("corrupt" in log) if corruption == "sha256" else ("cannot load" in log)
    registry.set_production(MODEL, serving)  # put it back for the next case
