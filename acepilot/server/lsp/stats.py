"""Counters for `acepilot/stats`, and acceptance telemetry (shown / accepted / rejected).

Stats answer "where did the time and the tokens go": how many completion
requests came, how many were answered without the model (typing-ahead, LRU
cache), how many reached it, were cancelled or failed, how many prompt tokens
the model prefilled and how many came from its KV cache, and the latency of
the last requests. `bench/typing_replay.py` reads them; a status bar may too.

Telemetry: every completion the server returns carries an opaque id (in the
item's `command`, see docs/lsp.md); the editor reports `shown`, `accepted` or
`rejected` for it with the `acepilot/telemetry` notification. Only ids this
server issued recently count, each event once per id, so a buggy or hostile
client cannot inflate the acceptance rate. No code text is involved: an
event is (kind, id, language), and for `retained` (an accepted completion
checked again 30 s or 2 min later) the checkpoint and how many of its
characters are still there. The completion's size is the server's own
count (UTF-16 code units, as editors count), so a retained count is capped by
what was really inserted.

With the remote backend the counts are forwarded to the team server
(`TelemetrySender`: POST {base}/v1/telemetry, batched, on its own thread,
best-effort: failures are dropped, never retried, never shown).
"""

from __future__ import annotations

import itertools
import logging
import math
import queue
import re
import secrets
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from acepilot.server.protocol import EVENT_KINDS

log = logging.getLogger(__name__)

WINDOW = 200  # latencies and generations kept for percentiles and the per-request list
EVENTS = EVENT_KINDS
MAX_ISSUED = 4096  # completion ids remembered for telemetry
RETAINED = "retained"  # an accepted completion checked again (after CHECKPOINTS seconds)
CHECKPOINTS = (30, 120)
MAX_CHARS = 1_000_000
LANGUAGE_ID = re.compile(r"^[A-Za-z0-9_.+#-]{1,64}$")
COMPLETION_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def percentile(values: list[float], share: float) -> float | None:
    """Nearest-rank percentile (share in [0, 1]); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(share * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True)
class GenerationRecord:
    """One backend generation, finished, cancelled or abandoned."""

    prompt_tokens: int
    reused_tokens: int
    generated_tokens: int
    finish_reason: str
    prefill_ms: float
    decode_ms: float

    @property
    def prefilled_tokens(self) -> int:
        return self.prompt_tokens - self.reused_tokens


@dataclass(frozen=True)
class RequestRecord:
    """One answered completion request: how long it took and what answered it.

    `source`: typing_ahead, cache or model; for the model, the tokens its generation
    decoded and why it ended ("length": all of maxNewTokens, the slowest answers)."""

    total_ms: float
    source: str
    generated_tokens: int = 0
    finish_reason: str = ""


@dataclass
class Stats:
    """What `acepilot/stats` returns (see `snapshot`)."""

    requests: int = 0  # completion requests for a known, enabled document
    typing_ahead: int = 0  # answered from the last shown completion
    cache_hits: int = 0  # answered from the LRU cache
    model_requests: int = 0  # reached the backend
    cancelled: int = 0  # superseded or cancelled before an answer
    errors: int = 0  # backend errors (unreachable, refused, bad answer)
    empty: int = 0  # the model said nothing worth showing
    stale: int = 0  # answered empty: the document awaits a resync
    prompt_tokens: int = 0  # over all generations
    reused_tokens: int = 0  # of which from the KV cache
    generated_tokens: int = 0
    generations: int = 0  # finished backend generations (a cancelled one too)
    last_total_ms: float = 0.0
    last_prefill_ms: float = 0.0
    last_decode_ms: float = 0.0
    events: dict[str, int] = field(default_factory=lambda: dict.fromkeys(EVENTS, 0))
    by_language: dict[str, dict[str, int]] = field(default_factory=dict)
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=WINDOW))
    overheads: deque[float] = field(default_factory=lambda: deque(maxlen=WINDOW))
    recent: deque[GenerationRecord] = field(default_factory=lambda: deque(maxlen=WINDOW))
    requests_recent: deque[RequestRecord] = field(default_factory=lambda: deque(maxlen=WINDOW))

    def generation(self, record: GenerationRecord) -> None:
        self.generations += 1
        self.prompt_tokens += record.prompt_tokens
        self.reused_tokens += record.reused_tokens
        self.generated_tokens += record.generated_tokens
        self.recent.append(record)

    def answered(self, record: RequestRecord, overhead_ms: float | None) -> None:
        """A request answered (with or without items): its latency, and the server's share."""
        self.latencies.append(record.total_ms)
        self.requests_recent.append(record)
        if overhead_ms is not None:
            self.overheads.append(overhead_ms)

    def event(self, kind: str, language_id: str) -> None:
        if kind not in self.events:  # retention checks are forwarded, not counted here
            return
        self.events[kind] += 1
        counts = self.by_language.setdefault(language_id, dict.fromkeys(EVENTS, 0))
        counts[kind] += 1

    def snapshot(self, in_flight_tokens: int = 0) -> dict[str, Any]:
        latencies, overheads = list(self.latencies), list(self.overheads)
        prefilled = self.prompt_tokens - self.reused_tokens

        def rounded(value: float | None) -> float | None:
            return None if value is None else round(value, 2)

        return {
            "requests": self.requests,
            "typing_ahead": self.typing_ahead,
            "cache_hits": self.cache_hits,
            "model_requests": self.model_requests,
            "cancelled": self.cancelled,
            "errors": self.errors,
            "empty": self.empty,
            "stale": self.stale,
            "generations": self.generations,
            "prompt_tokens": self.prompt_tokens,
            "reused_tokens": self.reused_tokens,
            "prefilled_tokens": prefilled,
            "generated_tokens": self.generated_tokens,
            "prefilled_mean": round(prefilled / self.generations, 2) if self.generations else None,
            "in_flight_tokens": in_flight_tokens,
            "recent_generations": [
                {**asdict(record), "prefilled_tokens": record.prefilled_tokens}
                for record in self.recent
            ],
            "recent_requests": [
                {**asdict(record), "total_ms": round(record.total_ms, 2)}
                for record in self.requests_recent
            ],
            "completions": {
                **self.events,
                "by_language": {k: dict(v) for k, v in self.by_language.items()},
            },
            "latency": {
                "window": WINDOW,
                "count": len(latencies),
                "p50_ms": rounded(percentile(latencies, 0.5)),
                "p95_ms": rounded(percentile(latencies, 0.95)),
            },
            "overhead": {
                "count": len(overheads),
                "p50_ms": rounded(percentile(overheads, 0.5)),
                "p95_ms": rounded(percentile(overheads, 0.95)),
            },
            "last_total_ms": round(self.last_total_ms, 2),
            "last_prefill_ms": round(self.last_prefill_ms, 2),
            "last_decode_ms": round(self.last_decode_ms, 2),
        }


@dataclass(frozen=True)
class TelemetryEvent:
    kind: str
    completion_id: str
    language_id: str
    after_s: int | None = None  # retained: the checkpoint
    retained_chars: int | None = None  # retained: characters still there


def utf16_length(text: str) -> int:
    """Characters as editors count them (UTF-16 code units)."""
    return len(text.encode("utf-16-le")) // 2


def _count(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_CHARS:
        return value
    return None


def plain(value: Any) -> Any:
    """pygls gives custom methods' params as namedtuples (`pygls.protocol.Object`): dicts again."""
    if hasattr(value, "_asdict"):
        return {key: plain(item) for key, item in value._asdict().items()}
    if isinstance(value, Mapping):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    return value


def parse_event(params: Any) -> TelemetryEvent | None:
    """A valid `acepilot/telemetry` params object, or None (the caller ignores it)."""
    params = plain(params)
    if not isinstance(params, Mapping):
        return None
    kind, completion_id, language_id = (
        params.get("event"),
        params.get("id"),
        params.get("languageId"),
    )
    if kind not in EVENTS and kind != RETAINED:
        return None
    if not isinstance(completion_id, str) or not COMPLETION_ID.match(completion_id):
        return None
    if not isinstance(language_id, str) or not LANGUAGE_ID.match(language_id):
        return None
    if kind == RETAINED:
        after, retained = params.get("afterS"), _count(params.get("retainedChars"))
        if after not in CHECKPOINTS or isinstance(after, bool) or retained is None:
            return None
        return TelemetryEvent(RETAINED, completion_id, language_id, int(after), retained)
    return TelemetryEvent(str(kind), completion_id, language_id)


class Issued:
    """Completion ids handed out recently, with their language, size and the events seen."""

    def __init__(self, size: int = MAX_ISSUED) -> None:
        self.size = size
        self._prefix = secrets.token_hex(4)  # ids of another server run never match
        self._counter = itertools.count(1)
        self._items: OrderedDict[str, tuple[str, int, set[str]]] = OrderedDict()

    def new(self, language_id: str, chars: int = 0) -> str:
        """An id for a completion of `chars` characters (UTF-16 code units)."""
        completion_id = f"{self._prefix}-{next(self._counter)}"
        self._items[completion_id] = (language_id, chars, set())
        while len(self._items) > self.size:
            self._items.popitem(last=False)
        return completion_id

    def record(self, event: TelemetryEvent) -> str | None:
        """The completion's language if the event counts (a known id, first of its kind;
        a retention check only for an accepted completion, once per checkpoint)."""
        item = self._items.get(event.completion_id)
        if item is None:
            return None
        language_id, _, seen = item
        key = event.kind
        if event.kind == RETAINED:
            if "accepted" not in seen:
                return None
            key = f"{RETAINED}-{event.after_s}"
        if key in seen:
            return None
        seen.add(key)
        return language_id

    def counts(self, event: TelemetryEvent) -> dict[str, int]:
        """The sizes to forward with a counted event: none for shown/rejected."""
        item = self._items.get(event.completion_id)
        chars = item[1] if item is not None else 0
        if event.kind == "accepted":
            return {"chars": chars}
        if event.kind == RETAINED and event.after_s is not None:
            retained = min(event.retained_chars or 0, chars)
            return {"chars": chars, "after_s": event.after_s, "retained_chars": retained}
        return {}


class TelemetrySender:
    """Batches events and POSTs them to the team server from its own thread.

    `add` only appends to a queue (safe on the event loop); the thread sends a
    batch when it holds `batch` events or `interval` seconds after the first
    one, and what is left on `close`. Failures are logged at debug level and
    dropped: telemetry must never get in the way of completions.
    """

    def __init__(
        self,
        url: str,
        token: str | None,
        interval: float = 10.0,
        batch: int = 50,
        timeout: float = 5.0,
    ) -> None:
        import httpx

        headers = {"User-Agent": "acepilot-lsp"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.url = url
        self.interval = interval
        self.batch = batch
        self._client = httpx.Client(headers=headers, timeout=timeout)
        self._queue: queue.Queue[dict[str, str | int] | None] = queue.Queue()
        self.sent = 0  # events delivered (HTTP 2xx)
        self._thread = threading.Thread(target=self._run, name="acepilot-telemetry", daemon=True)
        self._thread.start()

    def add(self, kind: str, language_id: str, **counts: int) -> None:
        """Queue one event; `counts`: chars, after_s, retained_chars (see `Issued.counts`)."""
        self._queue.put({"event": kind, "language": language_id, **counts})

    def close(self, timeout: float = 5.0) -> None:
        """Send what is queued (best-effort, bounded by `timeout`) and stop."""
        self._queue.put(None)
        self._thread.join(timeout)
        self._client.close()

    def _run(self) -> None:
        pending: list[dict[str, str | int]] = []
        deadline = 0.0
        while True:
            timeout = max(0.0, deadline - time.monotonic()) if pending else None
            try:
                item = self._queue.get(timeout=timeout)
            except queue.Empty:  # `interval` seconds since the batch's first event
                self._send(pending)
                pending = []
                continue
            if item is None:
                if pending:
                    self._send(pending)
                return
            if not pending:
                deadline = time.monotonic() + self.interval
            pending.append(item)
            if len(pending) >= self.batch:
                self._send(pending)
                pending = []

    def _send(self, events: list[dict[str, str | int]]) -> None:
        import httpx

        try:
            response = self._client.post(self.url, json={"events": events})
        except httpx.HTTPError as exc:
            log.debug("telemetry not delivered (%s)", type(exc).__name__)
            return
        if 200 <= response.status_code < 300:
            self.sent += len(events)
        else:
            log.debug("telemetry not delivered (HTTP %d)", response.status_code)
