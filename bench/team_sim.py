"""Team-server sizing (not a test): a discrete-event simulation of replicas behind nginx.

Why one file over 600 lines: a benchmark script a reader runs and reads alone —
step-time measurement, the event simulation, the sizer and the validation run
against real replicas — kept in one file like the other bench/ scripts.

How many replicas keep p95 latency within a target (300 ms) for 100, 1,000 and
10,000 developers? Answered by simulating what the real system does, driven
by figures measured on the running hardware:

- **Step times** (`--measure`): the real `BatchEngine` on the 350M-shape int4
  model that bench/engine.py builds and caches. Decode: B generations run
  side by side through the real scheduler thread, and the time between two
  decode steps of B rows is recorded (the graph run plus the scheduler's
  own Python work per step). Prefill: one run of n new tokens on a warm row.
  The load average is recorded beside them (this machine is shared).
- **Requests**: the typist of bench/typing_replay.py (its `keystrokes`: 60-120 ms
  per character, 0.4-1.2 s after a line, 0.3-0.8 s after some words; functions
  of 3-12 lines with 0.3 s before and 1.5 s after each). As VS Code does, a
  request leaves 50 ms after every keystroke (every gap exceeds the debounce)
  and is cancelled by the next keystroke if not answered by then. The prompt is
  the file from a fixed start to the cursor (KV reuse: only what was typed since
  the row's cache is prefilled); 16 new tokens (random weights never stop early).
- **One replica** = `acepilot/server/engine/batch.py`'s scheduler loop, step
  for step: queued requests join at step boundaries (FIFO, up to --max-batch),
  each developer keeps a row (LRU over the rows that fit --kv-memory), a
  request adding at most `inline_prefill` tokens while others decode rides in
  the decode steps one token per step, others are prefilled alone in chunks
  of `prefill_chunk`, one chunk per loop turn before the decode step; the
  stepping rows are moved side by side before each step (`slots.py`), so a
  step costs the decode time of its stepping rows alone (the copies, a few MB
  per move, are not charged); cancellation is noticed at the loop's checks
  as in the real code.
- **Routing**: nginx `hash $http_authorization consistent` (ketama: 160
  points per server on a crc32 ring), so each developer stays on one replica
  and replicas get unequal shares.

Latency is judged on the requests a developer waits for: those whose next
keystroke comes at least the target (300 ms) after the request left. For them
the latency is the answer's time, or, when the answer had not come when the
developer typed on, at least that long (censored: it counts as a miss).

Replicas are independent given their developers, so a replica with k typing
developers is simulated once per k and the pooled p95 over all replicas is
the mixture weighted by each k's share of requests.

    .venv/bin/python bench/team_sim.py --measure steps.json --threads 2 --size 100 1000 10000
    .venv/bin/python bench/team_sim.py --steps steps.json --size 100 1000 10000   # reuse
    .venv/bin/python bench/team_sim.py --measure steps-1t.json --threads 1 --validate --devs 4 --duration 90

Measuring takes about a minute on an idle 2-core machine (several under load); sizing one
to two minutes; --validate about 3.5 minutes. Tables and findings: docs/team-server.md.

`--validate` runs the same typists for real: 2 team-server replicas (one
onnxruntime thread each on this 2-core machine) behind nginx configured as
tests/server/team/test_team_scale_out.py does, then simulates the same
schedules on the replicas nginx actually chose, and prints both.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import bisect
import json
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import zlib
from collections import Counter, OrderedDict, deque
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import itertools

from acepilot.server.engine.batch import (
    DEFAULT_INLINE_PREFILL,
    DEFAULT_MAX_BATCH,
    DEFAULT_PREFILL_CHUNK,
)

TARGET_S = 0.3
NGINX_POINTS = 160  # ketama points per server (nginx's upstream hash ... consistent)

# ---- step times --------------------------------------------------------------


@dataclass(frozen=True)
class StepTimes:
    """Measured costs of one replica: decode step by batch width, prefill by tokens."""

    decode: dict[int, float]  # rows in the run -> seconds per decode step
    prefill_fixed: float  # seconds per prefill run, whatever its length
    prefill_per_token: float  # seconds per prompt token in a prefill run
    note: str = ""

    def decode_s(self, width: int) -> float:
        """Linear between measured widths, and past the largest along the last segment."""
        sizes = sorted(self.decode)
        if width in self.decode:
            return self.decode[width]
        if width < sizes[0]:
            return self.decode[sizes[0]]
        index = bisect.bisect_left(sizes, width)
        lo, hi = (sizes[-2], sizes[-1]) if index >= len(sizes) else (sizes[index - 1], sizes[index])
        slope = (self.decode[hi] - self.decode[lo]) / (hi - lo)
        return self.decode[lo] + slope * (width - lo)

    def prefill_s(self, tokens: int) -> float:
        return self.prefill_fixed + self.prefill_per_token * tokens

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "decode": {str(k): v for k, v in self.decode.items()}}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StepTimes:
        return cls(
            {int(k): float(v) for k, v in data["decode"].items()},
            float(data["prefill_fixed"]),
            float(data["prefill_per_token"]),
            str(data.get("note", "")),
        )


@dataclass(frozen=True)
class ReplicaConfig:
    """The team server's scheduler settings (its defaults) and client-side constants."""

    max_batch: int = DEFAULT_MAX_BATCH
    rows: int = 97  # --kv-memory 8G / 84 MB per row (350M, int8 KV cache)
    prefill_chunk: int = DEFAULT_PREFILL_CHUNK
    inline_prefill: int = DEFAULT_INLINE_PREFILL
    max_new_tokens: int = 16
    chars_per_token: float = 3.0  # measured with the model's tokenizer by --validate
    overhead_s: float = 0.005  # HTTP, nginx, tokenizing: added to every answer


# ---- requests ----------------------------------------------------------------


@dataclass
class Request:
    """One completion request and, once simulated or run, how it ended."""

    dev: int
    sent: float
    cancel_at: float  # the next keystroke: the editor cancels the request then
    chars: int  # prompt length in characters (the developer's text from `start` to the cursor)
    epoch: int = 0  # bumps when the developer's prompt starts over elsewhere
    start: int = 0  # where the prompt begins in the developer's text
    answered: float | None = None  # seconds from sent to the complete answer
    cancelled: bool = False

    @property
    def waited(self) -> bool:
        """The developer paused long enough for an answer within the target to show."""
        return self.cancel_at - self.sent >= TARGET_S

    @property
    def latency(self) -> float:
        """Answer time; for an answer that never came, the time it was waited for."""
        return self.answered if self.answered is not None else self.cancel_at - self.sent


def typist_requests(
    dev: int,
    text: str,
    duration: float,
    rng: random.Random,
    *,
    context_chars: int = 800,
    debounce: float = 0.05,
    start_at: float = 0.0,
) -> list[Request]:
    """The typing replay's typist on `text` for `duration` seconds (module docstring)."""
    from bench.typing_replay import Task, keystrokes

    requests: list[Request] = []
    start = rng.randrange(0, max(1, len(text) - context_chars - 2000))
    cursor = start + context_chars
    epoch = 0
    now = start_at
    while now < start_at + duration:
        lines = rng.randint(3, 12)
        end = cursor
        for _ in range(lines):
            end = text.find("\n", end + 1)
            if end < 0:
                break
        if end < 0 or end - cursor < 2:
            start = rng.randrange(0, max(1, len(text) - context_chars - 2000))
            cursor, epoch = start + context_chars, epoch + 1
            continue
        body = text[cursor:end].replace("\t", "    ")
        task = Task(Path("x.py"), "f", (0, 0), (0, 0), body if body[0] == "\n" else "\n" + body)
        keys = keystrokes(task, rng)
        typed = 0
        for index, key in enumerate(keys):
            now += 0.3 + 1.5 if index == 0 else key.gap  # a last look, then the next function
            typed += len(key.text)
            following = keys[index + 1].gap if index + 1 < len(keys) else 1.8
            if following > debounce:
                requests.append(
                    Request(
                        dev, now + debounce, now + following, cursor - start + typed, epoch, start
                    )
                )
            if now >= start_at + duration:
                break
        cursor = end
    # Whatever the last request was, nothing cancels it after the run: the last look.
    return [r for r in requests if r.sent < start_at + duration]


def synthetic_text(lines: int = 4000, seed: int = 0) -> str:
    """Python-looking lines for tests and for --size without the source files."""
    rng = random.Random(seed)
    words = ["value", "result", "index", "items", "self", "count", "name", "data", "path"]
    out = []
    for _ in range(lines):
        indent = " " * 4 * rng.randint(0, 3)
        out.append(indent + " ".join(rng.choice(words) for _ in range(rng.randint(2, 7))))
    return "\n".join(out) + "\n"


# ---- one replica -------------------------------------------------------------


@dataclass(eq=False)
class _Gen:
    request: Request
    reused: int
    pending: int  # prompt tokens still to feed
    prompt: int  # prompt tokens
    inline: bool
    tokens: int = 0
    fed: bool = False  # has a sampled token to feed (the first came from the prompt)


@dataclass(eq=False)
class _Row:
    index: int
    dev: int | None = None
    epoch: int = -1
    valid: int = 0  # prompt tokens of the developer's text the cache holds
    gen: _Gen | None = None


@dataclass
class ReplicaRun:
    """What a simulated replica did."""

    requests: list[Request]
    steps: int = 0  # decode steps
    rows_stepped: int = 0  # generations summed over decode steps
    prefill_runs: int = 0
    generations: int = 0  # requests that reached a row
    busy_s: float = 0.0


def simulate_replica(
    requests: Sequence[Request],
    times: StepTimes,
    config: ReplicaConfig,
    *,
    warm: bool = True,
) -> ReplicaRun:
    """batch.py's `_loop` in simulated time (module docstring); fills in each request's end.

    `warm`: each developer's row starts out holding their first prompt, as after the
    cold prefill of a developer opening a file (not measured, as in bench/team_load.py).
    """
    order = sorted(requests, key=lambda r: r.sent)
    run = ReplicaRun(list(order))
    rows = [_Row(index) for index in range(config.rows)]
    by_dev: OrderedDict[int, _Row] = OrderedDict()  # least recently used first
    queue: deque[Request] = deque()
    prefilling: deque[_Row] = deque()
    now = 0.0
    arrivals = 0

    def tokens_of(chars: int) -> int:
        return max(1, math.ceil(chars / config.chars_per_token))

    def finish(row: _Row, cancelled: bool) -> None:
        gen = row.gen
        assert gen is not None
        row.gen = None
        if row in prefilling:
            prefilling.remove(row)
        if row.dev is None:
            row.valid = 0
        request = gen.request
        if not cancelled and now + config.overhead_s <= request.cancel_at:
            request.answered = now + config.overhead_s - request.sent
        else:
            request.cancelled = True

    def advance(row: _Row) -> None:
        """A token was sampled: the same order of checks as `_advance`."""
        gen = row.gen
        assert gen is not None
        if gen.request.cancel_at <= now:
            finish(row, True)
            return
        gen.tokens += 1
        if gen.tokens >= config.max_new_tokens:
            finish(row, False)
            return
        gen.fed = True

    def choose_row(dev: int) -> _Row | None:
        own = by_dev.get(dev)
        if own is not None:
            if own.gen is None:
                by_dev.move_to_end(dev)
                return own
            del by_dev[dev]  # the previous request still runs: a fresh row becomes the cache
            own.dev = None
        row = next((r for r in rows if r.gen is None and r.dev is None), None)
        if row is None:
            row = next((r for r in by_dev.values() if r.gen is None), None)
            if row is None:
                return None
            assert row.dev is not None
            del by_dev[row.dev]
            row.dev, row.valid = None, 0
        row.dev = dev
        by_dev[dev] = row
        return row

    def admit() -> None:
        while queue:
            request = queue[0]
            if request.cancel_at <= now:  # `_expire_queue` (lazily: the FIFO order is the same)
                queue.popleft()
                request.cancelled = True
                continue
            if sum(1 for r in rows if r.gen is not None) >= config.max_batch:
                return
            row = choose_row(request.dev)
            if row is None:
                return
            queue.popleft()
            if row.epoch != request.epoch:
                row.epoch, row.valid = request.epoch, 0
            prompt = tokens_of(request.chars)
            # The last cached token may be re-tokenized once more characters follow it.
            reused = min(row.valid, prompt - 1)
            row.valid = reused
            pending = prompt - reused
            decoding = any(r.gen is not None and (r.gen.inline or not r.gen.pending) for r in rows)
            # batch.py turns inline prefill off when batching is off (max_batch 1).
            inline = config.max_batch > 1 and decoding and pending <= config.inline_prefill
            row.gen = _Gen(request, reused, pending, prompt, inline)
            run.generations += 1
            if not inline:
                prefilling.append(row)

    def steps_now(gen: _Gen) -> bool:
        return (gen.inline and gen.pending > 0) or (gen.pending == 0 and gen.fed)

    if warm:
        for request in order:
            if request.dev not in by_dev:
                row = choose_row(request.dev)
                if row is not None:
                    row.epoch, row.valid = request.epoch, tokens_of(request.chars) - 1

    while True:
        while arrivals < len(order) and order[arrivals].sent <= now:
            queue.append(order[arrivals])
            arrivals += 1
        admit()
        if not any(row.gen is not None for row in rows):
            if arrivals >= len(order):
                if not queue:
                    break
                now = min(r.cancel_at for r in queue)  # rows all cached and busy: unreachable
                continue
            now = max(now, order[arrivals].sent)
            continue
        started = now
        for row in rows:
            if row.gen is not None and row.gen.request.cancel_at <= now:
                finish(row, True)
        if prefilling:
            row = prefilling[0]
            gen = row.gen
            assert gen is not None
            chunk = min(gen.pending, config.prefill_chunk)
            now += times.prefill_s(chunk)
            run.prefill_runs += 1
            row.valid = min(row.valid + chunk, gen.prompt - 1)
            gen.pending -= chunk
            if not gen.pending:
                prefilling.popleft()
                advance(row)
        stepping = [row for row in rows if row.gen is not None and steps_now(row.gen)]
        if stepping:
            now += times.decode_s(len(stepping))
            run.steps += 1
            run.rows_stepped += len(stepping)
            for row in stepping:
                gen = row.gen
                assert gen is not None
                if gen.pending:  # an inline prompt token
                    gen.pending -= 1
                    row.valid = min(row.valid + 1, gen.prompt - 1)
                    if gen.pending:
                        continue
                advance(row)
        run.busy_s += now - started
    return run


# ---- routing and sizing -------------------------------------------------------


def ring(replicas: int) -> tuple[list[int], list[int]]:
    """A ketama ring: NGINX_POINTS crc32 points per server, as nginx's consistent hash."""
    points = []
    for replica in range(replicas):
        server = f"10.0.{replica // 250}.{replica % 250}:8000".encode()
        previous = 0
        for _ in range(NGINX_POINTS):  # nginx: crc32(server, "\0", previous point)
            previous = zlib.crc32(server + b"\0" + previous.to_bytes(4, "little"))
            points.append((previous, replica))
    points.sort()
    return [h for h, _ in points], [r for _, r in points]


def route(keys: Iterable[str], replicas: int) -> list[int]:
    """The replica of each key (the Authorization header) on the ring."""
    hashes, owners = ring(replicas)
    out = []
    for key in keys:
        index = bisect.bisect_left(hashes, zlib.crc32(key.encode())) % len(hashes)
        out.append(owners[index])
    return out


@dataclass
class Sizer:
    """Pooled latency of N developers over R replicas, one simulation per replica load k."""

    times: StepTimes
    config: ReplicaConfig
    texts: list[str]
    duration: float = 120.0
    seed: int = 0
    cache: dict[int, list[Request]] = field(default_factory=dict)

    def replica(self, k: int) -> list[Request]:
        """The requests of one replica with k typing developers, simulated."""
        if k not in self.cache:
            requests: list[Request] = []
            for dev in range(k):
                rng = random.Random(self.seed * 1_000_003 + dev)
                requests += typist_requests(
                    dev, self.texts[dev % len(self.texts)], self.duration, rng
                )
            simulate_replica(requests, self.times, self.config)
            self.cache[k] = requests
        return self.cache[k]

    def loads(self, devs: int, replicas: int, active: float) -> Counter[int]:
        """How many replicas hold k typing developers (k -> count)."""
        rng = random.Random(self.seed)
        # Real tokens: "acp_" + 32 random bytes, URL-safe base64 (acepilot/server/team/tokens.py).
        keys = [
            "Bearer acp_" + base64.urlsafe_b64encode(rng.randbytes(32)).decode().rstrip("=")
            for _ in range(devs)
        ]
        typing = [r for r in route(keys, replicas) if rng.random() < active]
        per = Counter(typing)
        counts = Counter(per.values())
        counts[0] += replicas - len(per)
        return counts

    def pooled(self, devs: int, replicas: int, active: float) -> dict[str, float]:
        """p50/p95 of waited-for requests over all replicas, and the busiest replica."""
        weighted: list[tuple[float, int]] = []
        loads = self.loads(devs, replicas, active)
        for k, count in loads.items():
            if k:
                weighted += [(r.latency, count) for r in self.replica(k) if r.waited]
        weighted.sort()
        total = sum(w for _, w in weighted)

        def pct(p: float) -> float:
            seen = 0
            for value, weight in weighted:
                seen += weight
                if seen >= p * total:
                    return value
            return float("nan")

        return {"p50": pct(0.5), "p95": pct(0.95), "max_k": float(max(loads))}

    def largest_load(self, target: float = TARGET_S) -> int:
        """The most typing developers one replica serves within the target (0: none).

        Doubling, then bisection: p95 grows with the load (up to simulation noise).
        """

        def ok(k: int) -> bool:
            waited = [r.latency for r in self.replica(k) if r.waited]
            return percentile(waited, 0.95) <= target

        if not ok(1):
            return 0
        good, bad = 1, 2
        while bad <= 256 and ok(bad):
            good, bad = bad, bad * 2
        while bad - good > 1:
            mid = (good + bad) // 2
            good, bad = (mid, bad) if ok(mid) else (good, mid)
        return good

    def replicas_for(self, devs: int, active: float, target: float = TARGET_S) -> int | None:
        """The fewest replicas whose pooled p95 is within the target.

        None: not reachable (one developer alone misses it, or it takes more than four
        replicas per typing developer).
        """
        best = self.largest_load(target)
        if best == 0:
            return None
        lo = max(1, math.ceil(devs * active / best))
        hi = lo
        # Past a few replicas per typing developer, only hash collisions are left to fix.
        cap = max(1, 4 * math.ceil(devs * active))
        while self.pooled(devs, hi, active)["p95"] > target:
            if hi >= cap:
                return None
            lo, hi = hi + 1, min(cap, max(hi + 1, math.ceil(hi * 1.25)))
        while lo < hi:  # the smallest passing count in (previous failing, hi]
            mid = (lo + hi) // 2
            if self.pooled(devs, mid, active)["p95"] <= target:
                hi = mid
            else:
                lo = mid + 1
        return hi


def percentile(values: Sequence[float], share: float) -> float:
    """The smallest value with at least `share` of the values at or below it."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def summarize(requests: Sequence[Request], duration: float) -> dict[str, float]:
    waited = [r.latency for r in requests if r.waited]
    answered = [r.answered for r in requests if r.answered is not None]
    return {
        "sent_per_s": len(requests) / duration,
        "answered_per_s": len(answered) / duration,
        "waited": float(len(waited)),
        "waited_p50": percentile(waited, 0.5),
        "waited_p95": percentile(waited, 0.95),
        "answered_p50": percentile(answered, 0.5),
        "answered_p95": percentile(answered, 0.95),
        "cancelled_share": sum(r.cancelled for r in requests) / max(1, len(requests)),
    }


# ---- measuring the step times ------------------------------------------------


def measure_steps(
    artifact: Path,
    threads: int | None,
    sizes: Sequence[int] = (1, 2, 4, 8, 16),
    context: int = 600,
    tokens: int = 8,
) -> StepTimes:
    """Decode steps through the real scheduler, and prefill runs, on this machine now.

    Rows are primed by writing their token lists directly (the KV values do not change
    the speed): B cold prefills per batch size would take minutes on a shared machine.
    """
    import numpy as np

    from acepilot.server.engine import Engine
    from acepilot.server.engine.batch import BatchEngine
    from acepilot.server.engine.generation import GenerationParams
    from acepilot.server.registry import ModelEntry

    load_before = os.getloadavg()[0]
    engine = Engine.load(ModelEntry.load(artifact), max_sessions=1, threads=threads)
    marks: list[tuple[float, int]] = []
    batch = BatchEngine(
        engine,
        max_batch=max(sizes),
        max_rows=max(sizes) + 1,
        on_step=lambda n: marks.append((time.perf_counter(), n)),
    )
    prompt = np.random.default_rng(0).integers(10, 4000, context).tolist()

    def prime(count: int) -> None:
        with batch._cond:
            for index in range(count):
                row = batch._rows[index]
                row.ids, row.key = list(prompt), f"s{index}"
                batch._by_key[row.key] = row

    try:
        decode: dict[int, float] = {}
        for size in sizes:
            prime(size)
            marks.clear()
            # Long enough that all rows decode together for several steps after the last
            # one joined (each joins through a one-token prefill run of its own).
            params = GenerationParams(max_new_tokens=size + tokens, ignore_eos=True)
            with batch._cond:  # all queued before the scheduler admits any
                tickets = [batch.submit(prompt + [7], params, session=f"s{i}") for i in range(size)]
            for ticket in tickets:
                ticket.done.wait()
            gaps = [b[0] - a[0] for a, b in itertools.pairwise(marks) if a[1] == b[1] == size]
            decode[size] = sorted(gaps)[len(gaps) // 2]
            log(f"  decode batch {size}: {decode[size] * 1000:.1f} ms/step")
        samples: list[tuple[int, float]] = []
        one = GenerationParams(max_new_tokens=1, ignore_eos=True)
        for new in (2, 16, 64, 256):
            for _ in range(3):
                prime(1)
                ids = prompt + [11 + i % 50 for i in range(new)]
                result = batch.generate(ids, one, session="s0")
                samples.append((new, result.prefill_ms / 1000))
            log(f"  prefill {new} tokens: {samples[-1][1] * 1000:.1f} ms")
        xs = np.array([n for n, _ in samples], dtype=float)
        ys = np.array([s for _, s in samples])
        slope, intercept = np.polyfit(xs, ys, 1)
    finally:
        batch.close()
    note = (
        f"{artifact.parent.name} {artifact.name}, {threads or 'all'} threads, {context}-token "
        f"rows, load average {load_before:.2f} before / {os.getloadavg()[0]:.2f} after "
        f"({os.cpu_count()} cores), {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
    )
    return StepTimes(decode, float(max(intercept, 0.0)), float(max(slope, 0.0)), note)


# ---- validation against real replicas ----------------------------------------

NGINX_CONFIG = """
worker_processes 1;
daemon off;
{user}
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    upstream acepilot {{
        hash $http_authorization consistent;
        {servers}
        keepalive 32;
    }}
    server {{
        listen 127.0.0.1:{port};
        client_max_body_size 1m;
        location / {{
            proxy_pass http://acepilot;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_read_timeout 300s;
        }}
    }}
}}
"""


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


async def replay_typist(
    url: str, token: str, text: str, schedule: list[Request], t0: float
) -> None:
    """Send the schedule's requests at their times; each is cancelled at its next keystroke."""
    import httpx

    async with httpx.AsyncClient(timeout=300) as http:

        async def one(request: Request) -> None:
            body = {
                "prompt": text[request.start : request.start + request.chars],
                "max_tokens": 16,
                "temperature": 0,
                "stop": ["\n\n"],
            }
            sent = time.monotonic()
            try:
                response = await asyncio.wait_for(
                    http.post(
                        url + "/v1/completions",
                        headers={"Authorization": f"Bearer {token}"},
                        json=body,
                    ),
                    timeout=max(0.001, t0 + request.cancel_at - sent),
                )
            except TimeoutError:
                request.cancelled = True
                return
            if response.status_code == 200:
                request.answered = time.monotonic() - sent
            else:
                request.cancelled = True
                log(f"  HTTP {response.status_code}: {response.text[:200]}")

        tasks = []
        for request in schedule:
            await asyncio.sleep(max(0.0, t0 + request.sent - time.monotonic()))
            tasks.append(asyncio.create_task(one(request)))
        await asyncio.gather(*tasks)


def validate(args: argparse.Namespace, times: StepTimes) -> str:
    """Real replicas behind nginx against the simulation of the same schedules."""
    import httpx

    from bench.engine import ensure_artifact, ensure_checkpoint
    from bench.team_load import Server, metric_values, source_texts

    nginx = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )
    checkpoint = ensure_checkpoint(args.cache, "350M")
    artifact = ensure_artifact(args.cache, checkpoint, "350M", "int4")
    registry, model = artifact.parent.parent, artifact.parent.name
    count = args.replicas if nginx else 1
    server_args = argparse.Namespace(kv_memory=args.kv_memory, max_tokens=16, threads=args.threads)
    servers = [Server(registry, model, DEFAULT_MAX_BATCH, server_args) for _ in range(count)]
    nginx_process = None
    try:
        for server in servers:
            server.wait_ready()
        # One token database per replica: each gets the same names (tokens differ).
        names = [f"dev-{i}" for i in range(args.devs)]
        from acepilot.server.team.tokens import TokenStore

        tokens = [TokenStore(servers[0].db).create(name) for name in names]
        for server in servers[1:]:
            shutil.copy(servers[0].db, server.db)
        url = servers[0].url
        if nginx:
            directory = Path(tempfile.mkdtemp(prefix="team-sim-nginx-"))
            port = free_port()
            upstream = "\n        ".join(f"server 127.0.0.1:{s.port};" for s in servers)
            (directory / "nginx.conf").write_text(
                NGINX_CONFIG.format(
                    dir=directory,
                    port=port,
                    servers=upstream,
                    user="user root;" if os.geteuid() == 0 else "",
                )
            )
            nginx_process = subprocess.Popen(
                [nginx, "-p", str(directory), "-c", str(directory / "nginx.conf"), "-e",
                 str(directory / "error.log")],
                stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
            )  # fmt: skip
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.1)
        texts = source_texts()
        engine_tokenizer = tokenizer_of(artifact)
        schedules = []
        for dev in range(args.devs):
            rng = random.Random(args.seed * 1_000_003 + dev)
            text = texts[dev % len(texts)]
            schedules.append(typist_requests(dev, text, args.duration, rng, start_at=1.0))
        sample = texts[0][:20000]
        chars_per_token = len(sample) / len(engine_tokenizer.encode(sample).ids)
        # Warm-up: each developer's first prompt is prefilled cold, unmeasured (as in
        # bench/team_load.py): a developer opening a file.
        for dev in range(args.devs):
            first = schedules[dev][0]
            text = texts[dev % len(texts)]
            prompt = text[first.start : first.start + first.chars]
            httpx.post(
                url + "/v1/completions",
                headers={"Authorization": f"Bearer {tokens[dev]}"},
                json={"prompt": prompt, "max_tokens": 1, "temperature": 0},
                timeout=600,
            ).raise_for_status()
        before = [metric_values(httpx.get(s.url + "/metrics").text) for s in servers]
        load_start = os.getloadavg()[0]
        log(f"[validate] {args.devs} typists for {args.duration:.0f} s on {count} replicas ...")

        async def all_typists() -> None:
            t0 = time.monotonic()
            await asyncio.gather(
                *(
                    replay_typist(url, tokens[d], texts[d % len(texts)], schedules[d], t0)
                    for d in range(args.devs)
                )
            )

        asyncio.run(all_typists())
        load_end = os.getloadavg()[0]
        after = [metric_values(httpx.get(s.url + "/metrics").text) for s in servers]
    finally:
        if nginx_process is not None:
            nginx_process.terminate()
            nginx_process.wait(10)
        for server in servers:
            server.stop()
    # Which replica each developer reached (per-token counters), for the simulation.
    placement = []
    for name in names:

        def requests_of(values: dict[str, float], name: str = name) -> float:
            return sum(
                v
                for k, v in values.items()
                if k.startswith("acepilot_token_requests_total{") and f'token="{name}"' in k
            )

        seen = [requests_of(a) - requests_of(b) for a, b in zip(after, before, strict=True)]
        placement.append(seen.index(max(seen)))
    real = [r for schedule in schedules for r in schedule]
    log(f"[validate] real: {summarize(real, args.duration)}; placement {placement}")
    simulated = [
        Request(r.dev, r.sent, r.cancel_at, r.chars, r.epoch, r.start) for r in real
    ]  # same schedules, fresh outcomes
    config = ReplicaConfig(chars_per_token=chars_per_token, overhead_s=args.overhead_ms / 1000)
    for replica in range(count):
        simulate_replica([r for r in simulated if placement[r.dev] == replica], times, config)
    real_s, sim_s = summarize(real, args.duration), summarize(simulated, args.duration)
    lines = [
        f"### Validation: {args.devs} typists, {args.duration:.0f} s, {count} replica(s)"
        + (" behind nginx" if nginx else " (nginx not installed: one replica, no balancer)"),
        "",
        f"Developers per replica (nginx's choice): {sorted(Counter(placement).values())}; "
        f"load average {load_start:.2f} at start, {load_end:.2f} at end ({os.cpu_count()} "
        f"cores, shared); step times: {times.note}; {chars_per_token:.2f} characters per token.",
        "",
        "| | real | simulated | error |",
        "|---|---|---|---|",
    ]
    for key, title in [
        ("sent_per_s", "requests sent /s"),
        ("answered_per_s", "answers /s (throughput)"),
        ("waited_p50", "waited-for requests: p50 s"),
        ("waited_p95", "waited-for requests: p95 s"),
        ("answered_p50", "all answers: p50 s"),
        ("answered_p95", "all answers: p95 s"),
        ("cancelled_share", "share cancelled by the next keystroke"),
    ]:
        a, b = real_s[key], sim_s[key]
        error = f"{(b - a) / a * 100:+.0f}%" if a else "-"
        lines.append(f"| {title} | {a:.3f} | {b:.3f} | {error} |")
    lines.append(
        f"| waited-for requests (count) | {real_s['waited']:.0f} | {sim_s['waited']:.0f} | |"
    )
    return "\n".join(lines)


def tokenizer_of(artifact: Path) -> Any:
    from tokenizers import Tokenizer

    found = next(artifact.rglob("tokenizer.json"))
    return Tokenizer.from_file(str(found))


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ---- driver ------------------------------------------------------------------


def sizing_table(args: argparse.Namespace, times: StepTimes) -> str:
    texts = source_texts_or_synthetic()
    config = ReplicaConfig(overhead_s=args.overhead_ms / 1000)
    sizer = Sizer(times, config, texts, duration=args.sim_duration, seed=args.seed)
    one = summarize(sizer.replica(1), args.sim_duration)
    best = sizer.largest_load()
    lines = [
        f"### Sizing: p95 of waited-for requests <= {TARGET_S * 1000:.0f} ms",
        "",
        f"Step times: {times.note}. Decode ms/step by batch: "
        + ", ".join(f"{k}: {v * 1000:.1f}" for k, v in sorted(times.decode.items()))
        + f"; prefill {times.prefill_fixed * 1000:.1f} ms + {times.prefill_per_token * 1000:.2f} "
        f"ms/token. One typing developer sends {one['sent_per_s']:.2f} requests/s "
        f"({one['cancelled_share'] * 100:.0f}% cancelled by the next keystroke). "
        f"One replica alone holds at most {best} typing developers within the target. "
        f"{args.sim_duration:.0f} simulated seconds per replica load.",
        "",
        "| developers | typing at once | replicas | developers per replica (busiest) | p50 s | p95 s |",
        "|---|---|---|---|---|---|",
    ]
    for active in args.active:
        for devs in args.size:
            replicas = sizer.replicas_for(devs, active)
            if replicas is None:
                lines.append(f"| {devs:,} | {active:.0%} | not reachable | - | - | - |")
                continue
            pooled = sizer.pooled(devs, replicas, active)
            lines.append(
                f"| {devs:,} | {active:.0%} | {replicas:,} | {devs / replicas:.1f} "
                f"({pooled['max_k']:.0f} typing) | {pooled['p50']:.3f} | {pooled['p95']:.3f} |"
            )
            log(lines[-1])
    return "\n".join(lines)


def source_texts_or_synthetic() -> list[str]:
    try:
        from bench.team_load import source_texts

        texts = source_texts()
        if texts:
            return texts
    except ImportError:  # the training extra is missing: any Python-looking text will do
        pass
    return [synthetic_text(seed=i) for i in range(8)]


def main() -> int:
    from bench.engine import DEFAULT_CACHE

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--measure", type=Path, help="measure step times into this JSON file")
    parser.add_argument("--threads", type=int, help="onnxruntime threads (measure, replicas)")
    parser.add_argument("--steps", type=Path, help="step times measured before (JSON)")
    parser.add_argument("--size", type=int, nargs="*", default=[], help="developer counts")
    parser.add_argument(
        "--active",
        type=float,
        nargs="+",
        default=[1.0, 0.2],
        help="share of developers typing at the same moment (default 1.0 and 0.2)",
    )
    parser.add_argument("--sim-duration", type=float, default=120.0)
    parser.add_argument("--overhead-ms", type=float, default=5.0)
    parser.add_argument("--validate", action="store_true")
    parser.add_argument("--devs", type=int, default=4, help="typists of --validate")
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--duration", type=float, default=90.0, help="--validate seconds")
    parser.add_argument("--kv-memory", default="4G")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--markdown", type=Path, help="append the tables to this file")
    args = parser.parse_args()

    times: StepTimes | None = None
    if args.measure:
        from bench.engine import ensure_artifact, ensure_checkpoint

        artifact = ensure_artifact(
            args.cache, ensure_checkpoint(args.cache, "350M"), "350M", "int4"
        )
        log(f"measuring step times ({args.threads or 'all'} threads) ...")
        times = measure_steps(artifact, args.threads)
        args.measure.write_text(json.dumps(times.to_json(), indent=1))
        log(f"step times: {times.note}")
    elif args.steps:
        times = StepTimes.from_json(json.loads(args.steps.read_text()))
    if times is None:
        parser.error("give --measure FILE or --steps FILE")
    outputs = []
    if args.validate:
        outputs.append(validate(args, times))
    if args.size:
        outputs.append(sizing_table(args, times))
    output = "\n\n".join(outputs)
    print(output)
    if args.markdown and output:
        with args.markdown.open("a") as handle:
            handle.write(output + "\n\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
