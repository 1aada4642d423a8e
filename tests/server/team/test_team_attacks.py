"""Adversarial clients against one real `acepilot team-server` process.

Written from the attacker's side, with raw sockets where an HTTP client
would be too polite: expensive prompts from one token, idle and slow
connections (slowloris), a connection flood past the process's file limit,
a client that leaves in the middle of its body, malformed JSON of every
kind, lone surrogates, label floods in /metrics. After each attack the
server must still answer others, refuse the attacker with a clear 4xx, keep
its memory and its log bounded, and log no traceback.

The server runs with an open-file limit of 256 (so a flood reaches it), a
client timeout of 3 s, and /metrics restricted to the token named
"scraper". Timing bounds here are generous (seconds where the server needs
milliseconds): they tell "answered while attacked" from "stalled for the
whole attack" (tens of seconds before these defences).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from team_helpers import TeamServer, auth, complete, metric, new_token

NOFILE = 256
CLIENT_TIMEOUT_S = 3
# Generous: the server answers these in milliseconds; before the defences a
# /healthz waited for the whole attack (tens of seconds).
HEALTH_BOUND_S = 5.0
CLOSE_BOUND_S = 20.0  # a connection the server must drop after CLIENT_TIMEOUT_S
BIG_PROMPT = ("def f(x):\n    return x + 1\n" * 40_000)[:920_000]  # the issue's 920 KB prompt


@pytest.fixture(scope="module")
def scraper(team_registry: Path) -> str:
    return new_token(team_registry, "scraper")


@pytest.fixture(scope="module")
def server(
    team_registry: Path, scraper: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TeamServer]:
    log = tmp_path_factory.mktemp("team-attacks") / "server.log"
    process = TeamServer(
        team_registry,
        log,
        "--client-timeout", str(CLIENT_TIMEOUT_S),
        "--metrics-token", "scraper",
        nofile=NOFILE,
        metrics_token=scraper,
    )  # fmt: skip
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()


class PeakMemory:
    """Samples the server's resident memory in a thread while a block runs."""

    def __init__(self, server: TeamServer) -> None:
        self.server = server
        self.baseline = server.rss_bytes()
        self.peak = self.baseline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.server.rss_bytes())
            self._stop.wait(0.01)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def growth_mb(self) -> float:
        return (self.peak - self.baseline) / 2**20


async def flood_and_probe(
    server: TeamServer, attacker: str, victim: str, body: bytes, count: int = 30
) -> tuple[list[httpx.Response], list[float], httpx.Response]:
    """`count` concurrent requests of `body` from `attacker`; meanwhile /healthz probes
    and one small completion of `victim`. Returns the attack's responses, the probes'
    latencies and the victim's response."""
    url = server.url + "/v1/completions"
    limits = httpx.Limits(max_connections=count + 8)
    async with httpx.AsyncClient(timeout=300, limits=limits) as http:
        attack = [
            asyncio.create_task(http.post(url, headers=auth(attacker), content=body))
            for _ in range(count)
        ]
        await asyncio.sleep(0.2)  # the bodies are on their way
        probes: list[float] = []
        victim_task = asyncio.create_task(
            http.post(url, headers=auth(victim), json={"prompt": "def f(x):\n", "max_tokens": 4})
        )
        while not all(task.done() for task in attack) or not probes:
            start = time.monotonic()
            health = await http.get(server.url + "/healthz")
            probes.append(time.monotonic() - start)
            assert health.status_code == 200
            await asyncio.sleep(0.05)
        return await asyncio.gather(*attack), probes, await victim_task


async def test_huge_prompts_from_one_token_are_refused_before_tokenizing(
    server: TeamServer, team_registry: Path
) -> None:
    """The issue's attack: 30 concurrent 920 KB prompts (under the 1 MiB body limit)."""
    mallory, alice = new_token(team_registry, "mallory-big"), new_token(team_registry, "alice-big")
    body = json.dumps({"prompt": BIG_PROMPT, "max_tokens": 4}).encode()
    with PeakMemory(server) as memory:
        responses, probes, victim = await flood_and_probe(server, mallory, alice, body)
    assert victim.status_code == 200, victim.text
    for response in responses:
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["param"] == "prompt" and "characters" in error["message"]
    assert max(probes) < HEALTH_BOUND_S, probes
    assert memory.growth_mb < 400, f"memory grew by {memory.growth_mb:.0f} MB"


async def test_expensive_prompts_are_tokenized_a_few_at_a_time_per_token(
    server: TeamServer, team_registry: Path
) -> None:
    """Prompts just under the character limit must be tokenized: one token gets a
    bounded share of that work (429 past it), others are served meanwhile."""
    mallory, bob = new_token(team_registry, "mallory-cap"), new_token(team_registry, "bob-cap")
    limit = character_limit(server, mallory)
    prompt = BIG_PROMPT[: limit - 10]
    body = json.dumps({"prompt": prompt, "max_tokens": 4}).encode()
    with PeakMemory(server) as memory:
        responses, probes, victim = await flood_and_probe(server, mallory, bob, body)
    assert victim.status_code == 200, victim.text
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {400, 429}, statuses
    busy = [r for r in responses if r.status_code == 429]
    assert busy, "no per-token cap: every prompt was tokenized at once"
    for response in busy:
        assert response.json()["error"]["code"] == "too_many_prompts"
        assert int(response.headers["retry-after"]) >= 1
    for response in responses:
        if response.status_code == 400:  # tokenized: too many tokens
            assert "tokens" in response.json()["error"]["message"]
    assert max(probes) < HEALTH_BOUND_S, probes
    assert memory.growth_mb < 400, f"memory grew by {memory.growth_mb:.0f} MB"


def character_limit(server: TeamServer, token: str) -> int:
    """The server's prompt character limit, as its refusal states it."""
    response = complete(server.url, token, prompt="x" * 800_000, max_tokens=1)
    assert response.status_code == 400
    message = response.json()["error"]["message"]
    return int(message.split("at most ")[1].split()[0].replace(",", ""))


@pytest.mark.parametrize(
    "body",
    [
        b'{"prompt": "def f():\\n    return \\ud83d", "max_tokens": 4}',
        b'{"prompt": "x", "suffix": "\\udc00 tail", "max_tokens": 4}',
        b'{"prompt": ["\\ud83d"], "max_tokens": 4}',
        b'{"prompt": "x", "stop": ["\\ud800"], "max_tokens": 4}',
    ],
)
def test_lone_surrogates_are_400_without_traceback(
    server: TeamServer, team_registry: Path, body: bytes
) -> None:
    token = new_token(team_registry, f"surrogate-{abs(hash(body)) % 10**8}")
    start = len(server.log_text())
    response = httpx.post(server.url + "/v1/completions", headers=auth(token), content=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["type"] == "invalid_request_error"
    paired = complete(server.url, token, prompt="# \U0001f600\ndef f():\n", max_tokens=2)
    assert paired.status_code == 200  # a proper pair (an emoji) is fine
    assert "Traceback" not in server.log_text()[start:]


def test_client_leaving_mid_body_is_a_client_disconnect(
    server: TeamServer, team_registry: Path
) -> None:
    token = new_token(team_registry, "leaver")
    start = len(server.log_text())
    before = server.metrics()
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(
                b"POST /v1/completions HTTP/1.1\r\nHost: t\r\n"
                + f"Authorization: Bearer {token}\r\n".encode()
                + b"Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
                + b'{"prompt": "'
                + b"x" * 2000
            )
            time.sleep(0.3)  # the server is reading the body
    deadline = time.monotonic() + 30
    while True:
        after = server.metrics()
        left = metric(after, "acepilot_client_disconnects_total", endpoint="completions")
        if left - metric(before, "acepilot_client_disconnects_total", endpoint="completions") >= 3:
            break
        assert time.monotonic() < deadline, "the disconnects were not counted"
        time.sleep(0.1)
    series = "acepilot_requests_total"
    assert metric(after, series, endpoint="completions", status="500") == metric(
        before, series, endpoint="completions", status="500"
    )
    assert metric(after, series, endpoint="completions", status="499") >= 3
    log = server.log_text()[start:]
    assert "Traceback" not in log
    assert not [line for line in log.splitlines() if line.startswith(("ERROR", "CRITICAL"))]


def recv_until_closed(sock: socket.socket, bound_s: float) -> bytes:
    """Everything the server sends until it closes the connection (fails past `bound_s`)."""
    sock.settimeout(bound_s)
    received = b""
    try:
        while chunk := sock.recv(4096):
            received += chunk
    except ConnectionResetError:
        pass
    except TimeoutError:
        raise AssertionError(f"the server kept the connection open over {bound_s} s") from None
    return received


def idle(address: tuple[str, int]) -> None:
    with socket.create_connection(address) as sock:  # connects, never sends a byte
        recv_until_closed(sock, CLOSE_BOUND_S)


def slowloris(address: tuple[str, int]) -> None:
    with socket.create_connection(address) as sock:  # a header line now and then
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n")
        start = time.monotonic()
        while time.monotonic() - start < CLOSE_BOUND_S:
            try:
                sock.sendall(b"X-Slow: 1\r\n")
            except OSError:  # broken pipe or reset: closed by the server
                return
            time.sleep(0.5)
        assert recv_until_closed(sock, 1) == b""


def slow_body(address: tuple[str, int], token: str) -> None:
    with socket.create_connection(address) as sock:  # the head, then part of a body
        sock.sendall(
            b"POST /v1/completions HTTP/1.1\r\nHost: t\r\n"
            + f"Authorization: Bearer {token}\r\n".encode()
            + b"Content-Length: 1000\r\n\r\n{"
        )
        answer = recv_until_closed(sock, CLOSE_BOUND_S)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]


def stalled_next_head(address: tuple[str, int]) -> None:
    with socket.create_connection(address) as sock:  # one request answered, then a stall
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\nGET /healthz HTTP/1.1\r\n")
        answer = recv_until_closed(sock, CLOSE_BOUND_S)
    assert answer.startswith(b"HTTP/1.1 200") and answer.count(b"HTTP/1.1") == 1


def test_idle_and_slow_connections_are_closed(server: TeamServer, team_registry: Path) -> None:
    """Each kind of slow client on its own connection, all at once (each takes the
    client timeout); every one must be closed by the server."""
    address = ("127.0.0.1", server.port)
    token = new_token(team_registry, "slow-body")
    with ThreadPoolExecutor(4) as pool:
        futures = [
            pool.submit(idle, address),
            pool.submit(slowloris, address),
            pool.submit(slow_body, address, token),
            pool.submit(stalled_next_head, address),
        ]
        for future in futures:
            future.result()
    assert httpx.get(server.url + "/healthz").status_code == 200


def test_connection_flood_past_the_file_limit(server: TeamServer, team_registry: Path) -> None:
    """More idle connections than the process may open files: the server keeps
    accepting (dropping the longest-idle one at its connection limit), answers
    probes and completions, and its log stays small."""
    token = new_token(team_registry, "after-flood")
    assert "connections lowered to" in server.log_text()  # fitted to the 256-file limit
    log_before = len(server.log_text())
    held: list[socket.socket] = []
    try:
        for _ in range(2 * NOFILE):
            sock = socket.socket()
            sock.settimeout(10)
            try:
                sock.connect(("127.0.0.1", server.port))
            except OSError:
                sock.close()
                continue
            held.append(sock)
            # A few ms apart: the listen backlog (fitted to the file limit) is small, and
            # connects faster than the server accepts are dropped by the kernel and retried
            # a second later, which would spread the flood past the client timeout.
            time.sleep(0.003)
        assert len(held) > NOFILE
        health = httpx.get(server.url + "/healthz", timeout=HEALTH_BOUND_S)
        assert health.status_code == 200
        assert complete(server.url, token, prompt="def f(x):\n", max_tokens=4).status_code == 200
        values = server.metrics()
        assert metric(values, "acepilot_connections_closed_total", reason="limit") > 0
    finally:
        for sock in held:
            sock.close()
    grown = server.log_text()[log_before:]
    assert len(grown) < 20_000, grown[-2000:]
    assert grown.count("out of system resource") <= 10
    assert "Traceback" not in grown


def test_metrics_need_the_metrics_token(
    server: TeamServer, team_registry: Path, scraper: str
) -> None:
    url = server.url + "/metrics"
    assert httpx.get(url).status_code == 401
    developer = new_token(team_registry, "not-scraper")
    assert httpx.get(url, headers=auth(developer)).status_code == 403
    assert httpx.get(url, headers=auth("acp_" + "x" * 43)).status_code == 401
    response = httpx.get(url, headers=auth(scraper))
    assert response.status_code == 200 and "acepilot_requests_total" in response.text


def test_one_token_cannot_use_up_the_language_labels(
    server: TeamServer, team_registry: Path
) -> None:
    mallory, carol = new_token(team_registry, "mallory-labels"), new_token(team_registry, "carol-l")
    url = server.url + "/v1/telemetry"
    flood = [{"event": "shown", "language": f"lang{i}"} for i in range(200)]
    response = httpx.post(url, headers=auth(mallory), json={"events": flood})
    assert response.status_code == 200 and response.json() == {"received": 200}
    fair = [{"event": "shown", "language": "python"}, {"event": "shown", "language": "zzlang"}]
    assert httpx.post(url, headers=auth(carol), json={"events": fair}).status_code == 200
    values = server.metrics()
    series = "acepilot_telemetry_events_total"
    labels = {
        key.split('language="')[1].split('"')[0]
        for key in values
        if key.startswith(series) and 'token="mallory-labels"' in key
    }
    assert len(labels) <= 16 and "other" in labels, sorted(labels)
    assert metric(values, series, token="mallory-labels", event="shown", language="other") > 100
    assert metric(values, series, token="carol-l", event="shown", language="python") == 1
    assert metric(values, series, token="carol-l", event="shown", language="zzlang") == 1


HUGE_NUMBER = b"9" * 5000


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        (b'{"prompt": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "application/json", 400),
        (b'{"prompt": "x", "seed": ' + HUGE_NUMBER + b"}", "application/json", 400),
        (b'{"prompt": "x", "temperature": ' + HUGE_NUMBER + b".5}", "application/json", 400),
        (b'{"prompt": "x", "temperature": NaN}', "application/json", 400),
        (b'{"prompt": "x", "top_p": Infinity}', "application/json", 400),
        (b'{"prompt": "x", "max_tokens": 1000000000000000000000000000000}', None, 400),
        (b'{"prompt": "x", "n": 1000000000}', None, 400),
        (json.dumps({"prompt": "x", "stop": ["s"] * 10_000}).encode(), None, 400),
        (json.dumps({"prompt": "x", "stop": ["s" * 100_000]}).encode(), None, 400),
        (json.dumps({"prompt": "x", "user": "u" * 100_000}).encode(), None, 400),
        (json.dumps({"prompt": [-1, 5]}).encode(), None, 400),
        (json.dumps({"prompt": [5] * 100_000}).encode(), None, 400),
        (json.dumps({"prompt": "x", "stream_options": []}).encode(), None, 400),
        (b"\xef\xbb\xbf" + json.dumps({"prompt": "x", "max_tokens": 1}).encode(), None, 200),  # BOM
        (b"\xef\xbb\xbf\xef\xbb\xbf" + json.dumps({"prompt": "x"}).encode(), None, 400),
        (b"\x00" * 1000, "application/octet-stream", 400),
        (b"prompt=x&max_tokens=2", "application/x-www-form-urlencoded", 400),
        (b"--b\r\nContent-Disposition: form-data; name=prompt\r\n\r\nx\r\n--b--\r\n",
         "multipart/form-data; boundary=b", 400),
        # curl -d sends a form content type: a JSON body is still read as JSON
        (json.dumps({"prompt": "x", "max_tokens": 1}).encode(), "application/x-www-form-urlencoded", 200),
        (json.dumps({"prompt": "x", "max_tokens": 1}).encode(), "text/plain", 200),
    ],
)  # fmt: skip
def test_malformed_bodies_get_a_clear_answer(
    server: TeamServer, team_registry: Path, body: bytes, content_type: str | None, status: int
) -> None:
    token = new_token(team_registry, f"bodies-{abs(hash((body, content_type))) % 10**8}")
    headers = auth(token) | ({"Content-Type": content_type} if content_type else {})
    start = len(server.log_text())
    response = httpx.post(server.url + "/v1/completions", headers=headers, content=body)
    assert response.status_code == status, response.text[:300]
    if status == 400:
        error = response.json()["error"]
        assert error["type"] == "invalid_request_error" and error["message"]
    assert "Traceback" not in server.log_text()[start:]


def test_malformed_http_is_refused_and_the_server_keeps_serving(server: TeamServer) -> None:
    address = ("127.0.0.1", server.port)
    start = len(server.log_text())
    cases = [
        b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\n",
        b"POST /v1/completions HTTP/1.1\r\nHost: t\r\nContent-Length: -1\r\n\r\n",
        b"POST /v1/completions HTTP/1.1\r\nHost: t\r\nContent-Length: 1e9\r\n\r\n",
        b"POST /v1/completions HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 100,  # a TLS hello
    ]
    for request in cases:
        with socket.create_connection(address) as sock:
            with contextlib.suppress(OSError):  # closed before all was sent: refused
                sock.sendall(request)
            answer = recv_until_closed(sock, CLOSE_BOUND_S)
        assert answer == b"" or answer.startswith(b"HTTP/1.1 4"), answer[:200]
    assert httpx.get(server.url + "/healthz").status_code == 200
    assert "Traceback" not in server.log_text()[start:]
