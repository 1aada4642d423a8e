"""The generation engine: a registry entry's fused graph run by onnxruntime.

Why one module over 500 lines: the Engine's loading, its KV slots and its
generation loop share one private state (the slots, the lock, the bound
buffers); splitting them would expose that state between modules. What is
separable lives beside it: sampling.py, generation.py, text.py, batch.py.

The graph contract is docs/model-format.md. One KV buffer per layer, shape
[1, kv_heads, max_length, head_dim], is bound with IOBinding to both
`past_key_values.{i}.*` and `present.{i}.*` (GroupQueryAttention's shared
buffer): the graph writes the new tokens' keys and values in place, so a step
copies nothing. The prompt is prefilled in chunks of `prefill_chunk` tokens;
then one token per run.

Chunked prefill keeps a long prefill cancellable: between chunks the cancel
event and the deadline are checked, and every finished chunk stays in the
session's cache. A request cancelled by the next keystroke therefore leaves
its work behind for that next request, which prefills only the rest: on a
slow CPU a cold 2,000-token file is prefilled across several keystrokes
instead of never.

KV reuse across keystrokes: each named session keeps the token ids whose
keys/values sit in its buffers. A new prompt that shares a prefix with them
prefills only the rest; rewinding to a shorter prefix is free (rotary
positions come from `seqlens_k`, so stale entries past the prefix are simply
overwritten). At least one prompt token is always fed, to get logits.

Sessions are bounded (LRU, by count and by KV memory): a 350M fp32 session
reserves 335 MB of address space (84 MB with an int8 cache). Buffers are
zero-filled numpy arrays (calloc), so untouched pages cost no RAM; an evicted
session's buffers go to the next one.

A prompt longer than max_length - max_new_tokens keeps its tail, cut at a
token boundary; the cut point moves in steps of 1/8 of that budget, so that
consecutive keystrokes in a long file keep the same cut and still reuse the
cache.

Idle prefill (`prefill`, llama.vim's idea): while the user pauses, the
language server feeds the stable head of the next prompt into the document's
session without generating, so the request after the pause prefills only what
is new. It never makes a request wait: it does not queue for the lock (a busy
engine: it returns at once), it runs in small chunks, and between chunks it
stops when its cancel event is set or a generation is waiting for the lock.

One lock per engine serialises generation (a run already uses every core);
`generate` can be called from worker threads while an asyncio loop runs, and
a caller waiting for the lock still honours its cancel event and deadline.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from acepilot.server.engine.generation import Generation, GenerationParams
from acepilot.server.engine.sampling import sample
from acepilot.server.engine.text import IncrementalDecoder, StopScanner
from acepilot.server.errors import RegistryError
from acepilot.server.fim import FimFormat
from acepilot.server.registry import ModelEntry

log = logging.getLogger(__name__)

DEFAULT_MAX_SESSIONS = 4
DEFAULT_KV_MEMORY = 4 << 30  # bytes of KV buffers across sessions (address space; see above)
LOCK_POLL_S = 0.005
DEFAULT_PREFILL_CHUNK = 128  # tokens per prefill run: ~0.5 s for 350M int4 on 2 cores
TRUNCATION_STEPS = 8
NUMPY_DTYPES = {"float32": np.float32, "float16": np.float16, "int8": np.int8}
ORT_TYPES = {"float32": "tensor(float)", "float16": "tensor(float16)", "int8": "tensor(int8)"}
ANONYMOUS = object()  # the slot of session=None calls: always cold
IDLE_PREFILL_CHUNK = 32  # tokens per idle-prefill run: it yields to a request within one


@dataclass(frozen=True)
class Prefilled:
    """What an idle prefill did: the prompt's tokens, those already cached, those fed now.

    `finish_reason`: "done" (the session now holds the whole prompt), "cancelled" (its
    cancel event, or a generation wanted the engine: the chunks fed so far are kept),
    "busy" (the engine was generating: nothing done), "too_long" (the prompt would be
    cut to the model's window, and its cut would not be the request's: nothing done).
    """

    prompt_tokens: int
    reused_tokens: int
    prefilled_tokens: int
    finish_reason: str
    prefill_ms: float = 0.0


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


@dataclass
class _Slot:
    """One session's KV buffers and the token ids whose keys/values they hold."""

    arrays: list[np.ndarray]  # CPU: the memory the OrtValues view; kept alive here
    buffers: dict[str, Any]  # "0.key" -> OrtValue
    binding: Any  # an IOBinding with the buffers (and the logits) bound once
    ids: list[int] = field(default_factory=list)


def end_token_ids(
    eos_token_id: int | None, fim: FimFormat | None, tokenizer: Any
) -> frozenset[int]:
    """The ids that end a generation: EOS, and the FIM format's end-of-middle tokens.

    A FIM model may end the middle with a token that is not its EOS (CodeGen2's
    `<eom>`, Qwen's `<|fim_pad|>`). Special tokens are skipped when decoding, so a
    stop string could never match them: they must end generation by id.
    """
    ids = {eos_token_id} if eos_token_id is not None else set()
    for token in fim.stop if fim is not None else ():
        token_id = tokenizer.token_to_id(token)
        if token_id is not None:
            ids.add(token_id)
    return frozenset(ids)


class Engine:
    """Loads one registry entry and generates completions from it (see module docstring)."""

    def __init__(
        self,
        entry: ModelEntry,
        session: Any,
        tokenizer: Any,
        *,
        device: str = "cpu",
        max_sessions: int = DEFAULT_MAX_SESSIONS,
        kv_memory: int = DEFAULT_KV_MEMORY,
        prefill_chunk: int = DEFAULT_PREFILL_CHUNK,
    ) -> None:
        if prefill_chunk < 1:
            raise ValueError(f"prefill_chunk must be at least 1, got {prefill_chunk}")
        self.prefill_chunk = prefill_chunk
        graph = entry.manifest["graph"]
        self.entry = entry
        self.session = session
        self.tokenizer = tokenizer
        self.device = device
        self.num_layers: int = graph["num_layers"]
        self.num_kv_heads: int = graph["num_kv_heads"]
        self.head_dim: int = graph["head_dim"]
        self.max_length: int = graph["max_length"]
        self.kv_dtype = NUMPY_DTYPES[graph["kv_dtype"]]
        self.vocab_size = check_contract(session, entry)
        token_info = entry.manifest["tokenizer"]
        self.eos_token_id: int | None = token_info.get("eos_token_id")
        self.bos_token_id: int | None = token_info.get("bos_token_id")
        self.end_token_ids = end_token_ids(self.eos_token_id, entry.fim, tokenizer)
        # The graph's vocabulary is padded (CodeGen: 51200 rows, ~50295 tokens):
        # ids the tokenizer cannot decode are never sampled.
        self.tokenizer_vocab = min(
            tokenizer.get_vocab_size(with_added_tokens=True), self.vocab_size
        )
        self.slot_bytes = (
            2
            * self.num_layers
            * self.num_kv_heads
            * self.max_length
            * self.head_dim
            * np.dtype(self.kv_dtype).itemsize
        )
        self.max_sessions = max(1, min(max_sessions, kv_memory // self.slot_bytes))
        self._slots: OrderedDict[Hashable, _Slot] = OrderedDict()
        self._lock = threading.Lock()
        self._waiting = 0  # generations waiting for the lock (an idle prefill yields to them)
        self._waiting_lock = threading.Lock()

    @classmethod
    def load(
        cls,
        entry: ModelEntry,
        threads: int | None = None,
        *,
        max_sessions: int = DEFAULT_MAX_SESSIONS,
        kv_memory: int = DEFAULT_KV_MEMORY,
        verify: bool = True,
        warmup: bool = True,
        device: str | None = None,
        prefill_chunk: int = DEFAULT_PREFILL_CHUNK,
    ) -> Engine:
        """Check the entry's files (sha256), open the graph and the tokenizer.

        `threads`: onnxruntime intra-op threads, default all cores available to
        this process. The CUDA provider is used when the manifest says "cuda"
        and onnxruntime has it; otherwise the CPU provider (with a warning).
        `warmup` runs the graph once, so the user's first completion does not
        pay onnxruntime's first-run costs (~0.5 s for 350M int4 here).
        `device` overrides the manifest: "cpu" forces the CPU provider, "cuda"
        requires the CUDA provider (an error without it); None follows the manifest.
        """
        import onnxruntime as ort
        from tokenizers import Tokenizer

        if verify:
            entry.verify()
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be at least 1, got {threads}")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or available_cores()
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        if device not in (None, "cpu", "cuda"):
            raise ValueError(f"device must be cpu or cuda, got {device!r}")
        if device == "cuda" and "CUDAExecutionProvider" not in ort.get_available_providers():
            raise RegistryError(
                "--device cuda: this onnxruntime has no CUDA provider (install acepilot[gpu])"
            )
        wanted = device or entry.manifest.get("device")
        device = "cpu"
        providers: list[str] = ["CPUExecutionProvider"]
        if wanted == "cuda":
            if "CUDAExecutionProvider" in ort.get_available_providers():
                providers.insert(0, "CUDAExecutionProvider")
                device = "cuda"
            else:
                log.warning(
                    "%s %s was built for CUDA, but this onnxruntime has no CUDA provider "
                    "(install acepilot[gpu]): running on the CPU",
                    entry.name,
                    entry.version,
                )
        try:
            session = ort.InferenceSession(
                str(entry.graph_path), sess_options=options, providers=providers
            )
        except Exception as exc:  # onnxruntime raises its own exception types
            raise RegistryError(
                f"{entry.path}: onnxruntime cannot load {entry.graph_path.name} ({exc})"
            ) from None
        try:
            tokenizer = Tokenizer.from_file(str(entry.tokenizer_path))
        except Exception as exc:  # tokenizers raises a bare Exception
            raise RegistryError(
                f"{entry.path}: cannot load the tokenizer {entry.tokenizer_path.name} ({exc})"
            ) from None
        log.info(
            "loaded %s %s (%s, %s) with %d threads",
            entry.name,
            entry.version,
            entry.manifest.get("precision"),
            device,
            options.intra_op_num_threads,
        )
        engine = cls(
            entry,
            session,
            tokenizer,
            device=device,
            max_sessions=max_sessions,
            kv_memory=kv_memory,
            prefill_chunk=prefill_chunk,
        )
        if warmup:
            engine.warmup()
        return engine

    # ---- public API ------------------------------------------------------

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text).ids)

    def decode(self, ids: Sequence[int]) -> str:
        return str(self.tokenizer.decode(list(ids)))

    def generate(
        self,
        prompt: str | Sequence[int],
        params: GenerationParams | None = None,
        *,
        session: str | None = None,
        cancel: threading.Event | None = None,
        on_token: Callable[[str], None] | None = None,
    ) -> Generation:
        """Complete `prompt` (text, or token ids already encoded). See GenerationParams;
        `on_token` gets the text deltas as they are decoded.

        `session` names a KV cache to reuse (e.g. one per editor document);
        None is a cold run that leaves the named sessions alone.
        """
        params = params or GenerationParams()
        started = time.monotonic()
        end = None if params.deadline is None else started + params.deadline
        if params.max_new_tokens >= self.max_length:
            raise ValueError(
                f"max_new_tokens ({params.max_new_tokens}) must be below the model's "
                f"context length ({self.max_length})"
            )
        ids, truncated = self._prompt_ids(prompt, self.max_length - params.max_new_tokens)
        if not self._acquire(cancel, end):
            reason = self._stopped(cancel, end) or "deadline"
            return Generation("", (), reason, len(ids), 0, 0.0, 0.0, truncated)
        try:
            return self._generate(ids, truncated, params, session, cancel, on_token, end)
        finally:
            self._lock.release()

    def prefill(
        self,
        prompt: str | Sequence[int],
        *,
        session: str,
        max_new_tokens: int = 64,
        cancel: threading.Event | None = None,
        chunk: int = IDLE_PREFILL_CHUNK,
    ) -> Prefilled:
        """Feed `prompt` into `session`'s KV cache without generating (see the module docstring).

        `max_new_tokens` is the next request's: a prompt that request would cut to the
        window is not prefilled. The engine busy: returns at once ("busy").
        """
        if chunk < 1:
            raise ValueError(f"chunk must be at least 1, got {chunk}")
        ids, truncated = self._prompt_ids(prompt, self.max_length - max_new_tokens)
        if truncated:
            return Prefilled(len(ids), 0, 0, "too_long")
        if not self._lock.acquire(blocking=False):
            return Prefilled(len(ids), 0, 0, "busy")
        try:
            slot = self._slot(session)
            reused = common_prefix(slot.ids, ids)
            if reused == len(ids):  # all cached: keep what follows (a completion to accept)
                return Prefilled(len(ids), reused, 0, "done")
            del slot.ids[reused:]
            fed, reason, tick = reused, "done", time.perf_counter()
            while fed < len(ids):
                if (cancel is not None and cancel.is_set()) or self._waiting:
                    reason = "cancelled"
                    break
                part = ids[fed : fed + chunk]
                self._run(slot, part, fed)
                slot.ids.extend(part)
                fed += len(part)
            elapsed = (time.perf_counter() - tick) * 1000
            return Prefilled(len(ids), reused, fed - reused, reason, elapsed)
        finally:
            self._lock.release()

    def warmup(self) -> None:
        """One short cold generation (a prefill and a decode step) to warm onnxruntime up."""
        start = self.bos_token_id if self.bos_token_id is not None else self.eos_token_id
        self.generate([start or 0] * 2, GenerationParams(max_new_tokens=2, ignore_eos=True))

    def sessions(self) -> list[str]:
        """Names of the sessions whose caches are kept, least recently used first."""
        with self._lock:
            return [key for key in self._slots if isinstance(key, str)]

    def drop_session(self, session: str) -> None:
        """Forget a session (its buffers are freed), e.g. when a document closes."""
        with self._lock:
            self._slots.pop(session, None)

    # ---- internals -------------------------------------------------------

    def _prompt_ids(self, prompt: str | Sequence[int], budget: int) -> tuple[list[int], int]:
        if isinstance(prompt, str):
            ids = self.encode(prompt)
        else:
            ids = [int(token) for token in prompt]
            if any(not 0 <= token < self.vocab_size for token in ids):
                raise ValueError(f"prompt token ids must be in [0, {self.vocab_size})")
        if not ids:
            start = self.bos_token_id if self.bos_token_id is not None else self.eos_token_id
            if start is None:
                raise ValueError("empty prompt, and the tokenizer has no BOS token to start from")
            return [start], 0
        if len(ids) <= budget:
            return ids, 0
        step = max(1, budget // TRUNCATION_STEPS)
        cut = -(-(len(ids) - budget) // step) * step  # rounded up to a multiple of step
        return ids[cut:], cut

    def _acquire(self, cancel: threading.Event | None, end: float | None) -> bool:
        if self._lock.acquire(blocking=False):
            return True
        with self._waiting_lock:
            self._waiting += 1  # seen by an idle prefill between its chunks: it stops
        try:
            while not self._lock.acquire(timeout=LOCK_POLL_S):
                if cancel is not None and cancel.is_set():
                    return False
                if end is not None and time.monotonic() >= end:
                    return False
            return True
        finally:
            with self._waiting_lock:
                self._waiting -= 1

    def _generate(
        self,
        ids: list[int],
        truncated: int,
        params: GenerationParams,
        session: str | None,
        cancel: threading.Event | None,
        on_token: Callable[[str], None] | None,
        end: float | None,
    ) -> Generation:
        slot = self._slot(ANONYMOUS if session is None else session)
        if session is None:
            slot.ids = []
        reused = min(common_prefix(slot.ids, ids), len(ids) - 1)

        def result(reason: str, text: str = "", prefill: float = 0.0) -> Generation:
            return Generation(
                text, tuple(tokens), reason, len(ids), reused, prefill, decode_s * 1000, truncated
            )

        tokens: list[int] = []
        decode_s = 0.0
        stopped = self._stopped(cancel, end)
        if stopped:
            return result(stopped)

        tick = time.perf_counter()
        del slot.ids[reused:]  # if a run fails, the cache holds only what is valid
        fed = reused
        while True:
            chunk = ids[fed : fed + self.prefill_chunk]
            logits = self._run(slot, chunk, fed)
            slot.ids.extend(chunk)  # committed: a cancelled request leaves it for the next
            fed += len(chunk)
            if fed == len(ids):
                break
            stopped = self._stopped(cancel, end)
            if stopped:
                return result(stopped, prefill=(time.perf_counter() - tick) * 1000)
        prefill_ms = (time.perf_counter() - tick) * 1000

        rng = np.random.default_rng(params.seed)
        decoder = IncrementalDecoder(self.tokenizer, ids)
        scanner = StopScanner(params.stop)
        step_s = 0.0
        reason = "length"
        while True:
            if cancel is not None and cancel.is_set():
                reason = "cancelled"
                break
            token = sample(logits[: self.tokenizer_vocab], params.temperature, params.top_p, rng)
            if token in self.end_token_ids and not params.ignore_eos:
                reason = "eos"
                break
            tokens.append(token)
            streamed = scanner.add(decoder.push(token))
            if streamed and on_token is not None:
                on_token(streamed)
            if scanner.stopped:
                reason = "stop"
                break
            if len(tokens) >= params.max_new_tokens:
                break
            # Stop now if the next step would end after the deadline.
            if end is not None and time.monotonic() + step_s >= end:
                reason = "deadline"
                break
            if cancel is not None and cancel.is_set():
                reason = "cancelled"
                break
            tick = time.perf_counter()
            logits = self._run(slot, [token], len(slot.ids))
            slot.ids.append(token)
            step_s = time.perf_counter() - tick
            decode_s += step_s
        if not scanner.stopped:
            # Text still held back: a partial character, or a tail that could have begun
            # a stop sequence. The flushed text may itself complete a stop sequence.
            tail = scanner.add(decoder.flush())
            if scanner.stopped:
                reason = "stop"
            tail += scanner.finish()
            if tail and on_token is not None:
                on_token(tail)
        return result(reason, scanner.text, prefill_ms)

    @staticmethod
    def _stopped(cancel: threading.Event | None, end: float | None) -> str | None:
        if cancel is not None and cancel.is_set():
            return "cancelled"
        if end is not None and time.monotonic() >= end:
            return "deadline"
        return None

    def _slot(self, key: Hashable) -> _Slot:
        slot = self._slots.get(key)
        if slot is not None:
            self._slots.move_to_end(key)
            return slot
        if len(self._slots) >= self.max_sessions:
            _, evicted = self._slots.popitem(last=False)
            slot = _Slot(evicted.arrays, evicted.buffers, evicted.binding)
        else:
            slot = self._new_slot()
        self._slots[key] = slot
        return slot

    def _new_slot(self) -> _Slot:
        import onnxruntime as ort

        shape = (1, self.num_kv_heads, self.max_length, self.head_dim)
        binding = self.session.io_binding()
        arrays: list[np.ndarray] = []
        buffers: dict[str, Any] = {}
        if self.device == "cpu":
            logits = np.zeros((1, 1, self.vocab_size), dtype=np.float32)
            arrays.append(logits)
            binding.bind_ortvalue_output("logits", ort.OrtValue.ortvalue_from_numpy(logits))
        else:
            binding.bind_output("logits", self.device)
        for layer in range(self.num_layers):
            for kind in ("key", "value"):
                if self.device == "cpu":
                    array = np.zeros(shape, dtype=self.kv_dtype)  # calloc: pages on first write
                    arrays.append(array)
                    buffer = ort.OrtValue.ortvalue_from_numpy(array)
                else:
                    buffer = ort.OrtValue.ortvalue_from_shape_and_type(
                        shape, self.kv_dtype, self.device, 0
                    )
                buffers[f"{layer}.{kind}"] = buffer
                binding.bind_ortvalue_input(f"past_key_values.{layer}.{kind}", buffer)
                binding.bind_ortvalue_output(f"present.{layer}.{kind}", buffer)
        return _Slot(arrays, buffers, binding)

    def _run(self, slot: _Slot, feed: Sequence[int], cached: int) -> np.ndarray:
        """Write `feed`'s keys/values at [cached, cached + len(feed)); the last logits."""
        total = cached + len(feed)
        binding = slot.binding
        binding.bind_cpu_input("input_ids", np.asarray([feed], dtype=np.int64))
        binding.bind_cpu_input("seqlens_k", np.asarray([total - 1], dtype=np.int32))
        binding.bind_cpu_input("total_sequence_length", np.asarray(total, dtype=np.int32))
        self.session.run_with_iobinding(binding)
        if self.device == "cpu":
            logits: np.ndarray = slot.arrays[0][0, -1]
            return logits.copy()
        output: np.ndarray = binding.get_outputs()[0].numpy()
        return output[0, -1].astype(np.float32)


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two id lists."""
    limit = min(len(a), len(b))
    if limit == 0:
        return 0
    left = np.asarray(a[:limit])
    right = np.asarray(b[:limit])
    differ = np.flatnonzero(left != right)
    return int(differ[0]) if differ.size else limit


def check_contract(session: Any, entry: ModelEntry) -> int:
    """The graph's inputs/outputs against docs/model-format.md; returns the vocabulary size."""
    graph = entry.manifest["graph"]
    inputs = {node.name: node for node in session.get_inputs()}
    outputs = {node.name: node for node in session.get_outputs()}
    expected_in = ["input_ids", "seqlens_k", "total_sequence_length"]
    expected_out = ["logits"]
    for layer in range(graph["num_layers"]):
        for kind in ("key", "value"):
            expected_in.append(f"past_key_values.{layer}.{kind}")
            expected_out.append(f"present.{layer}.{kind}")
    missing = [name for name in expected_in if name not in inputs]
    missing += [name for name in expected_out if name not in outputs]
    if missing:
        raise RegistryError(
            f"{entry.path}: the graph does not match its manifest or the model format "
            f"(missing {', '.join(missing[:4])}{'...' if len(missing) > 4 else ''})"
        )
    kv = inputs["past_key_values.0.key"]
    if kv.type != ORT_TYPES[graph["kv_dtype"]]:
        raise RegistryError(
            f"{entry.path}: the graph's KV cache is {kv.type}, the manifest says {graph['kv_dtype']}"
        )
    want = [None, graph["num_kv_heads"], graph["max_length"], graph["head_dim"]]
    for axis, (have, expected) in enumerate(zip(kv.shape, want, strict=False)):
        if expected is not None and isinstance(have, int) and have != expected:
            raise RegistryError(
                f"{entry.path}: KV cache axis {axis} is {have} in the graph, {expected} in the manifest"
            )
    vocab = outputs["logits"].shape[-1]
    if not isinstance(vocab, int):
        vocab = entry.manifest.get("config", {}).get("vocab_size")
    if not isinstance(vocab, int) or vocab <= 0:
        raise RegistryError(f"{entry.path}: cannot tell the vocabulary size of the logits")
    return vocab
