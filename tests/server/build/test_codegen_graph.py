"""The fused CodeGen graph against transformers' CodeGen, op by op and end to end."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import pytest
import torch
from transformers import CodeGenConfig, CodeGenForCausalLM

from acepilot.server.build.codegen_graph import CodeGenGraphBuilder, CodeGenShape, split_qkv
from acepilot.server.build.families import family_for
from acepilot.server.build.families.codegen import pack_qkv
from acepilot.server.build.graph_io import FUSED_OPS, GraphStepper, check_fused, save_graph
from acepilot.server.build.quantize import quantize_matmuls
from acepilot.server.errors import BuildError


def random_codegen(seed: int = 0, **overrides: int) -> CodeGenForCausalLM:
    """Random weights AND random biases/LayerNorm affines: identity norms hide bugs."""
    torch.manual_seed(seed)
    settings = dict(vocab_size=300, n_embd=128, n_layer=2, n_head=4, rotary_dim=16, n_positions=128)
    settings.update(overrides)
    model = CodeGenForCausalLM(CodeGenConfig(**settings)).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias"):
                param.normal_(0.0, 0.5)
            elif "ln" in name:
                param.normal_(1.0, 0.3)
            else:
                param.normal_(0.0, 0.1)
    return model


def build(
    model: CodeGenForCausalLM, dtype: str = "float32"
) -> tuple[onnx.ModelProto, CodeGenShape]:
    shape = CodeGenShape.from_config(model.config.to_dict())
    weights = {k: v.numpy() for k, v in model.state_dict().items()}
    return CodeGenGraphBuilder(shape, weights, dtype).make_model(), shape


def stepper_for(tmp_path, graph, shape, dtype="float32") -> GraphStepper:
    save_graph(graph, tmp_path / "model.onnx")
    return GraphStepper(tmp_path / "model.onnx", shape, dtype, "cpu")


def test_split_qkv_follows_codegen_packing() -> None:
    """Rows are 4 groups of [q | v | k]; each part comes back head-major."""
    n_embd, n_head = 16, 4
    rows = np.arange(3 * n_embd, dtype=np.float32)[:, None].repeat(2, axis=1)
    q, k, v = split_qkv(rows, n_head)
    local = n_embd // 4
    expected_q = np.concatenate([np.arange(g * 3 * local, g * 3 * local + local) for g in range(4)])
    expected_v = expected_q + local
    expected_k = expected_q + 2 * local
    assert np.array_equal(q[:, 0], expected_q)
    assert np.array_equal(v[:, 0], expected_v)
    assert np.array_equal(k[:, 0], expected_k)


@pytest.mark.parametrize("mp_num", [2, 4, 8])
def test_pack_qkv_inverts_split_qkv(mp_num) -> None:
    """CodeGen2's 8-group packing (and any other) round-trips through split and pack."""
    weight = np.random.default_rng(0).normal(size=(3 * 64, 8)).astype(np.float32)
    assert np.array_equal(pack_qkv(*split_qkv(weight, 8, mp_num), mp_num), weight)
    if mp_num != 4:  # a different grouping really is a different split
        assert not np.array_equal(split_qkv(weight, 8, mp_num)[0], split_qkv(weight, 8, 4)[0])


@pytest.mark.parametrize(
    "overrides", [{}, {"n_head": 8, "n_embd": 256, "rotary_dim": 32, "n_layer": 3}]
)
def test_fp32_graph_matches_pytorch_prefill_and_decode(tmp_path, overrides) -> None:
    model = random_codegen(**overrides)
    graph, shape = build(model)
    step = stepper_for(tmp_path, graph, shape)
    ids = np.random.default_rng(1).integers(0, shape.vocab_size, 40).tolist()
    with torch.no_grad():
        reference = model(torch.tensor([ids])).logits[0].numpy()
    prefill = step(ids[:25], 0)
    assert np.abs(prefill - reference[24]).max() < 1e-4
    for position in range(25, 40):
        logits = step(ids[position : position + 1], position)
        assert np.abs(logits - reference[position]).max() < 1e-4, position
    # A chunk fed on top of a warm cache (what prefix reuse does) matches too.
    rewound = step(ids[10:40], 10)
    assert np.abs(rewound - reference[39]).max() < 1e-4


def test_graph_is_fully_fused() -> None:
    model = random_codegen(n_layer=3)
    graph, shape = build(model)
    counts = Counter(node.op_type for node in graph.graph.node)
    assert counts["GroupQueryAttention"] == 3
    assert counts["SkipLayerNormalization"] == 3
    assert counts["FastGelu"] == 3
    assert counts["LayerNormalization"] == 1
    # No piece of an unfused attention or rotary subgraph survives.
    for op in (
        "Softmax",
        "Transpose",
        "Reshape",
        "Concat",
        "Sin",
        "Cos",
        "Mul",
        "Div",
        "Tanh",
        "Pow",
    ):
        assert counts[op] == 0, op
    assert set(counts) <= FUSED_OPS
    assert check_fused(graph, shape)["GroupQueryAttention"] == 3
    for node in graph.graph.node:
        if node.op_type == "GroupQueryAttention":
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            assert attrs["do_rotary"] == 1 and attrs["rotary_interleaved"] == 1


@pytest.mark.parametrize("precision", ["int8", "int4"])
def test_quantized_graph_uses_matmulnbits_everywhere(precision) -> None:
    model = random_codegen()
    graph, shape = build(model)
    quantized = quantize_matmuls(graph, precision, "cpu")
    nodes = [n for n in quantized.graph.node if n.op_type == "MatMulNBits"]
    assert len(nodes) == 4 * shape.n_layer + 1  # qkv, out, fc_in, fc_out per layer + lm_head
    for node in nodes:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert attrs["block_size"] == (32 if precision == "int8" else 128)
        assert attrs["bits"] == (8 if precision == "int8" else 4)
        assert attrs["accuracy_level"] == 4
    assert not [n for n in quantized.graph.node if n.op_type == "MatMul"]
    check_fused(quantized, shape)


def test_fp16_graph_runs_close_to_pytorch(tmp_path) -> None:
    model = random_codegen()
    graph, shape = build(model, "float16")
    step = stepper_for(tmp_path, graph, shape, "float16")
    ids = list(range(1, 20))
    with torch.no_grad():
        reference = model(torch.tensor([ids])).logits[0, -1].numpy()
    logits = step(ids, 0)
    assert logits.dtype == np.float32
    assert np.abs(logits - reference).max() / np.abs(reference).max() < 1e-2


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"model_type": "gpt2"}, "supported model types: codegen"),
        ({"rotary_dim": 24}, "multiple of 16"),
        ({"n_head": 6, "n_embd": 192}, "multiple of 4"),
        ({"n_layer": 0}, "positive integer"),
        ({"n_embd": "1024"}, "positive integer"),
        ({"activation_function": "relu"}, "not supported"),
    ],
)
def test_unsupported_configs_are_refused_clearly(change, message) -> None:
    config = CodeGenConfig(vocab_size=300, n_embd=128, n_layer=2, n_head=4, rotary_dim=16).to_dict()
    config.update(change)
    with pytest.raises(BuildError, match=message):
        family_for(config).shape_from_config(config, None)


def test_missing_weight_names_the_tensor() -> None:
    model = random_codegen()
    shape = CodeGenShape.from_config(model.config.to_dict())
    weights = {k: v.numpy() for k, v in model.state_dict().items() if "fc_in.weight" not in k}
    with pytest.raises(BuildError, match=r"fc_in\.weight"):
        CodeGenGraphBuilder(shape, weights).make_model()


def test_weights_beyond_the_threshold_go_to_one_external_file(tmp_path) -> None:
    """Above the threshold the weights leave the protobuf (onnxruntime then skips parsing
    them out of it at load); the graph computes the same logits either way."""
    graph, shape = build(random_codegen())
    inline, external = tmp_path / "inline", tmp_path / "external"
    inline.mkdir()
    external.mkdir()
    assert save_graph(graph, inline / "model.onnx") == ["model.onnx"]
    assert save_graph(graph, external / "model.onnx", external_above=0) == [
        "model.onnx",
        "model.onnx.data",
    ]
    assert (external / "model.onnx").stat().st_size < (inline / "model.onnx").stat().st_size / 10
    tokens = [5, 17, 42, 7]
    outputs = []
    for folder in (inline, external):
        step = GraphStepper(folder / "model.onnx", shape, "float32", "cpu")
        outputs.append(np.stack([step([token], position) for position, token in enumerate(tokens)]))
    assert np.array_equal(outputs[0], outputs[1])
