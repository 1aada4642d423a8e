"""int8/int4 weights and the int8 KV cache, per family, on briefly trained models.

Random weights give nearly flat logits, on which any quantization flips the
argmax: the reduced-precision gates are judged on checkpoints of each family
trained a few hundred steps (conftest.py). The int8 KV cache's calibration
pairs rotary channels the family's way (rotate-half: i with i + d/2).
"""

from __future__ import annotations

import numpy as np
import pytest

from acepilot.server.build import parity
from acepilot.server.build.checkpoint import read_config
from acepilot.server.build.families import family_for
from acepilot.server.build.kv_cache import calibrate_kv_scales
from acepilot.server.build.pipeline import build_model
from acepilot.server.build.tokenizer import load_tokenizer
from acepilot.server.engine import Engine, GenerationParams
from acepilot.server.registry import Registry

TRAINED = ["qwen2.5-coder-0.5b", "starcoder2-3b", "deepseek-coder-1.3b-base"]


@pytest.mark.parametrize("name", ["qwen2.5-coder-0.5b", "starcoder2-3b", "codegen2-1B"])
def test_rotary_pairs_share_a_scale_the_family_way(family_checkpoints, name) -> None:
    directory = family_checkpoints[name]
    config = read_config(directory)
    builder = family_for(config)
    shape = builder.shape_from_config(config, directory)
    model, _ = builder.load_reference(directory, shape)
    tokenizer = load_tokenizer(directory)
    k_scales, v_scales, _ = calibrate_kv_scales(
        model,
        lambda text: list(tokenizer(text)["input_ids"]),
        256,
        shape.rotary_dim,
        interleaved=shape.rotary_interleaved,
    )
    rotary, half = shape.rotary_dim, shape.rotary_dim // 2
    for k in k_scales:
        per_head = k.reshape(shape.num_kv_heads, shape.head_dim)  # one scale per KV channel
        if shape.rotary_interleaved:
            np.testing.assert_array_equal(per_head[:, 0:rotary:2], per_head[:, 1:rotary:2])
        else:
            np.testing.assert_array_equal(per_head[:, :half], per_head[:, half:rotary])
            assert not np.array_equal(per_head[:, 0:rotary:2], per_head[:, 1:rotary:2])
    assert len(k_scales) == len(v_scales) == shape.num_layers


# int4 and int8 weights (with the CPU default int8 KV cache; the embedding quantized too,
# shared with the lm_head where tied) and the int8 KV cache alone on fp32 weights, for
# every family.
CASES = (
    [(name, "int4", "auto") for name in TRAINED]
    + [(name, "int8", "auto") for name in TRAINED]
    + [(name, "fp32", "int8") for name in TRAINED]
)


@pytest.mark.parametrize(("name", "precision", "kv_cache"), CASES)
def test_quantized_builds_of_trained_models_pass_their_gates(
    trained_family_checkpoints, tmp_path, name, precision, kv_cache
) -> None:
    entry = build_model(
        str(trained_family_checkpoints[name]),
        precision=precision,
        registry=Registry(tmp_path),
        name="m",
        kv_cache=kv_cache,
        progress=False,
    )
    results = entry.manifest["parity"]
    gate = "int8" if precision == "fp32" else precision
    assert results["status"] == "passed" and results["gate"] == gate, results
    max_rel, min_top1, max_ppl = parity.THRESHOLDS[gate]
    assert results["relative_logit_error"] <= max_rel
    assert results["top1_agreement"] >= min_top1
    assert results["perplexity_change"] <= max_ppl
    # It did learn (a flat-logit model has a perplexity near its 1,024-row vocabulary).
    assert results["perplexity_reference"] < 300
    assert entry.manifest["graph"]["kv_dtype"] == "int8"
    assert entry.manifest["graph"]["kv_quantization"]["calibration_tokens"] > 100


def test_the_engine_serves_a_gqa_model_as_pytorch_generates(
    trained_family_checkpoints, tmp_path
) -> None:
    """num_kv_heads < num_heads, a BOS-less tokenizer, a 1k vocabulary: the engine's greedy
    tokens are the reference's, cold and on a warm session."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    directory = trained_family_checkpoints["qwen2.5-coder-0.5b"]
    entry = build_model(
        str(directory), precision="fp32", registry=Registry(tmp_path), progress=False
    )
    assert entry.manifest["graph"]["num_kv_heads"] < entry.manifest["config"]["n_head"]
    engine = Engine.load(entry, threads=2, verify=False)
    model = AutoModelForCausalLM.from_pretrained(directory).eval()
    tokenizer = AutoTokenizer.from_pretrained(directory)
    prompt = "import os\n\n\ndef read_lines(path):\n    with open(path) as handle:\n        "
    params = GenerationParams(max_new_tokens=16, ignore_eos=True)
    ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        expected = model.generate(ids, max_new_tokens=16, do_sample=False, min_new_tokens=16)
    expected_tokens = tuple(expected[0, ids.shape[1] :].tolist())
    assert engine.generate(prompt, params).token_ids == expected_tokens
    engine.generate(prompt[:-10], params, session="doc")
    warm = engine.generate(prompt, params, session="doc")
    assert warm.reused_tokens > 5 and warm.token_ids == expected_tokens
