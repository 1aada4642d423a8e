"""The team server's log rate limit: a flood of one message cannot fill the disk.

Real `logging` loggers and handlers writing into a buffer; the filter's clock
is a counter the test advances (what "a minute later" means, without waiting
a minute).
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from acepilot.server.team.logs import RateLimitFilter, install


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO, Clock]]:
    """A logger whose one handler writes to a buffer, with the rate-limit filter on it."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    second = logging.StreamHandler(io.StringIO())  # one filter on several handlers
    logger = logging.getLogger("acepilot-test-flood")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    logger.addHandler(second)
    clock = Clock()
    install(RateLimitFilter(burst=5, window_s=60, clock=clock), loggers=[logger.name])
    try:
        yield logger, buffer, clock
    finally:
        logger.removeHandler(handler)
        logger.removeHandler(second)


def test_a_flood_of_tracebacks_is_cut_to_the_burst(
    captured: tuple[logging.Logger, io.StringIO, Clock],
) -> None:
    logger, buffer, clock = captured
    for _ in range(10_000):  # what asyncio writes for each failed accept()
        try:
            raise OSError(24, "Too many open files")
        except OSError:
            logger.error("socket.accept() out of system resource", exc_info=True)
    text = buffer.getvalue()
    assert text.count("socket.accept() out of system resource") == 5
    assert text.count("Traceback") == 5
    assert len(text) < 5_000

    clock.now = 61.0  # a new window: the first record says what was dropped
    logger.error("socket.accept() out of system resource")
    last = buffer.getvalue().splitlines()[-1]
    assert "9995 more like this dropped" in last


def test_other_messages_and_low_levels_pass(
    captured: tuple[logging.Logger, io.StringIO, Clock],
) -> None:
    logger, buffer, _ = captured
    for index in range(50):
        logger.warning("flood %d", index)  # one template, whatever its arguments
        logger.info("completion for %s", "alice")  # below WARNING: not limited
    logger.error("something else entirely")
    lines = buffer.getvalue().splitlines()
    assert sum(line.startswith("WARNING") for line in lines) == 5
    assert sum(line.startswith("INFO") for line in lines) == 50
    assert lines[-1] == "ERROR acepilot-test-flood: something else entirely"
