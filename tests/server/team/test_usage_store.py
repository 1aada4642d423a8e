"""The usage store behind the dashboard (real SQLite files, a settable clock).

Counts land in the report they belong to (period, token, language, version),
percentiles come out of the latency histogram as documented, retention checks
are summed as characters, rows past the retention period are deleted, a new
process reads what an old one flushed, and the telemetry schema accepts only
well-formed retention reports.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from acepilot.server.team.errors import ApiError
from acepilot.server.team.schema import TelemetryBody, parse
from acepilot.server.team.store import LATENCY_BOUNDS_MS, ReportQuery, UsageStore, quantile

T0 = 1_800_000_000.0  # a fixed "now" (seconds)


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def store_at(path: Path, clock: Clock, retention_days: float = 90.0) -> UsageStore:
    return UsageStore(path / "usage.sqlite3", retention_days=retention_days, clock=clock)


def test_counts_filters_and_rates(tmp_path: Path) -> None:
    clock = Clock()
    store = store_at(tmp_path, clock)
    for latency in (40, 60, 90, 120):  # alice on v1: 4 finished, one more cancelled
        store.request("alice", "v1")
        store.finished(
            "alice", "v1", cancelled=False, latency_ms=latency, tokens_in=10, tokens_out=5
        )
    store.request("alice", "v1")
    store.finished("alice", "v1", cancelled=True, latency_ms=5000, tokens_in=10, tokens_out=1)
    store.request("bob", "v2")
    store.finished("bob", "v2", cancelled=False, latency_ms=400, tokens_in=3, tokens_out=3)
    for _ in range(4):
        store.event("alice", "python", "v1", "shown")
    store.event("alice", "python", "v1", "accepted", chars=50)
    store.event("alice", "python", "v1", "retained", chars=50, after_s=30, retained_chars=50)
    store.event("alice", "python", "v1", "retained", chars=50, after_s=120, retained_chars=20)
    store.event("bob", "go", "v2", "shown")
    store.event("bob", "go", "v2", "rejected")
    store.error("", "v1", "invalid_api_key")
    store.error("bob", "v2", "rate_limit_exceeded")
    store.error("bob", "v2", "rate_limit_exceeded")

    report = store.report(ReportQuery("1h"))
    totals = report["totals"]
    assert totals["requests"] == 6 and totals["completed"] == 5 and totals["cancelled"] == 1
    assert totals["tokens_out"] == 4 * 5 + 1 + 3
    assert totals["shown"] == 5 and totals["accepted"] == 1 and totals["rejected"] == 1
    assert totals["acceptance_rate"] == pytest.approx(1 / 5)
    assert totals["accepted_chars"] == 50
    assert totals["retained_30s"] == {
        "checked": 1,
        "intact": 1,
        "chars": 50,
        "of_chars": 50,
        "rate": 1.0,
    }
    assert totals["retained_120s"]["rate"] == pytest.approx(20 / 50)
    assert totals["retained_120s"]["intact"] == 0
    assert totals["errors"] == 3
    assert report["errors"] == [
        {"kind": "rate_limit_exceeded", "count": 2},
        {"kind": "invalid_api_key", "count": 1},
    ]
    assert [row["token"] for row in report["by_token"]] == ["alice", "bob"]
    assert [row["version"] for row in report["by_version"]] == ["v1", "v2"]
    assert [row["language"] for row in report["by_language"]] == ["go", "python"]
    assert len(report["series"]) == 60  # one-minute slots over the hour
    assert sum(slot["requests"] for slot in report["series"]) == 6

    alice = store.report(ReportQuery("1h", token="alice"))["totals"]
    assert alice["requests"] == 5 and alice["shown"] == 4 and alice["errors"] == 0
    python = store.report(ReportQuery("1h", language="python"))["totals"]
    assert python["requests"] == 0 and python["accepted"] == 1  # requests carry no language
    v2 = store.report(ReportQuery("1h", version="v2"))
    assert v2["totals"]["requests"] == 1 and v2["errors"] == [
        {"kind": "rate_limit_exceeded", "count": 2}
    ]
    # latency of the 4 completed alice requests: 40, 60, 90, 120 ms -> buckets (25,50], (50,75],
    # (75,100], (100,150]; the median's rank 2 ends the (50,75] bucket.
    assert alice["latency_p50_ms"] == pytest.approx(75.0)
    assert alice["latency_p95_ms"] == pytest.approx(100 + 50 * (3.8 - 3))


def test_quantile_interpolates_inside_buckets() -> None:
    histogram = [0] * (len(LATENCY_BOUNDS_MS) + 1)
    assert quantile(histogram, 0.5) is None
    histogram[LATENCY_BOUNDS_MS.index(100)] = 10  # ten in (75, 100]
    assert quantile(histogram, 0.5) == pytest.approx(87.5)
    histogram[-1] = 90  # most above the last bound: the last bound is the answer
    assert quantile(histogram, 0.95) == LATENCY_BOUNDS_MS[-1]


def test_periods_and_persistence(tmp_path: Path) -> None:
    clock = Clock()
    store = store_at(tmp_path, clock)
    store.request("alice", "v1")  # two days ago
    store.flush()
    clock.now += 2 * 86400
    store.request("alice", "v1")  # now
    store.stop()  # flushes

    again = store_at(tmp_path, clock)  # another process reads the file
    assert again.report(ReportQuery("24h"))["totals"]["requests"] == 1
    assert again.report(ReportQuery("7d"))["totals"]["requests"] == 2
    assert again.choices() == {"tokens": ["alice"], "languages": [], "versions": ["v1"]}


def test_rows_past_the_retention_period_are_deleted(tmp_path: Path) -> None:
    clock = Clock()
    store = store_at(tmp_path, clock, retention_days=1)
    store.request("alice", "v1")
    store.error("alice", "v1", "queue_full")
    store.flush()
    clock.now += 2 * 86400
    store.request("bob", "v1")
    store.flush()
    with sqlite3.connect(tmp_path / "usage.sqlite3") as db:
        tokens = [row[0] for row in db.execute("SELECT token FROM usage")]
        errors = db.execute("SELECT COUNT(*) FROM errors").fetchone()[0]
    assert tokens == ["bob"] and errors == 0


def test_nothing_but_counts_is_stored(tmp_path: Path) -> None:
    """The schema has no column that could hold text of a prompt or completion."""
    store = store_at(tmp_path, Clock())
    store.flush()
    with sqlite3.connect(tmp_path / "usage.sqlite3") as db:
        for table, expected in (
            ("usage", {"token", "language", "version"}),
            ("errors", {"token", "version", "kind"}),
        ):
            columns = db.execute(f"PRAGMA table_info({table})").fetchall()
            text = {name for _, name, kind, *_ in columns if kind == "TEXT"}
            assert text == expected  # names chosen by the server or bounded labels
            others = {kind for _, _, kind, *_ in columns if kind != "TEXT"}
            assert others == {"INTEGER"}


@pytest.mark.parametrize(
    ("event", "message"),
    [
        ({"event": "retained", "language": "python", "chars": 5}, "needs after_s"),
        (
            {
                "event": "retained",
                "language": "python",
                "chars": 5,
                "after_s": 30,
                "retained_chars": 6,
            },
            "cannot exceed",
        ),
        (
            {
                "event": "retained",
                "language": "python",
                "chars": 5,
                "after_s": 60,
                "retained_chars": 1,
            },
            "after_s",
        ),
        ({"event": "shown", "language": "python", "after_s": 30}, "retained events only"),
        ({"event": "shown", "language": "python", "chars": 3}, "accepted and retained"),
        ({"event": "accepted", "language": "python", "chars": -1}, "chars"),
    ],
)
def test_malformed_retention_events_are_refused(event: dict[str, object], message: str) -> None:
    import json

    with pytest.raises(ApiError) as caught:
        parse(TelemetryBody, json.dumps({"events": [event]}).encode())
    assert caught.value.status == 400
    assert message in caught.value.message


def test_well_formed_retention_events_parse() -> None:
    body = parse(
        TelemetryBody,
        b'{"events": [{"event": "accepted", "language": "go", "chars": 12},'
        b' {"event": "retained", "language": "go", "chars": 12, "after_s": 120,'
        b' "retained_chars": 12}, {"event": "shown", "language": "go"}]}',
    )
    assert [e.event for e in body.events] == ["accepted", "retained", "shown"]
    assert body.events[1].after_s == 120
