"""The batched path (server.engine.batch) against the one-at-a-time Engine, token for token.

The tiny trained CodeGen, fp32, onnxruntime: concurrent generations with
ragged prompts share decode steps, and every greedy result must equal
`Engine.generate`'s for the same prompt alone. Also: per-session KV reuse in
rows, LRU eviction, cancellation, deadlines, the queue bound.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from acepilot.server.engine import Engine, Generation, GenerationParams
from acepilot.server.engine.batch import BatchEngine, QueueFull, windows
from acepilot.server.registry import ModelEntry

PROMPTS = [
    "import os\n\n\ndef read_lines(path):\n    with open(path) as handle:\n        ",
    "class Stack:\n    def __init__(self):\n",
    "def add(a, b):\n    return",
    "x",
    "for index in range(10):\n    print(",
    "import re\nimport sys\n\n\ndef main(argv):\n    args = argv[1:]\n    for arg in args:\n",
    "    ",
    "def fib(n):\n    if n < 2:\n        return n\n    return fib(",
]
GREEDY = GenerationParams(max_new_tokens=32)


@pytest.fixture(scope="module")
def engine(built_tiny_entry: ModelEntry) -> Engine:
    return Engine.load(built_tiny_entry, threads=1)


@pytest.fixture
def batch(engine: Engine) -> Iterator[BatchEngine]:
    steps: list[int] = []
    batched = BatchEngine(engine, max_batch=8, max_rows=10, on_step=steps.append)
    batched.steps = steps  # type: ignore[attr-defined]
    yield batched
    batched.close()


def concurrently(
    batch: BatchEngine, jobs: list[tuple[str, GenerationParams, str | None]]
) -> list[Generation]:
    results: list[Generation | None] = [None] * len(jobs)
    barrier = threading.Barrier(len(jobs))

    def run(index: int) -> None:
        prompt, params, session = jobs[index]
        barrier.wait()
        results[index] = batch.generate(prompt, params, session=session)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert all(result is not None for result in results)
    return [result for result in results if result is not None]


def test_batched_greedy_equals_unbatched_token_for_token(
    engine: Engine, batch: BatchEngine
) -> None:
    params = [GenerationParams(max_new_tokens=8 + 5 * i) for i in range(len(PROMPTS))]
    expected = [engine.generate(p, q) for p, q in zip(PROMPTS, params, strict=True)]
    got = concurrently(
        batch, [(p, q, f"user-{i}") for i, (p, q) in enumerate(zip(PROMPTS, params, strict=True))]
    )
    for want, have in zip(expected, got, strict=True):
        assert have.token_ids == want.token_ids
        assert have.text == want.text
        assert have.finish_reason == want.finish_reason
        assert have.prompt_tokens == want.prompt_tokens
    steps = batch.steps  # type: ignore[attr-defined]
    assert max(steps) >= 4, f"the generations never shared a decode step: {steps}"
    # Generations of different lengths left the batch at their own token boundaries.
    assert min(steps) < max(steps)


def test_stop_sequences_and_sampling_match_too(engine: Engine, batch: BatchEngine) -> None:
    jobs = [
        (PROMPTS[0], GenerationParams(max_new_tokens=40, stop=("\n",)), None),
        (PROMPTS[1], GenerationParams(max_new_tokens=40, stop=("):", "\n\n")), None),
        (PROMPTS[2], GenerationParams(max_new_tokens=24, temperature=0.8, top_p=0.9, seed=7), None),
        (PROMPTS[5], GenerationParams(max_new_tokens=24, temperature=1.2, seed=3), None),
    ]
    expected = [engine.generate(p, q) for p, q, _ in jobs]
    for want, have in zip(expected, concurrently(batch, jobs), strict=True):
        assert (have.token_ids, have.text, have.finish_reason) == (
            want.token_ids,
            want.text,
            want.finish_reason,
        )


def test_sessions_reuse_their_rows_and_match_cold_runs(engine: Engine, batch: BatchEngine) -> None:
    typed = [PROMPTS[0][:n] for n in (30, 45, 60, len(PROMPTS[0]))]
    other = [PROMPTS[5][:n] for n in (40, 70, len(PROMPTS[5]))]
    batch.generate(typed[0], GREEDY, session="alice")
    batch.generate(other[0], GREEDY, session="bob")
    for step in range(1, 3):
        results = concurrently(
            batch, [(typed[step], GREEDY, "alice"), (other[step], GREEDY, "bob")]
        )
        for prompt, result in zip((typed[step], other[step]), results, strict=True):
            cold = engine.generate(prompt, GREEDY)
            assert result.token_ids == cold.token_ids
            assert result.reused_tokens > 0  # only what the user typed since was prefilled
    assert set(batch.sessions()) == {"alice", "bob"}


def test_typing_on_while_others_decode_rides_in_the_decode_steps(
    engine: Engine, batch: BatchEngine
) -> None:
    """A few new prompt tokens join the running batch one per step (no prefill run of
    their own); the result is still the cold run's, token for token."""
    typed = [PROMPTS[5][:n] for n in (50, 54, 58, 63, len(PROMPTS[5]))]
    batch.generate(typed[0], GREEDY, session="typist")
    runner = batch.submit(PROMPTS[3], GenerationParams(max_new_tokens=400, ignore_eos=True))
    try:
        while not runner.done.is_set() and len(batch.steps) == 0:  # type: ignore[attr-defined]
            time.sleep(0.001)
        for prompt in typed[1:]:
            warm = batch.generate(prompt, GREEDY, session="typist")
            cold = engine.generate(prompt, GREEDY)
            assert warm.token_ids == cold.token_ids
            assert warm.reused_tokens > 0
    finally:
        runner.cancel.set()
        runner.done.wait(30)
    assert batch.inline_prefills >= 1


def test_rows_are_bounded_lru(engine: Engine) -> None:
    small = BatchEngine(engine, max_batch=2, max_rows=3)
    try:
        for name in ("a", "b", "c", "d"):
            small.generate(PROMPTS[2], GenerationParams(max_new_tokens=2), session=name)
        assert small.sessions() == ["b", "c", "d"]  # "a" was the least recently used
        again = small.generate(PROMPTS[2], GenerationParams(max_new_tokens=2), session="b")
        assert again.reused_tokens == again.prompt_tokens - 1
        small.drop_session("c")
        assert small.sessions() == ["d", "b"]
    finally:
        small.close()


def test_cancel_and_deadline_stop_between_tokens(engine: Engine, batch: BatchEngine) -> None:
    long = GenerationParams(max_new_tokens=400, ignore_eos=True)
    cancel = threading.Event()
    seen: list[str] = []

    def on_token(delta: str) -> None:
        seen.append(delta)
        if len(seen) == 3:
            cancel.set()

    ticket = batch.submit(PROMPTS[3], long, on_token=on_token)
    while not ticket.done.wait(0.001):
        if cancel.is_set():
            ticket.cancel.set()
    assert ticket.result is not None
    assert ticket.result.finish_reason == "cancelled"
    assert len(ticket.result.token_ids) < 400

    timed = batch.generate(
        PROMPTS[3], GenerationParams(max_new_tokens=400, ignore_eos=True, deadline=0.05)
    )
    assert timed.finish_reason == "deadline"
    assert len(timed.token_ids) < 400


def test_queue_is_bounded(engine: Engine) -> None:
    one = BatchEngine(engine, max_batch=1, max_rows=1, max_queue=1)
    try:
        long = GenerationParams(max_new_tokens=300, ignore_eos=True)
        first = one.submit(PROMPTS[3], long)
        deadline = time.monotonic() + 10
        while first.admitted is None and time.monotonic() < deadline:
            time.sleep(0.001)
        second = one.submit(PROMPTS[3], long)  # waits in the queue
        with pytest.raises(QueueFull):
            one.submit(PROMPTS[3], long)
        second.cancel.set()
        first.cancel.set()
        assert second.done.wait(10) and first.done.wait(10)
        assert second.result is not None and second.result.finish_reason == "cancelled"
    finally:
        one.close()


def test_bad_input_is_refused_before_queueing(batch: BatchEngine) -> None:
    with pytest.raises(ValueError, match="max_new_tokens"):
        batch.submit("x", GenerationParams(max_new_tokens=batch.max_length))
    with pytest.raises(ValueError, match="token ids"):
        batch.submit([10**9], GREEDY)
    assert batch.queue_length() == 0


def test_windows_merge_small_gaps() -> None:
    assert windows([0, 1, 2], 4) == [(0, 3)]
    assert windows([5, 0, 2], 4) == [(0, 6)]
    assert windows([0, 10], 4) == [(0, 1), (10, 11)]
    assert windows([], 4) == []
