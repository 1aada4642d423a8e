"""The generation engine on a real built model (onnxruntime, no mocks)."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from engine_fixtures import built_tiny_entry, built_tiny_registry  # noqa: F401

from acepilot.server.engine import Engine, Generation, GenerationParams
from acepilot.server.engine.engine import common_prefix
from acepilot.server.engine.sampling import nucleus, sample
from acepilot.server.engine.text import IncrementalDecoder, StopScanner
from acepilot.server.errors import RegistryError
from acepilot.server.registry import ModelEntry

PROMPT = "import os\n\n\ndef read_lines(path):\n    with open(path) as handle:\n        "
GREEDY = GenerationParams(max_new_tokens=24)


@pytest.fixture(scope="module")
def engine(built_tiny_entry: ModelEntry) -> Iterator[Engine]:  # noqa: F811
    yield Engine.load(built_tiny_entry, threads=2)


def fed_back(result: Generation) -> tuple[int, ...]:
    """The generated tokens whose keys/values the cache holds: all but the last sampled
    one (the step that produced EOS did feed the last one)."""
    return result.token_ids if result.finish_reason == "eos" else result.token_ids[:-1]


def cold(engine: Engine, prompt: str, params: GenerationParams = GREEDY) -> Generation:
    return engine.generate(prompt, params)


# ---- KV-cache reuse ----------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (PROMPT, PROMPT + "return handle.read"),  # the user typed on
        (PROMPT + "return handle.read", PROMPT + "ret"),  # backspace: rewind
        (PROMPT, PROMPT),  # the same request again
        (PROMPT.replace("import os", "import re"), PROMPT),  # an edit near the top
        ("def f(x):\n    return x\n" * 6, "def f(x):\n    return x\n" * 6 + "def g(y):\n"),
    ],
)
def test_prefix_reuse_gives_the_same_tokens_as_a_cold_run(engine, first, second) -> None:
    expected = cold(engine, second)
    session = f"reuse-{hash((first, second))}"
    before = engine.generate(first, GREEDY, session=session)
    warm = engine.generate(second, GREEDY, session=session)
    assert warm.token_ids == expected.token_ids
    assert warm.text == expected.text
    ids_first, ids_second = engine.encode(first), engine.encode(second)
    cached = ids_first + list(fed_back(before))  # generated tokens are in the cache too
    assert warm.reused_tokens == min(common_prefix(cached, ids_second), len(ids_second) - 1)
    assert expected.reused_tokens == 0
    if second.startswith(first) or first.startswith(second):
        # Only tokens at the junction are re-fed (BPE may merge across it differently).
        assert warm.reused_tokens >= min(len(ids_first), len(ids_second)) - 4


def test_reuse_after_an_accepted_completion(engine) -> None:
    """The cache holds the generated tokens too; the next prompt reuses what still matches."""
    prompt = PROMPT.rstrip()
    session = "accepted"
    first = engine.generate(prompt, GREEDY, session=session)
    accepted = prompt + first.text + "\n"
    expected = cold(engine, accepted)
    warm = engine.generate(accepted, GREEDY, session=session)
    assert warm.token_ids == expected.token_ids
    cached = engine.encode(prompt) + list(fed_back(first))
    assert warm.reused_tokens == min(
        common_prefix(cached, engine.encode(accepted)), warm.prompt_tokens - 1
    )
    assert warm.reused_tokens >= len(engine.encode(prompt)) - 2


def test_sessions_are_bounded_least_recently_used_first(built_tiny_entry) -> None:  # noqa: F811
    engine = Engine.load(built_tiny_entry, threads=1, max_sessions=2, verify=False)
    for name in ("a", "b"):
        engine.generate(PROMPT, GREEDY, session=name)
    assert engine.generate(PROMPT, GREEDY, session="a").reused_tokens > 0  # a is now newest
    engine.generate(PROMPT, GREEDY, session="c")  # evicts b, the least recently used
    assert engine.sessions() == ["a", "c"]
    again = engine.generate(PROMPT, GREEDY, session="b")
    assert again.reused_tokens == 0
    assert again.token_ids == cold(engine, PROMPT).token_ids
    engine.drop_session("b")
    assert "b" not in engine.sessions()


def test_kv_memory_bounds_the_number_of_sessions(built_tiny_entry) -> None:  # noqa: F811
    probe = Engine.load(built_tiny_entry, threads=1, verify=False)
    engine = Engine.load(
        built_tiny_entry, threads=1, max_sessions=8, kv_memory=probe.slot_bytes * 3, verify=False
    )
    assert engine.max_sessions == 3
    tiny_budget = Engine.load(built_tiny_entry, threads=1, kv_memory=1, verify=False)
    assert tiny_budget.max_sessions == 1  # always at least one


def test_a_too_long_prompt_keeps_its_tail_and_still_reuses(engine) -> None:
    max_length = engine.max_length
    params = GenerationParams(max_new_tokens=16)
    long_prompt = "".join(f"value_{i} = {i} * 2\n" for i in range(max_length))
    result = engine.generate(long_prompt, params, session="long")
    budget = max_length - params.max_new_tokens
    assert result.truncated_tokens > 0
    assert result.prompt_tokens <= budget
    assert result.truncated_tokens + result.prompt_tokens == len(engine.encode(long_prompt))
    # The cut moves in coarse steps, so typing on at the end keeps the cache useful.
    typed = engine.generate(long_prompt + "value_x", params, session="long")
    assert typed.truncated_tokens == result.truncated_tokens
    assert typed.reused_tokens >= result.prompt_tokens - 1


def test_an_empty_prompt_starts_from_bos(engine) -> None:
    result = engine.generate("", GenerationParams(max_new_tokens=4))
    assert result.prompt_tokens == 1
    assert result.finish_reason in ("length", "eos")


# ---- stopping -----------------------------------------------------------------


def test_deadline_stops_generation_promptly(engine) -> None:
    params = GenerationParams(max_new_tokens=engine.max_length // 2, deadline=0.15, ignore_eos=True)
    started = time.monotonic()
    # A slow consumer makes every token take ~10 ms, so the budget runs out mid-way.
    result = engine.generate(PROMPT, params, on_token=lambda _: time.sleep(0.01))
    elapsed = time.monotonic() - started
    assert result.finish_reason == "deadline"
    assert 0 < len(result.token_ids) < params.max_new_tokens
    assert elapsed < 0.15 + 0.1  # at most about one step late, even on a busy machine


def test_an_expired_deadline_generates_nothing(engine) -> None:
    result = engine.generate(PROMPT, GenerationParams(deadline=0.0), session="expired")
    assert (result.finish_reason, result.token_ids, result.text) == ("deadline", (), "")


def test_cancellation_between_tokens(engine) -> None:
    cancel = threading.Event()
    deltas: list[str] = []

    def on_token(delta: str) -> None:
        deltas.append(delta)
        if len(deltas) == 3:
            cancel.set()

    params = GenerationParams(max_new_tokens=64, ignore_eos=True)
    result = engine.generate(PROMPT, params, cancel=cancel, on_token=on_token)
    assert result.finish_reason == "cancelled"
    assert len(result.token_ids) < params.max_new_tokens
    assert result.text == "".join(deltas)  # what was generated before the cancel is kept
    full = cold(engine, PROMPT, params)
    assert full.token_ids[: len(result.token_ids)] == result.token_ids


def test_a_cancelled_prefill_keeps_its_finished_chunks_for_the_next_request(
    built_tiny_entry,  # noqa: F811
) -> None:
    """The next keystroke's request cancels this one mid-prefill; the chunks already
    prefilled stay in the session, so the next request prefills only the rest, and
    its tokens are those of a cold run."""
    engine = Engine.load(built_tiny_entry, threads=1, verify=False, prefill_chunk=8)
    prompt = "def f(x):\n    return x\n" * 6
    ids = engine.encode(prompt)
    assert len(ids) > 3 * engine.prefill_chunk
    cancel = threading.Event()
    runs: list[int] = []
    real_run = engine._run

    def run_then_cancel(slot, feed, cached):  # type: ignore[no-untyped-def]
        runs.append(len(feed))
        if len(runs) == 2:
            cancel.set()  # the user typed during the second chunk
        return real_run(slot, feed, cached)

    engine._run = run_then_cancel  # type: ignore[method-assign]
    stopped = engine.generate(prompt, GREEDY, session="doc", cancel=cancel)
    engine._run = real_run  # type: ignore[method-assign]
    assert stopped.finish_reason == "cancelled" and stopped.token_ids == ()
    assert runs == [8, 8]

    warm = engine.generate(prompt, GREEDY, session="doc")
    assert warm.reused_tokens == 16  # both finished chunks were kept
    expected = cold(engine, prompt)
    assert warm.token_ids == expected.token_ids and warm.text == expected.text


def test_prefill_chunks_must_be_positive(built_tiny_entry) -> None:  # noqa: F811
    with pytest.raises(ValueError, match="prefill_chunk"):
        Engine.load(built_tiny_entry, threads=1, verify=False, warmup=False, prefill_chunk=0)


def test_cancellation_from_another_thread(engine) -> None:
    cancel = threading.Event()
    timer = threading.Timer(0.05, cancel.set)
    timer.start()
    started = time.monotonic()
    result = engine.generate(
        PROMPT,
        GenerationParams(max_new_tokens=engine.max_length // 2, ignore_eos=True),
        cancel=cancel,
        on_token=lambda _: time.sleep(0.005),
    )
    assert result.finish_reason == "cancelled"
    assert time.monotonic() - started < 0.05 + 0.1


def test_a_request_cancelled_while_waiting_for_the_engine_returns_at_once(engine) -> None:
    busy = threading.Thread(
        target=engine.generate,
        args=(PROMPT, GenerationParams(max_new_tokens=40, ignore_eos=True)),
        kwargs={"on_token": lambda _: time.sleep(0.01)},
    )
    busy.start()
    time.sleep(0.05)  # the engine is busy now
    cancel = threading.Event()
    threading.Timer(0.02, cancel.set).start()
    started = time.monotonic()
    result = engine.generate(PROMPT, GREEDY, cancel=cancel)
    waited = time.monotonic() - started
    still_busy = busy.is_alive()
    busy.join()
    assert still_busy
    assert result.finish_reason == "cancelled" and result.token_ids == ()
    assert waited < 0.15


def test_stop_sequences_cut_the_text_even_across_tokens(engine) -> None:
    free = cold(engine, PROMPT, GenerationParams(max_new_tokens=32, ignore_eos=True))
    # A stop made of the text of two middle tokens: it spans a token boundary.
    stop = engine.decode(free.token_ids[4:6])
    assert stop and engine.decode(free.token_ids[:6]).endswith(stop)
    deltas: list[str] = []
    result = engine.generate(
        PROMPT,
        GenerationParams(max_new_tokens=32, stop=["\x00never", stop], ignore_eos=True),
        on_token=deltas.append,
    )
    assert result.finish_reason == "stop"
    assert result.text == free.text[: free.text.index(stop)]
    assert "".join(deltas) == result.text  # nothing past the cut was streamed


def test_max_new_tokens_ends_with_length(engine) -> None:
    result = engine.generate(PROMPT, GenerationParams(max_new_tokens=5))
    assert result.finish_reason in ("length", "eos")
    if result.finish_reason == "length":
        assert len(result.token_ids) == 5
    with pytest.raises(ValueError, match="below the model's context length"):
        engine.generate(PROMPT, GenerationParams(max_new_tokens=engine.max_length))


def test_eos_ends_generation_unless_ignored(built_tiny_entry, engine) -> None:  # noqa: F811
    """Make the greedy third token the EOS token (a manifest edit, the same real graph)."""
    free = cold(engine, PROMPT, GenerationParams(max_new_tokens=8, ignore_eos=True))
    eos = free.token_ids[2]
    manifest = dict(built_tiny_entry.manifest)
    manifest["tokenizer"] = dict(manifest["tokenizer"], eos_token_id=eos)
    patched = Engine.load(ModelEntry(built_tiny_entry.path, manifest), threads=1, verify=False)
    stopped = patched.generate(PROMPT, GenerationParams(max_new_tokens=8))
    assert stopped.finish_reason == "eos"
    assert stopped.token_ids == free.token_ids[: free.token_ids.index(eos)]
    ignored = patched.generate(PROMPT, GenerationParams(max_new_tokens=8, ignore_eos=True))
    assert (ignored.finish_reason, ignored.token_ids) == ("length", free.token_ids)


def test_a_fim_end_of_middle_token_ends_generation(built_tiny_entry, engine) -> None:  # noqa: F811
    """A FIM format's stop token ends generation by id, like EOS (special tokens never
    reach the decoded text, so a stop string could not catch them)."""
    free = cold(engine, PROMPT, GenerationParams(max_new_tokens=8, ignore_eos=True))
    end = free.token_ids[2]
    end_text = engine.tokenizer.id_to_token(end)
    fim = {"prefix": "<p>", "suffix": "<s>", "middle": "<m>", "stop": [end_text]}
    manifest = dict(built_tiny_entry.manifest)
    manifest["tokenizer"] = dict(manifest["tokenizer"], fim=fim)
    patched = Engine.load(ModelEntry(built_tiny_entry.path, manifest), threads=1, verify=False)
    assert end in patched.end_token_ids
    stopped = patched.generate(PROMPT, GenerationParams(max_new_tokens=8))
    assert stopped.finish_reason == "eos"
    assert stopped.token_ids == free.token_ids[: free.token_ids.index(end)]


def test_a_prompt_can_be_token_ids(engine) -> None:
    ids = engine.encode(PROMPT)
    assert engine.generate(ids, GREEDY).token_ids == cold(engine, PROMPT).token_ids
    with pytest.raises(ValueError, match="token ids must be in"):
        engine.generate([engine.vocab_size], GREEDY)


# ---- streaming and sampling ---------------------------------------------------


@pytest.mark.parametrize(
    "params",
    [GREEDY, GenerationParams(max_new_tokens=40, temperature=1.2, top_p=0.95, seed=7)],
)
def test_streamed_deltas_concatenate_to_the_text(engine, params) -> None:
    deltas: list[str] = []
    result = engine.generate(PROMPT, params, on_token=deltas.append)
    assert "".join(deltas) == result.text
    assert all(deltas)
    assert result.text == engine.decode(result.token_ids).rstrip("\ufffd")


def test_seeded_sampling_is_deterministic(engine) -> None:
    params = GenerationParams(max_new_tokens=24, temperature=1.0, top_p=0.9, seed=1234)
    first = engine.generate(PROMPT, params)
    second = engine.generate(PROMPT, params, session="seeded")
    assert first.token_ids == second.token_ids
    others = {
        engine.generate(
            PROMPT, GenerationParams(max_new_tokens=24, temperature=1.0, seed=seed)
        ).token_ids
        for seed in range(5)
    }
    assert len(others) > 1  # the seed matters


def test_sampling_follows_temperature_and_top_p() -> None:
    logits = np.log(np.array([0.5, 0.3, 0.15, 0.05]))
    rng = np.random.default_rng(0)
    assert sample(logits, 0.0, 1.0, rng) == 0
    counts = np.bincount([sample(logits, 1.0, 1.0, rng) for _ in range(4000)], minlength=4)
    assert np.allclose(counts / 4000, [0.5, 0.3, 0.15, 0.05], atol=0.03)
    assert list(nucleus(np.array([0.5, 0.3, 0.15, 0.05]), 0.8)) == [0, 1]
    assert list(nucleus(np.array([0.5, 0.3, 0.15, 0.05]), 0.81)) == [0, 1, 2]
    top = {sample(logits, 1.0, 0.75, rng) for _ in range(500)}
    assert top == {0, 1}
    # A wide nucleus over a large vocabulary (more than the fast path's candidates).
    rising = np.arange(1, 5001, dtype=np.float64)
    rising /= rising.sum()
    order = np.argsort(-rising)
    expected = np.sort(order[: np.searchsorted(np.cumsum(rising[order]), 0.5) + 1])
    assert np.array_equal(nucleus(rising, 0.5), expected)
    assert nucleus(np.full(5000, 1 / 5000), 0.5).size == 5000  # ties with the cut are kept
    assert 0 <= sample(np.zeros(5000), 1.0, 0.5, rng) < 5000
    # Very unlikely tokens never come out, even at high temperature.
    peaked = np.array([100.0, 0.0, 99.0])
    assert {sample(peaked, 2.0, 1.0, rng) for _ in range(200)} == {0, 2}


# ---- decoding text -------------------------------------------------------------


def test_incremental_decoding_never_splits_a_character(engine) -> None:
    text = "s = 'héllo wörld ✓ 世界 🎉'\n"
    ids = engine.encode(text)
    assert len(ids) > len(text.encode()) // 4  # byte-level pieces, not whole characters
    decoder = IncrementalDecoder(engine.tokenizer, engine.encode("x = 1\n"))
    deltas = [decoder.push(token) for token in ids] + [decoder.flush()]
    assert "".join(deltas) == text
    assert not any("\ufffd" in delta for delta in deltas)


def test_a_cut_inside_a_character_drops_the_half_character(engine) -> None:
    ids = engine.encode("ok 🎉")
    decoder = IncrementalDecoder(engine.tokenizer)
    partial = "".join(decoder.push(token) for token in ids[:-1]) + decoder.flush()
    assert partial in ("ok ", "ok")
    assert "\ufffd" not in partial


def test_stop_scanner_holds_back_possible_stops() -> None:
    scanner = StopScanner(["\n\n", "END"])
    assert scanner.add("abc\n") == "abc"  # "\n" could start "\n\n"
    assert scanner.add("x E") == "\nx "
    assert scanner.add("N") == ""
    assert scanner.add("D and more") == ""
    assert scanner.stopped and scanner.text == "abc\nx "
    other = StopScanner(["\n\n"])
    assert other.add("a\n") == "a"
    assert other.add("b") == "\nb"
    assert other.finish() == ""
    held = StopScanner(["STOP"])
    assert held.add("xST") == "x"
    assert held.finish() == "ST"


# ---- concurrency ---------------------------------------------------------------


async def test_generate_from_worker_threads_while_the_event_loop_runs(engine) -> None:
    loop = asyncio.get_running_loop()
    ticks = 0
    stop_ticking = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not stop_ticking.is_set():
            ticks += 1
            await asyncio.sleep(0.001)

    expected = {prompt: cold(engine, prompt) for prompt in (PROMPT, "class Stack:\n    ")}
    ticking = asyncio.create_task(ticker())
    results = await asyncio.gather(
        *(
            loop.run_in_executor(
                None, lambda p=prompt, i=i: engine.generate(p, GREEDY, session=f"thread-{i}")
            )
            for i, prompt in enumerate(list(expected) * 2)
        )
    )
    stop_ticking.set()
    await ticking
    for prompt, result in zip(list(expected) * 2, results, strict=True):
        assert result.token_ids == expected[prompt].token_ids
    assert ticks > 5  # the loop kept running while the engine worked


# ---- loading ---------------------------------------------------------------------


def test_load_uses_the_requested_threads(built_tiny_entry) -> None:  # noqa: F811
    engine = Engine.load(built_tiny_entry, threads=1, verify=False)
    assert engine.session.get_session_options().intra_op_num_threads == 1
    assert engine.session.get_providers() == ["CPUExecutionProvider"]
    with pytest.raises(ValueError, match="threads"):
        Engine.load(built_tiny_entry, threads=0, verify=False)


@pytest.mark.parametrize("damaged", ["model.onnx", "tokenizer.json"])
def test_a_corrupt_model_file_is_named_at_load(built_tiny_entry, tmp_path, damaged) -> None:  # noqa: F811
    copy = tmp_path / "entry"
    shutil.copytree(built_tiny_entry.path, copy)
    data = bytearray((copy / damaged).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / damaged).write_bytes(bytes(data))
    with pytest.raises(RegistryError, match=f"model file '{damaged}' is corrupt"):
        Engine.load(ModelEntry.load(copy))


def test_a_missing_model_file_is_named(built_tiny_entry, tmp_path) -> None:  # noqa: F811
    copy = tmp_path / "entry"
    shutil.copytree(built_tiny_entry.path, copy)
    (copy / "model.onnx").unlink()
    with pytest.raises(RegistryError, match=r"model file 'model\.onnx' is missing"):
        ModelEntry.load(copy)


def test_a_graph_that_breaks_the_contract_is_refused(built_tiny_entry, tmp_path) -> None:  # noqa: F811
    copy = tmp_path / "entry"
    shutil.copytree(built_tiny_entry.path, copy)
    manifest = dict(built_tiny_entry.manifest)
    manifest["graph"] = dict(manifest["graph"], num_layers=manifest["graph"]["num_layers"] + 1)
    entry = ModelEntry(copy, manifest)
    with pytest.raises(RegistryError, match="does not match its manifest"):
        Engine.load(entry)


def test_serving_imports_no_torch() -> None:
    code = (
        "import sys, acepilot.server.engine, acepilot.server.registry, acepilot.server.commands.complete; "
        "bad = sorted(m for m in ('torch', 'transformers') if m in sys.modules); "
        "sys.exit(f'imported {bad}' if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_generation_params_are_validated() -> None:
    for bad in (
        {"max_new_tokens": 0},
        {"max_new_tokens": 2.5},
        {"temperature": -1.0},
        {"temperature": float("nan")},
        {"top_p": 0.0},
        {"top_p": 1.5},
        {"stop": "\n"},
        {"deadline": -1.0},
    ):
        with pytest.raises(ValueError):
            GenerationParams(**bad)  # type: ignore[arg-type]


def test_fixture_entry_is_a_real_build(built_tiny_entry) -> None:  # noqa: F811
    assert built_tiny_entry.manifest["parity"]["status"] == "passed"
    assert Path(built_tiny_entry.graph_path).is_file()
