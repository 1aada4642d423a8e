"""Every supported family through the builder and the parity gate.

Random-weight checkpoints made from the real checkpoints' published configs
(tests/data/configs, scaled down in family_models.py) with random biases and
norm affines; the exact fp32 gate (max |Δlogits| ≤ 1e-4, 100% greedy
agreement) against the family's PyTorch model from transformers.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from engine_fixtures import built_tiny_entry, built_tiny_registry  # noqa: F401
from family_models import MODELING_CODEGEN2, real_config

from acepilot.server.build.checkpoint import read_config
from acepilot.server.build.families import FAMILIES, family_for
from acepilot.server.build.graph_io import FUSED_OPS, GraphStepper, check_fused, save_graph
from acepilot.server.build.pipeline import build_model
from acepilot.server.build.quantize import quantize_matmuls
from acepilot.server.errors import BuildError, ModelSourceError
from acepilot.server.registry import Registry

# name -> (family, query heads, KV heads, head_dim, rotary dim, theta, scaling kind, tied,
#          sliding window) of the FULL-SIZE published config.
REAL = {
    "qwen2.5-coder-0.5b": ("qwen2", 14, 2, 64, 64, 1e6, None, True, None),
    "qwen2.5-coder-1.5b": ("qwen2", 12, 2, 128, 128, 1e6, None, True, None),
    "starcoder2-3b": ("starcoder2", 24, 2, 128, 128, 999999.4420358813, None, True, 4096),
    "deepseek-coder-1.3b-base": ("llama", 16, 16, 128, 128, 1e5, "linear", False, None),
    "codegen25-7b-multi": ("llama", 32, 32, 128, 128, 1e4, None, False, None),
    "codegen2-1B": ("codegen2", 16, 16, 128, 64, 1e4, None, False, None),
}


@pytest.mark.parametrize("name", sorted(REAL))
def test_the_real_configs_are_read_as_their_models_need(name, tmp_path) -> None:
    family, heads, kv, head_dim, rotary, theta, scaling, tied, window = REAL[name]
    config = real_config(name)
    (tmp_path / "modeling_codegen.py").write_text(MODELING_CODEGEN2.replace("{mp_num}", "8"))
    builder = family_for(config)
    shape = builder.shape_from_config(config, tmp_path)
    assert builder.family == shape.family == family
    assert (shape.num_heads, shape.num_kv_heads, shape.head_dim) == (heads, kv, head_dim)
    assert shape.rotary_dim == rotary and shape.rope_theta == pytest.approx(theta)
    assert (shape.rope_scaling or {}).get("type") == scaling
    assert shape.tie_word_embeddings is tied and shape.sliding_window == window
    assert shape.vocab_size == config["vocab_size"]
    assert shape.max_length == min(4096, shape.config_max_positions)
    assert shape.rotary_interleaved is (family == "codegen2")
    if family == "codegen2":
        assert shape.mp_num == 8


def test_codegen1_is_not_codegen2() -> None:
    config = dict(real_config("codegen2-1B"))
    del config["auto_map"]
    assert family_for(config).family == "codegen"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"model_type": "gpt2"}, "supported model types: codegen"),
        ({"model_type": "mistral"}, "qwen2 .*starcoder2"),
        ({"architectures": ["Qwen2ForSequenceClassification"]}, "only causal language models"),
        ({"use_sliding_window": True}, "sliding window is not supported"),
        ({"rope_scaling": {"type": "dynamic", "factor": 2.0}}, "'dynamic' is not supported"),
        ({"rope_scaling": {"rope_type": "longrope"}}, "'longrope' is not supported"),
        ({"num_key_value_heads": 3}, "not a multiple of num_key_value_heads"),
        ({"hidden_act": "relu"}, "hidden_act 'relu'"),
        ({"num_hidden_layers": 0}, "positive integer"),
    ],
)
def test_unsupported_configs_are_refused_with_what_is_supported(change, message) -> None:
    config = {**real_config("qwen2.5-coder-0.5b"), **change}
    with pytest.raises(BuildError, match=message):
        family_for(config).shape_from_config(config, None)


def test_codegen2_without_its_modeling_code_is_refused(tmp_path) -> None:
    config = real_config("codegen2-1B")
    with pytest.raises(ModelSourceError, match="mp_num"):
        family_for(config).shape_from_config(config, tmp_path)
    (tmp_path / "modeling_codegen.py").write_text("mp_num = 4\nmp_num = 8\n")
    with pytest.raises(BuildError, match=r"one `mp_num = N`"):
        family_for(config).shape_from_config(config, tmp_path)


def graph_for(directory: Path, dtype: str = "float32", **overrides):
    config = read_config(directory)
    builder = family_for(config)
    shape = builder.shape_from_config(config, directory)
    model, weights = builder.load_reference(directory, shape)
    return builder(shape, weights, dtype).make_model(), shape, model


@pytest.mark.parametrize(
    "name",
    [
        "codegen2-1B",
        "qwen2.5-coder-0.5b",
        "qwen2.5-coder-1.5b",
        "starcoder2-3b",
        "deepseek-coder-1.3b-base",
        "codegen25-7b-multi",
    ],
)
def test_fp32_graph_matches_pytorch_prefill_decode_and_rewind(
    family_checkpoints, tmp_path, name
) -> None:
    """Past StarCoder2's 24-token test window too: the window is honoured in every path."""
    graph, shape, model = graph_for(family_checkpoints[name])
    save_graph(graph, tmp_path / "model.onnx")
    step = GraphStepper(tmp_path / "model.onnx", shape, "float32", "cpu")
    ids = np.random.default_rng(1).integers(0, 1000, 70).tolist()
    with torch.no_grad():
        reference = model(torch.tensor([ids])).logits[0].numpy()
    prefill = step(ids[:40], 0)
    assert np.abs(prefill - reference[39]).max() < 1e-4
    for position in range(40, 70):
        logits = step(ids[position : position + 1], position)
        assert np.abs(logits - reference[position]).max() < 1e-4, position
    rewound = step(ids[30:70], 30)  # a chunk on top of a warm cache (prefix reuse)
    assert np.abs(rewound - reference[69]).max() < 1e-4


@pytest.mark.parametrize(
    ("name", "ops"),
    [
        ("qwen2.5-coder-0.5b", {"SimplifiedLayerNormalization": 1, "Sigmoid": 2, "Add": 2}),
        ("deepseek-coder-1.3b-base", {"SimplifiedLayerNormalization": 1, "Sigmoid": 2}),
        ("starcoder2-3b", {"LayerNormalization": 1, "FastGelu": 2, "Add": 2}),
        ("codegen2-1B", {"LayerNormalization": 1, "FastGelu": 2, "Add": 3}),
    ],
)
def test_graphs_are_fully_fused(family_checkpoints, name, ops) -> None:
    """Two skip norms per sequential block, one per parallel block; no unfused pattern."""
    graph, shape, _ = graph_for(family_checkpoints[name])
    counts = Counter(node.op_type for node in graph.graph.node)
    assert set(counts) <= FUSED_OPS
    skip = counts["SkipSimplifiedLayerNormalization"] + counts["SkipLayerNormalization"]
    assert skip == (1 if shape.layout == "parallel" else 2) * shape.num_layers
    for op, count in ops.items():
        assert counts[op] == count, (op, counts)
    for op in ("Softmax", "Transpose", "Reshape", "Concat", "Sin", "Cos", "Tanh", "Pow"):
        assert counts[op] == 0, op
    assert check_fused(graph, shape)["GroupQueryAttention"] == shape.num_layers
    for node in graph.graph.node:
        if node.op_type == "GroupQueryAttention":
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            assert attrs["kv_num_heads"] == shape.num_kv_heads
            assert attrs["num_heads"] == shape.num_heads
            assert attrs["rotary_interleaved"] == int(shape.rotary_interleaved)
            assert attrs.get("local_window_size", -1) == (shape.sliding_window or -1)


@pytest.mark.parametrize(
    ("scaling", "theta"),
    [
        ({"type": "linear", "factor": 4.0}, 100000.0),
        (
            {
                "rope_type": "llama3",
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 64,
            },
            500000.0,
        ),
        ({"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 128}, 1e6),
    ],
)
def test_rope_scaling_kinds_match_pytorch(family_checkpoints, tmp_path, scaling, theta) -> None:
    """linear (DeepSeek-Coder), llama3 and yarn (the kind Qwen2.5-Coder documents for long
    context) baked into the cos/sin caches, attention factor included."""
    directory = tmp_path / "ckpt"
    shutil.copytree(family_checkpoints["deepseek-coder-1.3b-base"], directory)
    config = json.loads((directory / "config.json").read_text())
    config.update(rope_scaling=scaling, rope_theta=theta)
    (directory / "config.json").write_text(json.dumps(config))
    graph, shape, model = graph_for(directory)
    save_graph(graph, tmp_path / "model.onnx")
    step = GraphStepper(tmp_path / "model.onnx", shape, "float32", "cpu")
    ids = np.random.default_rng(2).integers(0, 1000, 300).tolist()
    with torch.no_grad():
        reference = model(torch.tensor([ids])).logits[0].numpy()
    assert np.abs(step(ids, 0) - reference[-1]).max() < 1e-4


@pytest.mark.parametrize(
    "name", ["codegen2-1B", "qwen2.5-coder-0.5b", "starcoder2-3b", "deepseek-coder-1.3b-base"]
)
def test_fp32_builds_pass_the_exact_gate_and_record_family_and_fim(
    family_checkpoints, tmp_path, name
) -> None:
    entry = build_model(
        str(family_checkpoints[name]),
        precision="fp32",
        registry=Registry(tmp_path),
        name="m",
        progress=False,
    )
    manifest = entry.manifest
    parity = manifest["parity"]
    assert parity["status"] == "passed" and parity["gate"] == "fp32"
    assert parity["max_abs_logit_error"] <= 1e-4 and parity["greedy_agreement"] == 1.0
    family = REAL[name][0]
    assert manifest["family"] == family
    assert manifest["graph"]["num_kv_heads"] == manifest["config"]["n_kv_head"]
    fim, repo = manifest["tokenizer"]["fim"], manifest["tokenizer"]["repo"]
    expected = {
        "codegen2": ("", "<mask_1>", "<|endoftext|><sep><mask_1>", "<eom>", None),
        "qwen2": ("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>", "<|endoftext|>", "<|"),
        "starcoder2": ("<fim_prefix>", "<fim_suffix>", "<fim_middle>", "<|endoftext|>", "<"),
        "llama": (
            "<｜fim▁begin｜>",
            "<｜fim▁hole｜>",
            "<｜fim▁end｜>",
            "<｜end▁of▁sentence｜>",
            None,
        ),
    }[family]
    assert (fim["prefix"], fim["suffix"], fim["middle"], fim["stop"][0]) == expected[:4]
    assert fim["order"] in fim["orders"]
    if expected[4] is None:
        assert repo is None
    else:
        assert repo["file_sep"].startswith(expected[4]) and repo["repo_name"]
    # The serving side's one parser (acepilot/server/fim.py) reads what the build wrote.
    assert entry.fim is not None and entry.fim.stop == tuple(fim["stop"])
    assert entry.fim.render("P", "S") == fim["prefix"] + "P" + fim["suffix"] + "S" + fim["middle"]
    assert (entry.repo_format is None) == (repo is None)
    # The artifact's tokenizer.json (what serving reads) has every FIM string as one token.
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(entry.tokenizer_path))
    for token in (fim["prefix"], fim["suffix"], *fim["stop"]):
        if token:
            assert tokenizer.token_to_id(token) is not None, token


def test_codegen1_builds_record_no_fim(built_tiny_entry) -> None:  # noqa: F811
    manifest = built_tiny_entry.manifest
    assert manifest["family"] == "codegen"
    assert manifest["tokenizer"]["fim"] is None and manifest["tokenizer"]["repo"] is None


@pytest.mark.parametrize("name", ["qwen2.5-coder-0.5b", "starcoder2-3b", "codegen2-1B"])
def test_cuda_graphs_are_written_and_built_on_cpu(family_checkpoints, tmp_path, name) -> None:
    """fp16 and int4-on-fp16 (accuracy level 0, CUDA's) graphs of every family: fully fused,
    and the fp16 one runs (on the CPU here) close to PyTorch."""
    graph, shape, model = graph_for(family_checkpoints[name], "float16")
    check_fused(graph, shape)
    save_graph(graph, tmp_path / "fp16.onnx")
    step = GraphStepper(tmp_path / "fp16.onnx", shape, "float16", "cpu")
    ids = list(range(5, 40))
    with torch.no_grad():
        reference = model(torch.tensor([ids])).logits[0, -1].numpy()
    logits = step(ids, 0)
    assert logits.dtype == np.float32
    assert np.abs(logits - reference).max() / np.abs(reference).max() < 2e-2
    int4 = quantize_matmuls(graph, "int4", "cuda")
    check_fused(int4, shape)
    nbits = [n for n in int4.graph.node if n.op_type == "MatMulNBits"]
    per_layer = 4 if shape.layout == "parallel" or shape.activation != "silu" else 5
    assert len(nbits) == per_layer * shape.num_layers + 1
    for node in nbits:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert attrs.get("accuracy_level", 0) == 0 and attrs["bits"] == 4


def test_every_family_has_a_builder() -> None:
    assert set(FAMILIES) == {"codegen", "codegen2", "llama", "qwen2", "starcoder2"}
