"""Continuous batching: many concurrent generations share the graph's forward passes.

Why one module over 600 lines: the scheduler thread, its rows and the step that
joins, advances and retires them share one lock and one set of invariants (a row's
KV slot, its position, its cancel flag); split apart, each half would have to
re-check what the other guarantees.

`Engine` runs one generation at a time (one lock). A team server gets many
concurrent requests, and on every device one forward pass over 16 rows costs
far less than 16 passes over one row (the weights are read once). The
`BatchEngine` keeps one KV buffer per layer of shape
[rows, kv_heads, max_length, head_dim]; a row is one user's cache (per-user
KV reuse, LRU, bounded by KV memory), and one scheduler thread runs:

- admission at token boundaries: a queued request takes a free row (its
  user's row when that still holds a prefix of the prompt, so only the new
  tokens are prefilled); a finished one leaves, and its row keeps its cache;
- prefill, one request at a time (GroupQueryAttention only accepts batch 1
  when new tokens meet a non-empty cache), in chunks of `prefill_chunk`
  tokens so that running generations wait for at most one chunk;
- decode steps: every generating row feeds its last token in one run.
  Rows are ragged: `seqlens_k` carries each row's own length, so no padding.
  The rows of a run must be contiguous in the buffer (the graph takes one
  tensor): before each step the generating rows are moved together by
  swapping slot contents (`slots.compaction_moves`: a copy of the valid
  positions once, where an idle row riding along would cost a row of
  compute every step). Where rows cannot be moved (device buffers), idle
  rows between generating ones ride along as dummies that write one
  throw-away position past their valid cache, unless the gap is large
  enough that two runs are cheaper (`MAX_GAP`).

Buffers are bound by raw pointer (IOBinding with an offset into the big
buffer), so a window of rows is a view: nothing is copied, and past/present
share the buffer exactly as in `Engine`. Greedy results are those of
`Engine.generate` token for token (same prefill, same sampling code).

`generate` is a blocking, Engine-like call for threads; `submit` returns a
`BatchTicket` at once for servers (results and streamed text arrive through
callbacks on the scheduler thread: keep them short).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from acepilot.server.engine.engine import Engine, common_prefix
from acepilot.server.engine.generation import Generation, GenerationParams
from acepilot.server.engine.sampling import sample
from acepilot.server.engine.slots import compaction_moves, swap_slots, windows
from acepilot.server.engine.text import IncrementalDecoder, StopScanner

log = logging.getLogger(__name__)

DEFAULT_MAX_BATCH = 16
DEFAULT_PREFILL_CHUNK = 256
DEFAULT_MAX_QUEUE = 64
# A prompt that adds at most this many tokens to a row's cache while other rows
# decode is fed through the decode steps (one token per step) instead of its own
# prefill run: on CPU a run costs about as much as a decode step of a small batch
# (the weights are read either way), while a row of a batched step costs a fraction.
DEFAULT_INLINE_PREFILL = 8
DEFAULT_BATCH_KV_MEMORY = 8 << 30
# Two windows instead of one when more idle rows than this lie between generating
# ones: a dummy row costs about a quarter of a run's fixed cost (weights read once).
MAX_GAP = 4
IDLE_WAIT_S = 0.05


class QueueFull(Exception):
    """The engine's queue is at its bound: the caller should answer 503."""


@dataclass(eq=False)
class BatchTicket:
    """One submitted generation: its inputs, its progress, and how it ended.

    `cancel` stops it at the next token boundary (or while it waits in the
    queue). `done` is set when `result` (or `error`) is ready; `on_done` is
    called on the scheduler thread at the same moment.
    """

    ids: list[int]
    truncated: int
    params: GenerationParams
    session: Hashable | None
    on_token: Callable[[str], None] | None
    on_done: Callable[[BatchTicket], None] | None
    cancel: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    submitted: float = field(default_factory=time.monotonic)
    admitted: float | None = None  # when it left the queue (None: it never did)
    end: float | None = None  # the deadline, monotonic
    result: Generation | None = None
    error: BaseException | None = None

    @property
    def queue_s(self) -> float:
        return (self.admitted or time.monotonic()) - self.submitted


@dataclass(eq=False)
class _Active:
    """A ticket being served on a row."""

    ticket: BatchTicket
    reused: int
    pending: list[int]  # prompt tokens still to prefill
    decoder: IncrementalDecoder
    scanner: StopScanner
    rng: np.random.Generator
    inline: bool = False  # pending tokens ride along in decode steps, one per step
    tokens: list[int] = field(default_factory=list)
    feed: int = -1  # the token the next decode step feeds
    prefill_s: float = 0.0
    decode_s: float = 0.0
    step_s: float = 0.0


@dataclass(eq=False)
class _Row:
    index: int
    ids: list[int] = field(default_factory=list)  # tokens whose keys/values the row holds
    key: Hashable | None = None  # the session that owns the cache
    active: _Active | None = None


class BatchEngine:
    """Continuous batching over an `Engine`'s graph and tokenizer (see module docstring)."""

    def __init__(
        self,
        engine: Engine,
        *,
        max_batch: int = DEFAULT_MAX_BATCH,
        kv_memory: int = DEFAULT_BATCH_KV_MEMORY,
        max_rows: int | None = None,
        prefill_chunk: int = DEFAULT_PREFILL_CHUNK,
        max_queue: int = DEFAULT_MAX_QUEUE,
        inline_prefill: int = DEFAULT_INLINE_PREFILL,
        on_step: Callable[[int], None] | None = None,
    ) -> None:
        if max_batch < 1 or prefill_chunk < 1 or max_queue < 1:
            raise ValueError("max_batch, prefill_chunk and max_queue must be at least 1")
        self.engine = engine
        self.entry = engine.entry
        self.tokenizer = engine.tokenizer
        self.device = engine.device
        self.max_length = engine.max_length
        rows = max(1, kv_memory // engine.slot_bytes)
        if max_rows is not None:
            rows = min(rows, max_rows)
        self.num_rows = max(1, rows)
        self.max_batch = min(max_batch, self.num_rows)
        self.prefill_chunk = prefill_chunk
        self.max_queue = max_queue
        self.inline_prefill = inline_prefill if self.max_batch > 1 else 0
        self.on_step = on_step
        self.inline_prefills = 0  # prompts fed through decode steps (see DEFAULT_INLINE_PREFILL)
        self.row_moves = 0  # slot swaps that brought generating rows together
        self.dummy_rows = 0  # idle rows computed in decode steps (holes that were not closed)
        self._rows = [_Row(index) for index in range(self.num_rows)]
        self._by_key: OrderedDict[Hashable, _Row] = OrderedDict()  # least recently used first
        self._queue: deque[BatchTicket] = deque()
        self._prefilling: deque[_Row] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._allocate()
        self._thread = threading.Thread(
            target=self._loop, name=f"acepilot-batch-{engine.entry.version}", daemon=True
        )
        self._thread.start()

    # ---- public API ------------------------------------------------------

    def encode(self, text: str) -> list[int]:
        """The engine's token ids of `text`, without holding the GIL while tokenizing.

        tokenizers' single-text `encode` keeps the GIL for the whole text (a
        920 KB prompt: ~0.6 s in which no other Python thread, such as a
        server's event loop, runs); its batch API releases it. Same ids.
        """
        return list(self.engine.tokenizer.encode_batch([text])[0].ids)

    def decode(self, ids: Sequence[int]) -> str:
        return self.engine.decode(ids)

    def submit(
        self,
        prompt: str | Sequence[int],
        params: GenerationParams | None = None,
        *,
        session: Hashable | None = None,
        on_token: Callable[[str], None] | None = None,
        on_done: Callable[[BatchTicket], None] | None = None,
    ) -> BatchTicket:
        """Queue a generation; raises QueueFull at the bound, ValueError on bad input."""
        params = params or GenerationParams()
        if params.max_new_tokens >= self.max_length:
            raise ValueError(
                f"max_new_tokens ({params.max_new_tokens}) must be below the model's "
                f"context length ({self.max_length})"
            )
        ids, truncated = self.engine._prompt_ids(prompt, self.max_length - params.max_new_tokens)
        ticket = BatchTicket(ids, truncated, params, session, on_token, on_done)
        if params.deadline is not None:
            ticket.end = ticket.submitted + params.deadline
        with self._cond:
            if self._closed:
                raise RuntimeError("the batch engine is closed")
            if len(self._queue) >= self.max_queue:
                raise QueueFull(f"{len(self._queue)} requests are waiting")
            self._queue.append(ticket)
            self._cond.notify()
        return ticket

    def generate(
        self,
        prompt: str | Sequence[int],
        params: GenerationParams | None = None,
        *,
        session: Hashable | None = None,
        cancel: threading.Event | None = None,
        on_token: Callable[[str], None] | None = None,
    ) -> Generation:
        """Like `Engine.generate`, but sharing forward passes with concurrent callers."""
        ticket = self.submit(prompt, params, session=session, on_token=on_token)
        while not ticket.done.wait(0.01):
            if cancel is not None and cancel.is_set():
                ticket.cancel.set()
        if ticket.error is not None:
            raise ticket.error
        assert ticket.result is not None
        return ticket.result

    def queue_length(self) -> int:
        with self._cond:
            return len(self._queue)

    def active(self) -> int:
        """Generations on rows now (prefilling or decoding)."""
        with self._cond:
            return sum(1 for row in self._rows if row.active is not None)

    def sessions(self) -> list[Hashable]:
        """Sessions whose caches are kept, least recently used first."""
        with self._cond:
            return list(self._by_key)

    def drop_session(self, session: Hashable) -> None:
        with self._cond:
            row = self._by_key.pop(session, None)
            if row is not None:
                row.key = None
                if row.active is None:
                    row.ids = []

    def close(self) -> None:
        """Stop the scheduler: queued and running generations end as "cancelled"."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if threading.current_thread() is not self._thread:
            self._thread.join()

    # ---- buffers ---------------------------------------------------------

    def _allocate(self) -> None:
        """One [rows, heads, max_length, head_dim] buffer per layer and kind.

        CPU: zero-filled numpy (calloc: a page costs RAM once a row writes it).
        Other devices: one OrtValue each, addressed by pointer the same way.
        """
        engine = self.engine
        shape = (self.num_rows, engine.num_kv_heads, engine.max_length, engine.head_dim)
        self.row_bytes = (
            engine.num_kv_heads
            * engine.max_length
            * engine.head_dim
            * np.dtype(engine.kv_dtype).itemsize
        )
        self._arrays: list[Any] = []
        self._pointers: list[int] = []
        for _ in range(engine.num_layers * 2):
            if self.device == "cpu":
                array = np.zeros(shape, dtype=engine.kv_dtype)
                self._arrays.append(array)
                self._pointers.append(int(array.ctypes.data))
            else:
                import onnxruntime as ort

                value = ort.OrtValue.ortvalue_from_shape_and_type(
                    list(shape), engine.kv_dtype, self.device, 0
                )
                self._arrays.append(value)
                self._pointers.append(int(value.data_ptr()))
        self._logits = np.zeros((self.num_rows, 1, engine.vocab_size), dtype=np.float32)
        self._scratch = np.empty(shape[1:], dtype=engine.kv_dtype)  # see slots.swap_slots

    def _run(self, lo: int, feeds: list[list[int]], totals: list[int]) -> np.ndarray:
        """One forward pass over rows [lo, lo + len(feeds)); each row's last logits."""
        engine = self.engine
        count = len(feeds)
        kv_shape = [count, engine.num_kv_heads, engine.max_length, engine.head_dim]
        binding = engine.session.io_binding()
        position = 0
        for layer in range(engine.num_layers):
            for kind in ("key", "value"):
                pointer = self._pointers[position] + lo * self.row_bytes
                position += 1
                binding.bind_input(
                    f"past_key_values.{layer}.{kind}",
                    self.device,
                    0,
                    engine.kv_dtype,
                    kv_shape,
                    pointer,
                )
                binding.bind_output(
                    f"present.{layer}.{kind}", self.device, 0, engine.kv_dtype, kv_shape, pointer
                )
        if self.device == "cpu":
            binding.bind_output(
                "logits",
                "cpu",
                0,
                np.float32,
                [count, 1, engine.vocab_size],
                int(self._logits.ctypes.data),
            )
        else:
            binding.bind_output("logits", self.device)
        binding.bind_cpu_input("input_ids", np.asarray(feeds, dtype=np.int64))
        binding.bind_cpu_input("seqlens_k", np.asarray([t - 1 for t in totals], dtype=np.int32))
        binding.bind_cpu_input("total_sequence_length", np.asarray(max(totals), dtype=np.int32))
        engine.session.run_with_iobinding(binding)
        if self.device == "cpu":
            return self._logits[:count, 0].copy()
        output: np.ndarray = binding.get_outputs()[0].numpy()
        return output[:, 0].astype(np.float32)

    # ---- scheduler -------------------------------------------------------

    def _loop(self) -> None:
        try:
            while True:
                with self._cond:
                    if self._closed:
                        break
                    self._expire_queue()
                    self._admit()
                    busy = any(row.active is not None for row in self._rows)
                    if not busy:
                        self._cond.wait(IDLE_WAIT_S)
                        continue
                self._check_running()
                if self._prefilling:
                    self._prefill_chunk(self._prefilling[0])
                self._decode_step()
        except BaseException as exc:  # pragma: no cover - a bug or onnxruntime failure
            log.exception("batch scheduler failed")
            self._fail_all(exc)
            return
        self._fail_all(None)

    def _fail_all(self, exc: BaseException | None) -> None:
        """End everything still queued or running (closing, or the scheduler died)."""
        with self._cond:
            self._closed = True
            queued = list(self._queue)
            self._queue.clear()
        for ticket in queued:
            self._finish_ticket(ticket, self._empty(ticket, "cancelled"), exc)
        for row in self._rows:
            if row.active is not None:
                self._finish(row, "cancelled", exc)

    def _expire_queue(self) -> None:
        now = time.monotonic()
        for ticket in [t for t in self._queue if t.cancel.is_set() or (t.end and now >= t.end)]:
            self._queue.remove(ticket)
            reason = "cancelled" if ticket.cancel.is_set() else "deadline"
            self._finish_ticket(ticket, self._empty(ticket, reason), None)

    def _admit(self) -> None:
        """Move queued tickets onto rows (FIFO) while the batch has room."""
        while self._queue:
            running = sum(1 for row in self._rows if row.active is not None)
            if running >= self.max_batch:
                return
            ticket = self._queue[0]
            row = self._choose_row(ticket.session)
            if row is None:
                return
            self._queue.popleft()
            ticket.admitted = time.monotonic()
            if ticket.session is None:
                row.ids = []  # a cold run, as Engine does for session=None
            ids = ticket.ids
            reused = min(common_prefix(row.ids, ids), len(ids) - 1)
            del row.ids[reused:]  # the cache now holds only what is valid for this prompt
            params = ticket.params
            pending = list(ids[reused:])
            decoding = any(
                r.active is not None and (r.active.inline or not r.active.pending)
                for r in self._rows
            )
            row.active = _Active(
                ticket,
                reused,
                pending,
                IncrementalDecoder(self.tokenizer, ids),
                StopScanner(params.stop),
                np.random.default_rng(params.seed),
                inline=decoding and len(pending) <= self.inline_prefill,
            )
            if row.active.inline:
                self.inline_prefills += 1
            else:
                self._prefilling.append(row)

    def _choose_row(self, key: Hashable | None) -> _Row | None:
        """The session's own row, else a free one, else the least recently used idle cache."""
        if key is not None:
            own = self._by_key.get(key)
            if own is not None:
                if own.active is None:
                    self._by_key.move_to_end(key)
                    return own
                # The same user's previous request still runs (it is being cancelled):
                # this one gets a fresh row, which becomes the user's cache.
                del self._by_key[key]
                own.key = None
        free = [row for row in self._rows if row.active is None and row.key is None]
        row: _Row | None = free[0] if free else None  # the lowest index: compact windows
        if row is None:
            row = next((r for r in self._by_key.values() if r.active is None), None)
            if row is None:
                return None
            assert row.key is not None
            del self._by_key[row.key]
            row.key = None
            row.ids = []
        if key is not None:
            row.key = key
            self._by_key[key] = row
        return row

    def _check_running(self) -> None:
        now = time.monotonic()
        for row in self._rows:
            active = row.active
            if active is None:
                continue
            if active.ticket.cancel.is_set():
                self._finish(row, "cancelled")
            elif active.ticket.end is not None and now >= active.ticket.end:
                self._finish(row, "deadline")

    def _prefill_chunk(self, row: _Row) -> None:
        active = row.active
        assert active is not None
        chunk = active.pending[: self.prefill_chunk]
        tick = time.perf_counter()
        logits = self._run(row.index, [chunk], [len(row.ids) + len(chunk)])
        row.ids.extend(chunk)
        del active.pending[: len(chunk)]
        active.prefill_s += time.perf_counter() - tick
        if not active.pending:
            self._prefilling.popleft()
            self._advance(row, logits[0])

    def _compact(self, rows: list[_Row]) -> None:
        """Swap slots so that the generating `rows` sit side by side (see slots.py).

        A `_Row` keeps its identity (session, cache, progress) and moves with its
        data; only its `index` changes. Device buffers are not moved (no host
        copy of a slice): there the holes ride along as dummies.
        """
        if self.device != "cpu":
            return
        for outside, hole in compaction_moves([row.index for row in rows], self.num_rows):
            moving, parked = self._rows[outside], self._rows[hole]
            swap_slots(self._arrays, outside, hole, len(moving.ids), len(parked.ids), self._scratch)
            with self._cond:
                self._rows[outside], self._rows[hole] = parked, moving
                moving.index, parked.index = hole, outside
            self.row_moves += 1

    def _decode_step(self) -> None:
        rows = [row for row in self._rows if row.active is not None and _steps(row.active)]
        if not rows:
            return
        tick = time.perf_counter()
        self._compact(rows)
        results: list[tuple[_Row, np.ndarray]] = []
        for lo, hi in windows([row.index for row in rows], MAX_GAP):
            feeds: list[list[int]] = []
            totals: list[int] = []
            for index in range(lo, hi):
                row = self._rows[index]
                active = row.active
                if active is not None and _steps(active):
                    feeds.append([active.pending[0] if active.pending else active.feed])
                    totals.append(len(row.ids) + 1)
                else:
                    # A dummy: writes one position past the row's valid cache.
                    self.dummy_rows += 1
                    if len(row.ids) >= self.max_length:
                        del row.ids[self.max_length - 1 :]
                    feeds.append([0])
                    totals.append(len(row.ids) + 1)
            logits = self._run(lo, feeds, totals)
            for index in range(lo, hi):
                row = self._rows[index]
                if row in rows:
                    results.append((row, logits[index - lo]))
        step_s = time.perf_counter() - tick
        if self.on_step is not None:
            self.on_step(len(rows))
        for row, row_logits in results:
            active = row.active
            assert active is not None
            active.step_s = step_s
            if active.pending:  # an inline prompt token
                row.ids.append(active.pending.pop(0))
                active.prefill_s += step_s
                if active.pending:
                    continue
            else:
                row.ids.append(active.feed)
                active.decode_s += step_s
            self._advance(row, row_logits)

    def _advance(self, row: _Row, logits: np.ndarray) -> None:
        """Sample the next token from `logits`; finish the generation or feed the token.

        The same checks in the same order as `Engine._generate`'s loop.
        """
        active = row.active
        assert active is not None
        ticket = active.ticket
        params = ticket.params
        if ticket.cancel.is_set():
            self._finish(row, "cancelled")
            return
        token = sample(
            logits[: self.engine.tokenizer_vocab], params.temperature, params.top_p, active.rng
        )
        if token in self.engine.end_token_ids and not params.ignore_eos:
            self._finish(row, "eos")
            return
        active.tokens.append(token)
        streamed = active.scanner.add(active.decoder.push(token))
        if streamed and ticket.on_token is not None:
            ticket.on_token(streamed)
        if active.scanner.stopped:
            self._finish(row, "stop")
            return
        if len(active.tokens) >= params.max_new_tokens:
            self._finish(row, "length")
            return
        if ticket.end is not None and time.monotonic() + active.step_s >= ticket.end:
            self._finish(row, "deadline")
            return
        if ticket.cancel.is_set():
            self._finish(row, "cancelled")
            return
        active.feed = token

    def _finish(self, row: _Row, reason: str, error: BaseException | None = None) -> None:
        active = row.active
        assert active is not None
        row.active = None
        if row in self._prefilling:  # cancelled mid-prefill: the row keeps what was prefilled
            self._prefilling.remove(row)
        if row.key is None:
            row.ids = []  # an anonymous or disowned row: nothing worth keeping
        ticket = active.ticket
        scanner = active.scanner
        if not scanner.stopped:
            tail = scanner.add(active.decoder.flush())
            if scanner.stopped:
                reason = "stop"
            tail += scanner.finish()
            if tail and ticket.on_token is not None:
                ticket.on_token(tail)
        result = Generation(
            scanner.text,
            tuple(active.tokens),
            reason,
            len(ticket.ids),
            active.reused,
            active.prefill_s * 1000,
            active.decode_s * 1000,
            ticket.truncated,
        )
        self._finish_ticket(ticket, result, error)

    @staticmethod
    def _empty(ticket: BatchTicket, reason: str) -> Generation:
        return Generation("", (), reason, len(ticket.ids), 0, 0.0, 0.0, ticket.truncated)

    @staticmethod
    def _finish_ticket(
        ticket: BatchTicket, result: Generation, error: BaseException | None
    ) -> None:
        ticket.result = result
        ticket.error = error
        ticket.done.set()
        if ticket.on_done is not None:
            try:
                ticket.on_done(ticket)
            except Exception:  # a caller's callback must not stop the scheduler
                log.exception("on_done callback failed")


def _steps(active: _Active) -> bool:
    """Whether a generation takes part in decode steps now."""
    return (active.inline and bool(active.pending)) or (not active.pending and active.feed >= 0)
