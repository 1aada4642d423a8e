"""A minimal Prometheus registry, rendered in the text exposition format (version 0.0.4).

Written here rather than taken from prometheus_client: the server needs a
dozen series, thread-safe updates from the scheduler thread and the event
loop, and nothing else. Label values are always server-chosen strings (status
codes, phases, token names, language ids checked against a pattern): never
prompt or completion text.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_BUCKETS = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64)

Labels = tuple[str, ...]


def escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer():
        return str(int(value))
    return repr(float(value))


class Metric:
    kind = "untyped"

    def __init__(self, name: str, help_text: str, labels: Sequence[str] = ()) -> None:
        self.name = name
        self.help = help_text
        self.label_names = tuple(labels)
        self._lock = threading.Lock()

    def _key(self, labels: dict[str, str]) -> Labels:
        if set(labels) != set(self.label_names):
            raise ValueError(f"{self.name} takes labels {self.label_names}, got {sorted(labels)}")
        return tuple(str(labels[name]) for name in self.label_names)

    def _label_text(self, key: Labels, extra: tuple[tuple[str, str], ...] = ()) -> str:
        pairs = list(zip(self.label_names, key, strict=True)) + list(extra)
        if not pairs:
            return ""
        return "{" + ",".join(f'{name}="{escape(value)}"' for name, value in pairs) + "}"

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]

    def render(self) -> list[str]:  # pragma: no cover - overridden
        raise NotImplementedError


class Counter(Metric):
    kind = "counter"

    def __init__(self, name: str, help_text: str, labels: Sequence[str] = ()) -> None:
        super().__init__(name, help_text, labels)
        self._values: dict[Labels, float] = {}

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        key = self._key(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def value(self, **labels: str) -> float:
        with self._lock:
            return self._values.get(self._key(labels), 0.0)

    def render(self) -> list[str]:
        with self._lock:
            items = sorted(self._values.items())
        return self.header() + [f"{self.name}{self._label_text(k)} {number(v)}" for k, v in items]


class Gauge(Counter):
    kind = "gauge"

    def set(self, value: float, **labels: str) -> None:
        key = self._key(labels)
        with self._lock:
            self._values[key] = value

    def clear(self) -> None:
        with self._lock:
            self._values.clear()


class Histogram(Metric):
    kind = "histogram"

    def __init__(
        self,
        name: str,
        help_text: str,
        labels: Sequence[str] = (),
        buckets: Sequence[float] = LATENCY_BUCKETS,
    ) -> None:
        super().__init__(name, help_text, labels)
        self.buckets = tuple(sorted(buckets)) + (math.inf,)
        self._counts: dict[Labels, list[int]] = {}
        self._sums: dict[Labels, float] = {}

    def observe(self, value: float, **labels: str) -> None:
        key = self._key(labels)
        with self._lock:
            counts = self._counts.setdefault(key, [0] * len(self.buckets))
            for index, bound in enumerate(self.buckets):
                if value <= bound:
                    counts[index] += 1
            self._sums[key] = self._sums.get(key, 0.0) + value

    def count(self, **labels: str) -> int:
        with self._lock:
            counts = self._counts.get(self._key(labels))
            return counts[-1] if counts else 0

    def render(self) -> list[str]:
        lines = self.header()
        with self._lock:
            items = sorted((key, list(counts)) for key, counts in self._counts.items())
            sums = dict(self._sums)
        for key, counts in items:
            for bound, count in zip(self.buckets, counts, strict=True):
                label = self._label_text(key, (("le", number(bound)),))
                lines.append(f"{self.name}_bucket{label} {count}")
            lines.append(f"{self.name}_sum{self._label_text(key)} {number(sums[key])}")
            lines.append(f"{self.name}_count{self._label_text(key)} {counts[-1]}")
        return lines


class Registry:
    """The server's metrics, in registration order."""

    def __init__(self) -> None:
        self.metrics: list[Metric] = []

    def counter(self, name: str, help_text: str, labels: Sequence[str] = ()) -> Counter:
        metric = Counter(name, help_text, labels)
        self.metrics.append(metric)
        return metric

    def gauge(self, name: str, help_text: str, labels: Sequence[str] = ()) -> Gauge:
        metric = Gauge(name, help_text, labels)
        self.metrics.append(metric)
        return metric

    def histogram(
        self,
        name: str,
        help_text: str,
        labels: Sequence[str] = (),
        buckets: Sequence[float] = LATENCY_BUCKETS,
    ) -> Histogram:
        metric = Histogram(name, help_text, labels, buckets)
        self.metrics.append(metric)
        return metric

    def render(self) -> str:
        lines: list[str] = []
        for metric in self.metrics:
            lines.extend(metric.render())
        return "\n".join(lines) + "\n"


class ServerMetrics:
    """Every series the team server exports (docs/team-server.md lists them)."""

    def __init__(self) -> None:
        r = self.registry = Registry()
        self.requests = r.counter(
            "acepilot_requests_total",
            "HTTP requests by endpoint and status",
            ["endpoint", "status"],
        )
        self.latency = r.histogram(
            "acepilot_request_seconds",
            "Completion latency by phase (queue, prefill, decode, total)",
            ["phase"],
        )
        self.tokens = r.counter(
            "acepilot_tokens_total", "Prompt tokens in and completion tokens out", ["direction"]
        )
        self.reused = r.counter(
            "acepilot_reused_prompt_tokens_total", "Prompt tokens served from a user's KV cache"
        )
        self.finished = r.counter(
            "acepilot_generations_total",
            "Finished generations by reason (stop, eos, length, deadline, cancelled)",
            ["reason"],
        )
        self.batch = r.histogram(
            "acepilot_batch_size", "Generations per decode step", buckets=BATCH_BUCKETS
        )
        self.active = r.gauge("acepilot_active_requests", "Generations running on the model")
        self.queued = r.gauge("acepilot_queued_requests", "Requests waiting for a batch slot")
        self.sessions = r.gauge("acepilot_kv_sessions", "Users whose KV cache is kept")
        self.model = r.gauge(
            "acepilot_model_info",
            "The served model version (1 = serving new requests)",
            ["model", "version"],
        )
        self.loaded = r.gauge(
            "acepilot_model_loaded", "Model versions in memory (serving or draining)"
        )
        self.swaps = r.counter(
            "acepilot_model_swaps_total", "Hot swaps to a new production version"
        )
        self.refused = r.counter(
            "acepilot_model_refused_total",
            "Production versions refused (failed to load or sha256 check)",
            ["version"],
        )
        self.usage = r.counter(
            "acepilot_token_requests_total", "Completion requests per token name", ["token"]
        )
        self.usage_tokens = r.counter(
            "acepilot_token_completion_tokens_total",
            "Completion tokens generated per token name",
            ["token"],
        )
        self.telemetry = r.counter(
            "acepilot_telemetry_events_total",
            "Editor-reported completion events (shown, accepted, rejected) per token and language",
            ["token", "event", "language"],
        )
        self.telemetry_chars = r.counter(
            "acepilot_telemetry_chars_total",
            "Editor-reported characters per token: accepted; and of accepted completions "
            "re-checked 30 s / 2 min later, the characters checked and those still there "
            "(checked_30s, retained_30s, checked_120s, retained_120s)",
            ["token", "kind"],
        )
        self.auth_failures = r.counter(
            "acepilot_auth_failures_total", "Requests refused for a missing or bad token"
        )
        self.rate_limited = r.counter(
            "acepilot_rate_limited_total", "Requests refused by the per-token rate limit", ["token"]
        )
        self.client_disconnects = r.counter(
            "acepilot_client_disconnects_total",
            "Requests whose client left before its body was read (counted as status 499)",
            ["endpoint"],
        )
        self.connections_closed = r.counter(
            "acepilot_connections_closed_total",
            "Connections the server closed: past the connection limit (limit), no request head in time (timeout), a malformed body (invalid)",
            ["reason"],
        )
        self.preparing = r.gauge(
            "acepilot_preparing_prompts", "Prompts being tokenized or waiting for their turn"
        )
