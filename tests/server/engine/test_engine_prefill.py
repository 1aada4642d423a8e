"""Idle prefill (`Engine.prefill`) on a real built model: the cache it leaves, and how it yields."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from engine_fixtures import built_tiny_entry, built_tiny_registry  # noqa: F401

from acepilot.server.engine import Engine, GenerationParams
from acepilot.server.registry import ModelEntry

HEAD = "import os\n\n\ndef read_lines(path):\n    with open(path) as handle:\n"
GREEDY = GenerationParams(max_new_tokens=16)


@pytest.fixture(scope="module")
def engine(built_tiny_entry: ModelEntry) -> Iterator[Engine]:  # noqa: F811
    yield Engine.load(built_tiny_entry, threads=1, verify=False)


def test_a_prefilled_head_is_reused_by_the_next_request(engine: Engine) -> None:
    done = engine.prefill(HEAD, session="idle-a")
    ids = engine.encode(HEAD)
    assert (done.finish_reason, done.reused_tokens, done.prefilled_tokens) == ("done", 0, len(ids))

    prompt = HEAD + "        return handle.read"
    warm = engine.generate(prompt, GREEDY, session="idle-a")
    assert warm.reused_tokens >= len(ids) - 1  # the head's last token may merge with the line
    cold = engine.generate(prompt, GREEDY)
    assert cold.reused_tokens == 0
    assert warm.token_ids == cold.token_ids and warm.text == cold.text


def test_a_head_already_cached_costs_nothing_and_keeps_the_longer_cache(engine: Engine) -> None:
    prompt = HEAD + "        return handle.read"
    engine.generate(prompt, GREEDY, session="idle-b")
    cached = list(engine._slots["idle-b"].ids)
    again = engine.prefill(HEAD[:-1], session="idle-b")  # a prefix of what is cached
    assert again.finish_reason == "done" and again.prefilled_tokens == 0
    assert engine._slots["idle-b"].ids == cached  # the completion's tokens stay reusable


def test_a_cancelled_prefill_keeps_the_chunks_it_fed(built_tiny_entry: ModelEntry) -> None:  # noqa: F811
    engine = Engine.load(built_tiny_entry, threads=1, verify=False, warmup=False)
    cancel = threading.Event()
    real_run = engine._run

    def run_then_cancel(slot, feed, cached):  # type: ignore[no-untyped-def]
        cancel.set()  # a request arrives during the first chunk
        return real_run(slot, feed, cached)

    engine._run = run_then_cancel  # type: ignore[method-assign]
    stopped = engine.prefill(HEAD * 3, session="doc", cancel=cancel, chunk=8)
    engine._run = real_run  # type: ignore[method-assign]
    assert (stopped.finish_reason, stopped.prefilled_tokens) == ("cancelled", 8)
    warm = engine.generate(HEAD * 3, GREEDY, session="doc")
    assert warm.reused_tokens == 8


def test_prefill_yields_to_a_generation_waiting_for_the_engine(
    built_tiny_entry: ModelEntry,  # noqa: F811
) -> None:
    """A request that comes while a prefill runs waits for one chunk at most: the prefill
    sees it waiting and stops."""
    engine = Engine.load(built_tiny_entry, threads=1, verify=False, warmup=False)
    real_run = engine._run
    results: list[object] = []
    request = threading.Thread(
        target=lambda: results.append(engine.generate("x = 1\n", GREEDY, session="other"))
    )
    runs: list[int] = []

    def run_while_a_request_waits(slot, feed, cached):  # type: ignore[no-untyped-def]
        runs.append(len(feed))
        if len(runs) == 1:
            request.start()
            while not engine._waiting:  # the request is now blocked on the engine's lock
                threading.Event().wait(0.001)
        return real_run(slot, feed, cached)

    engine._run = run_while_a_request_waits  # type: ignore[method-assign]
    stopped = engine.prefill(HEAD * 3, session="doc", chunk=8)
    request.join(60)
    engine._run = real_run  # type: ignore[method-assign]
    assert stopped.finish_reason == "cancelled"
    assert stopped.prefilled_tokens == 8 and runs[0] == 8  # one chunk, then it yielded
    assert len(results) == 1  # the request ran


def test_a_busy_engine_is_not_waited_for(engine: Engine) -> None:
    release = threading.Event()
    started = threading.Event()

    def slow_token(_: str) -> None:
        started.set()
        release.wait(10)

    busy = threading.Thread(
        target=engine.generate,
        args=(HEAD, GenerationParams(max_new_tokens=2, ignore_eos=True)),
        kwargs={"on_token": slow_token},
    )
    busy.start()
    assert started.wait(30)
    done = engine.prefill(HEAD, session="idle-c")
    release.set()
    busy.join()
    assert (done.finish_reason, done.prefilled_tokens) == ("busy", 0)
    assert "idle-c" not in engine.sessions()


def test_a_prompt_the_request_would_cut_is_not_prefilled(engine: Engine) -> None:
    long = "value = compute(value)\n" * 200
    assert len(engine.encode(long)) > engine.max_length
    done = engine.prefill(long, session="idle-d", max_new_tokens=16)
    assert (done.finish_reason, done.prefilled_tokens) == ("too_long", 0)


def test_prefill_chunks_must_be_positive(engine: Engine) -> None:
    with pytest.raises(ValueError, match="chunk"):
        engine.prefill(HEAD, session="idle-e", chunk=0)
