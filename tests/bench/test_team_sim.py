"""The sizing simulator's logic (bench/team_sim.py): queueing theory, conservation, routing.

Fast and model-free: step times are given, not measured. The simulator's claim to
model the real server is checked by `bench/team_sim.py --validate` against real
replicas; here, that its arithmetic is right where the answer is known.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository's `bench`

import itertools

from bench.team_sim import (
    ReplicaConfig,
    Request,
    Sizer,
    StepTimes,
    percentile,
    route,
    simulate_replica,
    summarize,
    synthetic_text,
    typist_requests,
)

TIMES = StepTimes({1: 0.010, 4: 0.016, 16: 0.040}, prefill_fixed=0.008, prefill_per_token=0.0005)


def typists(count: int, duration: float, seed: int = 0) -> list[Request]:
    text = synthetic_text()
    requests: list[Request] = []
    for dev in range(count):
        requests += typist_requests(dev, text, duration, random.Random(seed * 1000 + dev))
    return requests


def test_md1_mean_wait_matches_pollaczek_khinchine() -> None:
    """Batching off, Poisson arrivals, identical cold requests: an M/D/1 queue.

    Service S = one prefill run + (max_new_tokens - 1) decode steps at batch 1; the mean
    wait in queue is rho * S / (2 (1 - rho)) (Pollaczek-Khinchine with zero variance).
    """
    config = ReplicaConfig(max_batch=1, rows=4, max_new_tokens=16, overhead_s=0.0)
    prompt_chars = 300
    service = TIMES.prefill_s(100) + 15 * TIMES.decode_s(1)
    rho = 0.7
    rate = rho / service
    rng = random.Random(7)
    now, requests = 0.0, []
    for index in range(20000):
        now += rng.expovariate(rate)
        # Every request from another developer: always a cold prefill of the whole prompt.
        requests.append(Request(index, now, float("inf"), prompt_chars))
    simulate_replica(requests, TIMES, config, warm=False)
    latencies = [r.answered for r in requests]
    assert all(value is not None for value in latencies)
    mean_wait = sum(latencies) / len(latencies) - service  # type: ignore[arg-type]
    expected = rho * service / (2 * (1 - rho))
    assert mean_wait == pytest.approx(expected, rel=0.08)
    assert min(latencies) == pytest.approx(service)  # type: ignore[type-var]


def test_every_request_ends_exactly_once_and_tokens_add_up() -> None:
    requests = typists(6, 30)
    config = ReplicaConfig(max_new_tokens=16)
    run = simulate_replica(requests, TIMES, config)
    answered = [r for r in requests if r.answered is not None]
    cancelled = [r for r in requests if r.cancelled]
    assert len(answered) + len(cancelled) == len(requests)
    assert not any(r.answered is not None and r.cancelled for r in requests)
    assert answered, "some requests must be answered when the typist pauses"
    # An answer arrives before the developer typed on, and after its own work.
    assert all(r.answered <= r.cancel_at - r.sent + 1e-9 for r in answered)  # type: ignore[operator]
    assert all(r.answered >= 15 * TIMES.decode_s(1) for r in answered)  # type: ignore[operator]
    # Each answer took one token from its prompt and 15 from decode steps it rode in.
    assert run.rows_stepped >= 15 * len(answered)
    assert run.generations <= len(requests)


def test_the_same_seed_gives_the_same_run_and_another_seed_another() -> None:
    def outcome(seed: int) -> list[tuple[float | None, bool]]:
        requests = typists(4, 20, seed)
        simulate_replica(requests, TIMES, ReplicaConfig())
        return [(r.answered, r.cancelled) for r in requests]

    assert outcome(1) == outcome(1)
    assert outcome(1) != outcome(2)


def test_typist_follows_the_replay_model() -> None:
    """A request 50 ms after every keystroke, cancelled at the next one (typing_replay)."""
    requests = typist_requests(0, synthetic_text(), 60, random.Random(3))
    rate = len(requests) / 60
    assert 4 < rate < 12  # 60-120 ms per character, pauses after lines and words
    assert all(r.cancel_at > r.sent for r in requests)
    gaps = [b.sent - a.sent for a, b in itertools.pairwise(requests)]
    assert min(gaps) >= 0.06 - 1e-9
    same = [(a, b) for a, b in itertools.pairwise(requests) if a.epoch == b.epoch]
    assert all(b.chars > a.chars for a, b in same)  # the cursor only moves on


def test_batching_shares_steps_and_kv_reuse_avoids_prefill() -> None:
    requests = typists(8, 30)
    batched = summarize(requests, 30)
    plain = [Request(r.dev, r.sent, r.cancel_at, r.chars, r.epoch, r.start) for r in requests]
    run_batched = simulate_replica(requests, TIMES, ReplicaConfig())
    simulate_replica(plain, TIMES, ReplicaConfig(max_batch=1))
    batched, unbatched = summarize(requests, 30), summarize(plain, 30)
    assert batched["waited_p95"] < unbatched["waited_p95"]
    assert run_batched.rows_stepped / run_batched.steps > 1.5  # rows really share steps
    # Typing on a warm row prefills a handful of tokens: most join the decode steps inline.
    assert run_batched.prefill_runs < run_batched.generations / 2


def test_consistent_hashing_is_sticky_and_moves_few_developers() -> None:
    keys = [f"Bearer acp_{i}" for i in range(5000)]
    ten, eleven = route(keys, 10), route(keys, 10)
    assert ten == eleven  # deterministic: a developer always reaches the same replica
    counts = [ten.count(r) for r in range(10)]
    assert max(counts) < 1.6 * 500 and min(counts) > 0.5 * 500  # 160 points per server
    grown = route(keys, 11)
    moved = sum(a != b for a, b in zip(ten, grown, strict=True))
    assert all(b == 10 for a, b in zip(ten, grown, strict=True) if a != b)  # only to the new one
    assert moved < 2 * len(keys) / 11


def test_sizer_finds_the_fewest_replicas_and_more_for_slower_steps() -> None:
    texts = [synthetic_text(seed=i) for i in range(3)]
    config = ReplicaConfig()
    times = StepTimes({1: 0.004, 4: 0.006, 16: 0.012}, 0.004, 0.0002)
    fast = Sizer(times, config, texts, duration=15)
    slow_times = StepTimes({k: v * 2 for k, v in times.decode.items()}, 0.008, 0.0004)
    slow = Sizer(slow_times, config, texts, duration=15)
    loads = fast.loads(200, 7, 1.0)
    assert sum(loads.values()) == 7 and sum(k * n for k, n in loads.items()) == 200
    needed_fast = fast.replicas_for(60, 1.0)
    needed_slow = slow.replicas_for(60, 1.0)
    assert needed_fast is not None and needed_slow is not None
    assert needed_slow > needed_fast
    assert fast.pooled(60, needed_fast, 1.0)["p95"] <= 0.3
    if needed_fast > 1:
        assert fast.pooled(60, needed_fast - 1, 1.0)["p95"] > 0.3
    hopeless = Sizer(StepTimes({1: 0.05}, 0.05, 0.001), config, texts, duration=10)
    assert hopeless.replicas_for(10, 1.0) is None  # 16 x 50 ms > 300 ms for anyone


def test_step_times_interpolate_and_round_trip() -> None:
    assert TIMES.decode_s(2) == pytest.approx(0.012)
    assert TIMES.decode_s(32) == pytest.approx(0.040 + 16 * (0.024 / 12))
    assert StepTimes.from_json(TIMES.to_json()) == TIMES
    assert percentile([3.0, 1.0, 2.0, 4.0], 0.5) == 2.0
