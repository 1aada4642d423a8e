"""Usage reports of the team server: per-minute counters in SQLite, for the dashboard.

What is stored is counts and sizes only, never code: per minute, token name,
language and model version, how many completion requests were taken, finished
or cancelled, tokens in and out, a latency histogram, and what editors
reported (shown, accepted, rejected, accepted characters, and how many of
those characters were still there 30 s and 2 min later); and per minute,
token and version, errors by kind. A developer typing sends several requests
a second, so rows are aggregates, not one per request: their number is
bounded by minutes x active tokens x languages x versions, whatever the load.

Latency percentiles come from the histogram (fixed buckets, linear
interpolation inside the bucket, as Prometheus' `histogram_quantile`): exact
enough to see a regression, and summable over any period and filter in SQL.

The request path only adds to an in-memory accumulator (a dict under a lock);
`flush()` writes it in one transaction, from a background thread every few
seconds and before every report, so a report always includes everything
counted before it. Rows older than the retention period are deleted on flush.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DB_NAME = "team-usage.sqlite3"
# Upper bounds of the latency buckets in milliseconds (one more bucket: above the last).
LATENCY_BOUNDS_MS = (
    10,
    25,
    50,
    75,
    100,
    150,
    200,
    300,
    500,
    750,
    1000,
    1500,
    2000,
    3000,
    5000,
    10000,
    30000,
)
LATENCY = tuple(f"lat_{index}" for index in range(len(LATENCY_BOUNDS_MS) + 1))
CHECKPOINTS = (30, 120)  # seconds after an acceptance when editors re-check the inserted text
RETAINED = tuple(
    f"r{after}_{what}" for after in CHECKPOINTS for what in ("checked", "intact", "chars", "of")
)
COUNTS = (
    "requests",  # taken for generation (validated, authenticated, queued)
    "completed",  # generations that ended by themselves (stop, eos, length, deadline)
    "cancelled",  # the client left (or typed on) first
    "tokens_in",
    "tokens_out",
    "shown",
    "accepted",
    "rejected",
    "accepted_chars",
    *RETAINED,
)
COLUMNS = COUNTS + LATENCY
INDEX = {name: index for index, name in enumerate(COLUMNS)}
PERIODS = {"1h": 3600, "24h": 86400, "7d": 7 * 86400, "30d": 30 * 86400, "90d": 90 * 86400}
STEPS = {"1h": 60, "24h": 3600, "7d": 6 * 3600, "30d": 86400, "90d": 3 * 86400}
NO_TOKEN = ""  # errors before a token was checked (401)

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS usage (minute INTEGER NOT NULL, token TEXT NOT NULL, "
    "language TEXT NOT NULL, version TEXT NOT NULL, "
    + ", ".join(f"{name} INTEGER NOT NULL DEFAULT 0" for name in COLUMNS)
    + ", PRIMARY KEY (minute, token, language, version))",
    "CREATE TABLE IF NOT EXISTS errors (minute INTEGER NOT NULL, token TEXT NOT NULL, "
    "version TEXT NOT NULL, kind TEXT NOT NULL, count INTEGER NOT NULL DEFAULT 0, "
    "PRIMARY KEY (minute, token, version, kind))",
)
UPSERT_USAGE = (
    "INSERT INTO usage (minute, token, language, version, "
    + ", ".join(COLUMNS)
    + ") VALUES (?, ?, ?, ?, "
    + ", ".join("?" for _ in COLUMNS)
    + ") ON CONFLICT (minute, token, language, version) DO UPDATE SET "
    + ", ".join(f"{name} = {name} + excluded.{name}" for name in COLUMNS)
)
UPSERT_ERRORS = (
    "INSERT INTO errors (minute, token, version, kind, count) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT (minute, token, version, kind) DO UPDATE SET count = count + excluded.count"
)
SUMS = ", ".join(f"SUM({name})" for name in COLUMNS)

UsageKey = tuple[int, str, str, str]  # minute, token, language, version
ErrorKey = tuple[int, str, str, str]  # minute, token, version, kind


def default_db(tokens_db: Path) -> Path:
    """The usage database: beside the token database."""
    return Path(tokens_db).parent / DB_NAME


def latency_bucket(ms: float) -> int:
    for index, bound in enumerate(LATENCY_BOUNDS_MS):
        if ms <= bound:
            return index
    return len(LATENCY_BOUNDS_MS)


def quantile(histogram: Sequence[int], share: float) -> float | None:
    """The `share` quantile (0..1) of a latency histogram in ms; None when empty.

    Linear inside the bucket that holds the rank; the open last bucket answers
    its lower bound (as Prometheus does)."""
    total = sum(histogram)
    if total == 0:
        return None
    rank = share * total
    seen = 0
    for index, count in enumerate(histogram):
        if count and seen + count >= rank:
            if index == len(LATENCY_BOUNDS_MS):
                return float(LATENCY_BOUNDS_MS[-1])
            lower = LATENCY_BOUNDS_MS[index - 1] if index else 0
            upper = LATENCY_BOUNDS_MS[index]
            return lower + (upper - lower) * (rank - seen) / count
        seen += count
    return float(LATENCY_BOUNDS_MS[-1])


def rate(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def summary(values: Sequence[int]) -> dict[str, Any]:
    """One report row from the summed columns (see COLUMNS)."""
    value = dict(zip(COLUMNS, (int(v or 0) for v in values), strict=True))
    histogram = [value[name] for name in LATENCY]
    p50, p95 = quantile(histogram, 0.5), quantile(histogram, 0.95)
    row: dict[str, Any] = {name: value[name] for name in COUNTS if name not in RETAINED}
    row["acceptance_rate"] = rate(value["accepted"], value["shown"])
    row["latency_p50_ms"] = None if p50 is None else round(p50, 1)
    row["latency_p95_ms"] = None if p95 is None else round(p95, 1)
    for after in CHECKPOINTS:
        checked, chars, of = (value[f"r{after}_{what}"] for what in ("checked", "chars", "of"))
        row[f"retained_{after}s"] = {
            "checked": checked,
            "intact": value[f"r{after}_intact"],
            "chars": chars,
            "of_chars": of,
            "rate": rate(chars, of),
        }
    return row


@dataclass(frozen=True)
class ReportQuery:
    """A report's filters: None means all."""

    period: str = "24h"
    token: str | None = None
    language: str | None = None
    version: str | None = None


class UsageStore:
    """Counters in memory, flushed to SQLite; reports from SQLite (see the module docstring)."""

    def __init__(
        self, path: Path, retention_days: float = 90.0, flush_s: float = 5.0, clock: Any = None
    ) -> None:
        self.path = Path(path)
        self.retention_s = retention_days * 86400
        self.flush_s = flush_s
        self.clock = clock or time.time
        self._usage: dict[UsageKey, list[int]] = {}
        self._errors: dict[ErrorKey, int] = {}
        self._lock = threading.Lock()  # the accumulators
        self._write = threading.Lock()  # one flush at a time: a report waits for the last one
        self._pruned = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(sqlite3.connect(self.path, timeout=10.0)) as connection:
            for statement in SCHEMA:
                connection.execute(statement)
            with connection:
                yield connection

    # ---- counting (any thread; never touches the disk) --------------------------------

    def _minute(self) -> int:
        return int(self.clock() // 60)

    def _add(self, token: str, language: str, version: str, **counts: int) -> None:
        key = (self._minute(), token, language, version)
        with self._lock:
            row = self._usage.get(key)
            if row is None:
                row = self._usage[key] = [0] * len(COLUMNS)
            for name, amount in counts.items():
                row[INDEX[name]] += amount

    def request(self, token: str, version: str) -> None:
        """A completion request was taken for generation."""
        self._add(token, "", version, requests=1)

    def finished(
        self,
        token: str,
        version: str,
        *,
        cancelled: bool,
        latency_ms: float,
        tokens_in: int,
        tokens_out: int,
    ) -> None:
        """A generation ended; its latency counts only if it ended by itself."""
        if cancelled:
            self._add(token, "", version, cancelled=1, tokens_in=tokens_in, tokens_out=tokens_out)
            return
        bucket = LATENCY[latency_bucket(latency_ms)]
        self._add(
            token,
            "",
            version,
            completed=1,
            tokens_in=tokens_in,
            tokens_out=tokens_out,
            **{bucket: 1},
        )

    def error(self, token: str, version: str, kind: str) -> None:
        key = (self._minute(), token, version, kind)
        with self._lock:
            self._errors[key] = self._errors.get(key, 0) + 1

    def event(
        self,
        token: str,
        language: str,
        version: str,
        kind: str,
        chars: int = 0,
        after_s: int | None = None,
        retained_chars: int = 0,
    ) -> None:
        """An editor's report: shown, accepted (with its characters), rejected, or retained."""
        if kind == "retained":
            assert after_s in CHECKPOINTS
            prefix = f"r{after_s}_"
            counts = {
                prefix + "checked": 1,
                prefix + "intact": int(retained_chars >= chars),
                prefix + "chars": retained_chars,
                prefix + "of": chars,
            }
            self._add(token, language, version, **counts)
        elif kind == "accepted":
            self._add(token, language, version, accepted=1, accepted_chars=chars)
        else:
            self._add(token, language, version, **{kind: 1})

    # ---- writing ----------------------------------------------------------------------

    def flush(self) -> None:
        """Write what was counted since the last flush (one transaction); prune old rows."""
        with self._write:
            with self._lock:
                usage, self._usage = self._usage, {}
                errors, self._errors = self._errors, {}
            now = self.clock()
            prune = now - self._pruned > 60
            if not usage and not errors and not prune:
                return
            with self._connect() as db:
                db.executemany(UPSERT_USAGE, [(*key, *row) for key, row in usage.items()])
                db.executemany(UPSERT_ERRORS, [(*key, count) for key, count in errors.items()])
                if prune:
                    oldest = int((now - self.retention_s) // 60)
                    db.execute("DELETE FROM usage WHERE minute < ?", (oldest,))
                    db.execute("DELETE FROM errors WHERE minute < ?", (oldest,))
            if prune:
                self._pruned = now

    def start(self) -> None:
        """Flush every `flush_s` seconds on a daemon thread until `stop`."""
        self._thread = threading.Thread(target=self._run, name="acepilot-usage", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.flush_s):
            try:
                self.flush()
            except (sqlite3.Error, OSError) as exc:  # a full disk must not stop the counting
                log.warning("usage reports: %d s of counts not written (%s)", self.flush_s, exc)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.flush()

    # ---- reading ----------------------------------------------------------------------

    def choices(self) -> dict[str, list[str]]:
        """The tokens, languages and versions seen within the retention period (filters)."""
        self.flush()
        with self._connect() as db:
            return {
                "tokens": [r[0] for r in db.execute("SELECT DISTINCT token FROM usage ORDER BY 1")],
                "languages": [
                    r[0]
                    for r in db.execute(
                        "SELECT DISTINCT language FROM usage WHERE language != '' ORDER BY 1"
                    )
                ],
                "versions": [
                    r[0]
                    for r in db.execute(
                        "SELECT DISTINCT version FROM usage WHERE version != '' ORDER BY 1"
                    )
                ],
            }

    def report(self, query: ReportQuery) -> dict[str, Any]:
        """Totals, per token, per version, per language, errors by kind and a time series."""
        self.flush()
        now = self.clock()
        span, step = PERIODS[query.period], STEPS[query.period]
        last = int(now // 60)
        first = last - span // 60 + 1
        where: list[str] = ["minute BETWEEN ? AND ?"]
        args: list[Any] = [first, last]
        error_where, error_args = list(where), list(args)
        for column, value in (
            ("token", query.token),
            ("language", query.language),
            ("version", query.version),
        ):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
                if column != "language":  # errors have no language
                    error_where.append(f"{column} = ?")
                    error_args.append(value)
        clause, error_clause = " AND ".join(where), " AND ".join(error_where)
        step_minutes = step // 60
        with self._connect() as db:
            totals = db.execute(f"SELECT {SUMS} FROM usage WHERE {clause}", args).fetchone()
            grouped = {
                column: db.execute(
                    f"SELECT {column}, {SUMS} FROM usage WHERE {clause} "
                    f"GROUP BY {column} ORDER BY {column}",
                    args,
                ).fetchall()
                for column in ("token", "version", "language")
            }
            series = db.execute(
                f"SELECT (minute - ?) / ? AS slot, {SUMS} FROM usage WHERE {clause} "
                "GROUP BY slot ORDER BY slot",
                [first, step_minutes, *args],
            ).fetchall()
            errors = db.execute(
                f"SELECT kind, SUM(count) FROM errors WHERE {error_clause} "
                "GROUP BY kind ORDER BY 2 DESC, 1",
                error_args,
            ).fetchall()
        slots = {int(row[0]): summary(row[1:]) for row in series}
        count = -(-(last - first + 1) // step_minutes)
        timeline = []
        for slot in range(count):
            start = (first + slot * step_minutes) * 60
            row = slots.get(slot) or summary([0] * len(COLUMNS))
            timeline.append({"start": start, **row})
        return {
            "period": query.period,
            "from": first * 60,
            "to": (last + 1) * 60,
            "step_s": step,
            "filters": {
                "token": query.token,
                "language": query.language,
                "version": query.version,
            },
            "totals": {**summary(totals), "errors": sum(int(c) for _, c in errors)},
            "by_token": [{"token": r[0], **summary(r[1:])} for r in grouped["token"]],
            "by_version": [{"version": r[0], **summary(r[1:])} for r in grouped["version"] if r[0]],
            "by_language": [
                {"language": r[0], **summary(r[1:])} for r in grouped["language"] if r[0]
            ],
            "errors": [{"kind": kind, "count": int(c)} for kind, c in errors],
            "series": timeline,
        }
