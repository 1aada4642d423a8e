"""Rate-limited logging: an attack must not be able to fill the disk through the log.

A flood of idle connections once made asyncio log ~231,000 "socket.accept()
out of system resource" tracebacks (~97 MB in ~50 s). Any message a client
can trigger over and over (uvicorn's "Invalid HTTP request received.", a
refused connection, an error of ours) is a way to write to the operator's
disk. `RateLimitFilter` lets through the first `burst` records of each
message template (logger, level, unformatted message) per `window_s`
seconds and drops the rest; the first record let through in a new window
says how many were dropped. It applies to WARNING and above: that is what
the server writes at its default level (INFO and DEBUG, at -v/-vv, grow with
the traffic by the operator's choice).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable

BURST = 10
WINDOW_S = 60.0
MAX_KEYS = 1000  # distinct templates tracked; past it the table starts over


class RateLimitFilter(logging.Filter):
    """Drops repeats of a message template past `burst` per `window_s` (see the module)."""

    def __init__(
        self,
        burst: int = BURST,
        window_s: float = WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.burst = burst
        self.window_s = window_s
        self.clock = clock
        self._seen: dict[tuple[str, int, str], list[float]] = {}  # [window start, sent, dropped]
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        """Whether `record` is written; decided once per record, so one filter can sit on
        several handlers (a record reaches each of its logger's handlers and its parents')."""
        decided = getattr(record, "_acepilot_rate_limit", None)
        if decided is None:
            decided = record._acepilot_rate_limit = self._decide(record)
        return bool(decided)

    def _decide(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        key = (record.name, record.levelno, str(record.msg))
        now = self.clock()
        with self._lock:
            state = self._seen.get(key)
            if state is None or now - state[0] >= self.window_s:
                if len(self._seen) >= MAX_KEYS:
                    self._seen.clear()
                dropped = int(state[2]) if state is not None else 0
                self._seen[key] = [now, 1, 0]
            elif state[1] < self.burst:
                state[1] += 1
                dropped = 0
            else:
                state[2] += 1
                return False
        if dropped:
            record.msg = f"{record.msg} [{dropped} more like this dropped in the last window]"
        return True


def install(
    filter_: logging.Filter, loggers: Iterable[str] = ("", "uvicorn", "uvicorn.error")
) -> None:
    """Put `filter_` on every handler of `loggers` (the root's and uvicorn's own)."""
    for name in loggers:
        for handler in logging.getLogger(name).handlers:
            if filter_ not in handler.filters:
                handler.addFilter(filter_)
