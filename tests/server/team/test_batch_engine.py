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

import numpy as np
import pytest

from acepilot.server.engine import Engine, Generation, GenerationParams
from acepilot.server.engine.batch import BatchEngine, QueueFull
from acepilot.server.engine.slots import compaction_moves, swap_slots, windows
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


def test_compaction_moves_close_the_holes_with_the_fewest_swaps() -> None:
    assert compaction_moves([], 8) == [] and compaction_moves([4], 8) == []
    assert compaction_moves([2, 3, 4], 8) == []  # already side by side
    assert compaction_moves([1, 3, 5], 8) == [(5, 2)]  # the block [1, 4) keeps two in place
    assert compaction_moves([0, 1, 2, 9], 10) == [(9, 3)]
    assert compaction_moves([0, 7, 8, 9], 10) == [(0, 6)]  # never past the last slot
    assert compaction_moves([0, 8, 9], 10) == [(0, 7)]
    moves = compaction_moves([0, 2, 4, 6, 8, 10], 11)
    assert len(moves) == 3
    slots = {0, 2, 4, 6, 8, 10}
    for outside, hole in moves:
        slots.remove(outside)
        slots.add(hole)
    assert max(slots) - min(slots) + 1 == len(slots)


def test_swap_slots_exchanges_the_valid_positions_only() -> None:
    rng = np.random.default_rng(0)
    arrays = [rng.integers(-100, 100, (4, 2, 10, 3)).astype(np.int8) for _ in range(3)]
    before = [array.copy() for array in arrays]
    swap_slots(arrays, 1, 3, 6, 4, np.empty((2, 10, 3), np.int8))
    for old, new in zip(before, arrays, strict=True):
        assert np.array_equal(new[3, :, :6], old[1, :, :6])
        assert np.array_equal(new[1, :, :4], old[3, :, :4])
        assert np.array_equal(new[0], old[0]) and np.array_equal(new[2], old[2])


def test_scattered_rows_are_moved_together_and_every_cache_survives(engine: Engine) -> None:
    """Developers who pause leave their caches on rows between the generating ones;
    the generating rows are swapped side by side (no idle row computed as a dummy),
    and both the moved and the displaced caches stay valid for their sessions."""
    typed = [PROMPTS[i] for i in (0, 1, 2, 4, 5, 7)]  # one developer each, rows 0..5
    batched = BatchEngine(engine, max_batch=8, max_rows=8)
    try:
        for row, prompt in enumerate(typed):
            batched.generate(prompt[: len(prompt) // 2], GREEDY, session=f"dev-{row}")
        waking = (1, 3, 5)  # rows with idle rows between them
        results = concurrently(batched, [(typed[row], GREEDY, f"dev-{row}") for row in waking])
        for row, result in zip(waking, results, strict=True):
            assert result.token_ids == engine.generate(typed[row], GREEDY).token_ids
            assert result.reused_tokens > 0
        assert batched.row_moves >= 1
        assert batched.dummy_rows == 0
        for row in (0, 2, 4, 1):  # displaced (0, 2, 4) and moved (1) caches alike
            again = batched.generate(typed[row] + "\n", GREEDY, session=f"dev-{row}")
            assert again.reused_tokens > 0
            assert again.token_ids == engine.generate(typed[row] + "\n", GREEDY).token_ids
    finally:
        batched.close()
