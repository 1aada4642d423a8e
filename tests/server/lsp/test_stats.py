"""Unit tests of server/lsp/stats.py: counters, telemetry events, the batching sender."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from acepilot.server.lsp.stats import (
    GenerationRecord,
    Issued,
    RequestRecord,
    Stats,
    TelemetryEvent,
    TelemetrySender,
    parse_event,
    percentile,
)


def test_percentile_nearest_rank() -> None:
    assert percentile([], 0.5) is None
    assert percentile([3.0], 0.95) == 3.0
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 50.0
    assert percentile(values, 0.95) == 95.0


def test_snapshot_sums_and_means() -> None:
    stats = Stats()
    stats.generation(GenerationRecord(100, 90, 5, "stop", 1.0, 2.0))
    stats.generation(GenerationRecord(50, 0, 7, "cancelled", 1.0, 2.0))
    stats.answered(RequestRecord(10.0, "model", 16, "length"), 1.0)
    stats.answered(RequestRecord(30.0, "typing_ahead"), None)
    snap = stats.snapshot()
    assert snap["prompt_tokens"] == 150 and snap["reused_tokens"] == 90
    assert snap["prefilled_tokens"] == 60 and snap["prefilled_mean"] == 30
    assert snap["generated_tokens"] == 12
    assert [g["prefilled_tokens"] for g in snap["recent_generations"]] == [10, 50]
    assert snap["latency"]["count"] == 2 and snap["latency"]["p50_ms"] == 10.0
    assert snap["overhead"] == {"count": 1, "p50_ms": 1.0, "p95_ms": 1.0}
    assert snap["recent_requests"] == [
        {"total_ms": 10.0, "source": "model", "generated_tokens": 16, "finish_reason": "length"},
        {"total_ms": 30.0, "source": "typing_ahead", "generated_tokens": 0, "finish_reason": ""},
    ]
    json.dumps(snap)  # it travels as JSON


@pytest.mark.parametrize(
    "params",
    [
        None,
        [],
        {"event": "clicked", "id": "a-1", "languageId": "python"},
        {"event": "shown", "id": "a 1", "languageId": "python"},
        {"event": "shown", "id": "a-1", "languageId": ""},
        {"event": "shown", "id": "a-1"},
        {"event": "shown", "id": "a" * 65, "languageId": "python"},
    ],
)
def test_bad_events_are_refused(params: Any) -> None:
    assert parse_event(params) is None


def test_issued_ids_count_once_per_kind() -> None:
    issued = Issued(size=2)
    first = issued.new("python")
    event = parse_event({"event": "shown", "id": first, "languageId": "go"})
    assert event == TelemetryEvent("shown", first, "go")
    assert issued.record(event) == "python"  # the language the server saw wins
    assert issued.record(event) is None  # a repeat
    assert issued.record(TelemetryEvent("accepted", first, "python")) == "python"
    issued.new("python")
    issued.new("python")  # the first id falls out of the bounded memory
    assert issued.record(TelemetryEvent("rejected", first, "python")) is None
    assert Issued().new("x").split("-")[0] != Issued().new("x").split("-")[0]


class Collector:
    """POST /v1/telemetry on 127.0.0.1, recording bodies."""

    def __init__(self) -> None:
        self.bodies: list[Any] = []
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                collector.bodies.append(json.loads(body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1/telemetry"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_sender_flushes_after_the_interval() -> None:
    collector = Collector()
    try:
        sender = TelemetrySender(collector.url, "tok", interval=0.2, batch=50)
        sender.add("shown", "python")
        sender.add("accepted", "rust")
        deadline = time.monotonic() + 5
        # `sent` is counted once the server has answered, a moment after it got the body.
        while (not collector.bodies or sender.sent < 2) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert collector.bodies == [
            {
                "events": [
                    {"event": "shown", "language": "python"},
                    {"event": "accepted", "language": "rust"},
                ]
            }
        ]
        assert sender.sent == 2
        sender.close()
    finally:
        collector.close()


def test_sender_ignores_an_unreachable_server() -> None:
    collector = Collector()
    url = collector.url
    collector.close()  # nothing listens any more
    sender = TelemetrySender(url, None, interval=0.05, batch=1)
    sender.add("shown", "python")
    time.sleep(0.3)
    started = time.monotonic()
    sender.close()
    assert sender.sent == 0 and time.monotonic() - started < 5
