"""The int8 KV cache of CPU builds: calibration, the graph, and the engine serving it."""

from __future__ import annotations

import threading

import numpy as np
import onnx
import pytest
from engine_fixtures import built_tiny_int8_entry, built_tiny_int8_registry  # noqa: F401

from acepilot.server.build import parity
from acepilot.server.build.kv_cache import (
    CALIBRATION_MARGIN,
    INT8_MAX,
    calibrate_kv_scales,
    resolve_kv_cache,
    to_scale,
)
from acepilot.server.engine import Engine, GenerationParams
from acepilot.server.errors import BuildError
from acepilot.server.registry import ModelEntry

PROMPTS = (
    "import os\n\n\ndef read_lines(path):\n    with open(path) as handle:\n        ",
    "def f(x):\n    return x\n" * 6,
)
GREEDY = GenerationParams(max_new_tokens=24)


@pytest.mark.parametrize(
    ("choice", "precision", "device", "int8"),
    [
        ("auto", "int4", "cpu", True),
        ("auto", "int8", "cpu", True),
        ("auto", "fp32", "cpu", False),  # the exact reference stays exact
        ("auto", "fp16", "cpu", False),
        ("auto", "int4", "cuda", False),
        ("float", "int4", "cpu", False),
        ("int8", "fp32", "cpu", True),
    ],
)
def test_which_builds_get_an_int8_cache(choice, precision, device, int8) -> None:
    assert resolve_kv_cache(choice, precision, device) is int8


@pytest.mark.parametrize(
    ("choice", "device", "message"),
    [("int8", "cuda", "only supported for --device cpu"), ("int4", "cpu", "must be one of")],
)
def test_unsupported_kv_cache_choices_are_refused(choice, device, message) -> None:
    with pytest.raises(BuildError, match=message):
        resolve_kv_cache(choice, "int4", device)


def test_scales_cover_the_calibration_maxima_with_margin() -> None:
    maxima = np.array([[2.0, 0.5, 0.0, 8.0]], dtype=np.float32)
    scale = to_scale(maxima)
    assert scale.shape == (4,) and scale.dtype == np.float32
    np.testing.assert_allclose(scale[[0, 1, 3]], maxima[0, [0, 1, 3]] * CALIBRATION_MARGIN / 127)
    assert scale[2] > 0  # a channel never seen non-zero still quantizes (to ~0), never divides by 0
    assert INT8_MAX == 127


def test_rotary_channel_pairs_share_a_scale(trained_codegen_dir) -> None:
    """Rotary turns each pair of channels by the position's angle: a pair's scale must
    cover both, at every position."""
    from transformers import AutoTokenizer, CodeGenForCausalLM

    model = CodeGenForCausalLM.from_pretrained(trained_codegen_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(trained_codegen_dir)
    rotary = model.config.rotary_dim
    heads, head_dim = model.config.n_head, model.config.n_embd // model.config.n_head
    k_scales, v_scales, tokens = calibrate_kv_scales(
        model, lambda text: list(tokenizer(text)["input_ids"]), 256, rotary
    )
    assert len(k_scales) == len(v_scales) == model.config.n_layer
    assert tokens > 100
    for k in k_scales:
        per_head = k.reshape(heads, head_dim)
        np.testing.assert_array_equal(per_head[:, 0:rotary:2], per_head[:, 1:rotary:2])
        assert (per_head > 0).all()
    assert any(not np.array_equal(v[0::2], v[1::2]) for v in v_scales)  # values: no pairing


def test_the_built_graph_keeps_an_int8_cache(built_tiny_int8_entry: ModelEntry) -> None:  # noqa: F811
    manifest = built_tiny_int8_entry.manifest
    graph = manifest["graph"]
    assert graph["kv_dtype"] == "int8"
    assert graph["kv_quantization"]["bits"] == 8
    assert graph["kv_quantization"]["calibration_tokens"] > 100
    assert graph["weights"] == {"bits": 8, "block_size": 32, "accuracy_level": 4}
    model = onnx.load(str(built_tiny_int8_entry.graph_path))
    attentions = [n for n in model.graph.node if n.op_type == "GroupQueryAttention"]
    assert len(attentions) == manifest["config"]["n_layer"]
    for node in attentions:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert attrs["kv_cache_bit_width"] == 8
        assert attrs["k_quant_type"] == attrs["v_quant_type"] == b"PER_CHANNEL"
        assert node.input[12].startswith("/model/kv_cache_scales/k_scale.")
    kv_inputs = [i for i in model.graph.input if i.name.startswith("past_key_values.")]
    assert {i.type.tensor_type.elem_type for i in kv_inputs} == {onnx.TensorProto.INT8}
    # The int8 cache is inside the int8 parity thresholds against PyTorch.
    results = manifest["parity"]
    max_rel, min_top1, max_ppl = parity.THRESHOLDS["int8"]
    assert results["status"] == "passed"
    assert results["relative_logit_error"] <= max_rel
    assert results["top1_agreement"] >= min_top1
    assert results["perplexity_change"] <= max_ppl


@pytest.fixture(scope="module")
def int8_engine(built_tiny_int8_entry: ModelEntry) -> Engine:  # noqa: F811
    return Engine.load(built_tiny_int8_entry, threads=2)


def test_the_engine_sizes_sessions_by_the_int8_cache(int8_engine: Engine) -> None:
    assert int8_engine.kv_dtype == np.int8
    config = int8_engine.entry.manifest["config"]
    assert (
        int8_engine.slot_bytes == 2 * config["n_layer"] * config["n_embd"] * config["n_positions"]
    )


@pytest.mark.parametrize("prompt", PROMPTS)
def test_chunked_prefill_and_reuse_match_a_cold_run(
    int8_engine: Engine,
    built_tiny_int8_entry: ModelEntry,  # noqa: F811
    prompt: str,
) -> None:
    """The quantized cache is written in place (past and present share the buffer): a
    prompt prefilled in 8-token chunks, or continued from a session, must decode the
    same tokens as one cold prefill."""
    chunked = Engine.load(built_tiny_int8_entry, threads=2, verify=False, prefill_chunk=8)
    cold = int8_engine.generate(prompt, GREEDY)
    assert len(cold.token_ids) == GREEDY.max_new_tokens or cold.finish_reason == "eos"
    assert chunked.generate(prompt, GREEDY).token_ids == cold.token_ids
    chunked.generate(prompt[:-6], GREEDY, session="doc")
    warm = chunked.generate(prompt, GREEDY, session="doc")
    assert warm.reused_tokens > 10
    assert warm.token_ids == cold.token_ids and warm.text == cold.text


def test_ragged_batches_over_the_int8_cache_match_one_at_a_time(int8_engine: Engine) -> None:
    """The team server's batched path binds the int8 buffers row by row: same tokens."""
    from acepilot.server.engine.batch import BatchEngine

    prompts = [*PROMPTS, "def add(a, b):\n    return", "class Stack:\n    def __init__(self):\n"]
    expected = [int8_engine.generate(prompt, GREEDY) for prompt in prompts]
    steps: list[int] = []
    batch = BatchEngine(int8_engine, max_batch=4, max_rows=4, on_step=steps.append)
    results: dict[int, tuple[int, ...]] = {}
    barrier = threading.Barrier(len(prompts))

    def run(index: int) -> None:
        barrier.wait()
        results[index] = batch.generate(prompts[index], GREEDY, session=f"u{index}").token_ids

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(prompts))]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
    finally:
        batch.close()
    assert [results.get(i) for i in range(len(prompts))] == [e.token_ids for e in expected]
    assert max(steps) >= 2, f"the generations never shared a decode step: {steps}"


def test_float_weights_with_an_int8_cache_are_judged_as_int8(trained_codegen_dir, tmp_path) -> None:
    """--kv-cache int8 on fp32 weights: the exact fp32 gate cannot hold for a quantized
    cache, so the build is judged by the int8 thresholds, and says so."""
    from acepilot.server.build.pipeline import build_model
    from acepilot.server.registry import Registry

    entry = build_model(
        str(trained_codegen_dir),
        precision="fp32",
        registry=Registry(tmp_path),
        name="fp32-int8kv",
        kv_cache="int8",
        progress=False,
    )
    results = entry.manifest["parity"]
    assert entry.manifest["graph"]["kv_dtype"] == "int8"
    assert results["status"] == "passed" and results["gate"] == "int8"
    assert 0 < results["relative_logit_error"] <= parity.THRESHOLDS["int8"][0]
    assert "weights" not in entry.manifest["graph"]  # the weights stay fp32
