"""What one request may ask for (`Limits`), and per-token rate limiting.

Rate limiting is a token bucket per token name. A developer's editor sends a burst of requests while typing (debounced, and
cancelled ones are still requests), then nothing while reading: a bucket of
`burst` requests refilled at `rate` per second fits that shape. Refused
requests learn when the next one will be allowed (Retry-After).
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass

MAX_BUCKETS = 100_000  # token names are bounded by the database; this bounds memory anyway


@dataclass(frozen=True)
class Limits:
    """What one request may ask for, and how fast one token may ask."""

    max_body_bytes: int = 1 << 20
    max_prompt_tokens: int = 4096
    max_tokens: int = 512
    rate: float = 20.0  # requests per second per token, sustained
    burst: int = 40
    deadline_s: float = 30.0
    client_timeout_s: float = 10.0  # to send a request's head, and again its body


@dataclass
class _Bucket:
    level: float
    updated: float


class RateLimiter:
    """`allow(name)` -> 0 when allowed, else the seconds until a request would be."""

    def __init__(self, rate: float, burst: int) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    def allow(self, name: str, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        with self._lock:
            bucket = self._buckets.get(name)
            if bucket is None:
                if len(self._buckets) >= MAX_BUCKETS:
                    self._buckets.clear()
                bucket = self._buckets[name] = _Bucket(float(self.burst), now)
            bucket.level = min(self.burst, bucket.level + (now - bucket.updated) * self.rate)
            bucket.updated = now
            if bucket.level >= 1.0:
                bucket.level -= 1.0
                return 0.0
            return (1.0 - bucket.level) / self.rate


def retry_after(seconds: float) -> str:
    """The Retry-After header value: whole seconds, at least 1."""
    return str(max(1, math.ceil(seconds)))
