"""The input embedding of int8/int4 builds: GatherBlockQuantized, sharing a tied lm_head.

A float embedding table was the largest tensor of a quantized Qwen2.5-Coder-0.5B
(545 MB of a 771 MB int4 file). These tests check on the random-weight family
checkpoints (tests/server/build/conftest.py) that the quantized graph keeps no
float table, that a tied model's gather and lm_head read one copy of the packed
weights, that both decode the same values, and what the file saves.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from test_families import graph_for

from acepilot.server.build.embedding import GATHER, LM_HEAD_WEIGHT, TABLE
from acepilot.server.build.graph_io import check_fused, save_graph
from acepilot.server.build.pipeline import build_model
from acepilot.server.build.quantize import BITS, BLOCK_SIZES, quantize_matmuls, quantize_weights
from acepilot.server.registry import Registry

FLOAT_TYPES = (TensorProto.FLOAT, TensorProto.FLOAT16)
TIED, UNTIED = "qwen2.5-coder-0.5b", "deepseek-coder-1.3b-base"


def by_op(model: onnx.ModelProto, op: str) -> list[onnx.NodeProto]:
    return [n for n in model.graph.node if n.op_type == op]


def attrs(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def lm_head_node(model: onnx.ModelProto) -> onnx.NodeProto:
    return next(n for n in by_op(model, "MatMulNBits") if n.input[1].startswith(LM_HEAD_WEIGHT))


def quantized(checkpoints: dict[str, Path], name: str, precision: str, dtype: str = "float32"):
    graph, shape, _ = graph_for(checkpoints[name], dtype)
    device = "cpu" if dtype == "float32" else "cuda"
    model, record = quantize_weights(graph, precision, device)
    return model, shape, record


@pytest.mark.parametrize("precision", ["int8", "int4"])
@pytest.mark.parametrize("name", [TIED, UNTIED, "starcoder2-3b", "codegen2-1B"])
def test_quantized_graphs_gather_block_quantized_rows(family_checkpoints, name, precision) -> None:
    model, shape, record = quantized(family_checkpoints, name, precision)
    check_fused(model, shape)
    assert not by_op(model, "Gather")
    (gather,) = by_op(model, "GatherBlockQuantized")
    assert attrs(gather) == {
        "bits": BITS[precision],
        "block_size": BLOCK_SIZES[precision],
        "gather_axis": 0,
        "quantize_axis": 1,
    }
    assert gather.input[1] == "input_ids" and len(gather.input) == 3  # default zero points
    table_elements = shape.vocab_size * shape.hidden_size
    floats = [
        t
        for t in model.graph.initializer
        if t.data_type in FLOAT_TYPES and np.prod(t.dims) >= table_elements
    ]
    assert floats == [] and all(t.name != TABLE for t in model.graph.initializer)
    assert record["shared_with_lm_head"] == shape.tie_word_embeddings


@pytest.mark.parametrize("precision", ["int8", "int4"])
def test_a_tied_model_keeps_one_copy_of_the_packed_weights(family_checkpoints, precision) -> None:
    model, shape, record = quantized(family_checkpoints, TIED, precision)
    assert shape.tie_word_embeddings and record["shared_with_lm_head"]
    (gather,), (reshape,) = by_op(model, "GatherBlockQuantized"), by_op(model, "Reshape")
    head = lm_head_node(model)
    assert gather.input[0] == reshape.output[0] and reshape.input[0] == head.input[1]
    assert gather.input[2] == head.input[2]  # the scales too
    vocab_rows = [t for t in model.graph.initializer if t.dims and t.dims[0] == shape.vocab_size]
    assert [t.name for t in vocab_rows if t.data_type == TensorProto.UINT8] == [head.input[1]]
    assert [t.name for t in vocab_rows if t.data_type != TensorProto.UINT8] == [head.input[2]]


def extract(model: onnx.ModelProto, nodes: list[onnx.NodeProto], inputs, outputs) -> bytes:
    """A model of just `nodes` and the initializers they read."""
    names = {name for node in nodes for name in node.input}
    graph = helper.make_graph(
        nodes,
        "part",
        inputs,
        outputs,
        [t for t in model.graph.initializer if t.name in names],
    )
    return helper.make_model(graph, opset_imports=model.opset_import).SerializeToString()


def gathered_rows(model: onnx.ModelProto, vocab: int, dtype: int = TensorProto.FLOAT) -> np.ndarray:
    """The embedding subgraph (everything before the first norm) run on every token id."""
    position = next(i for i, n in enumerate(model.graph.node) if "layernorm" in n.name.lower())
    nodes = list(model.graph.node[:position])
    assert nodes[-1].output[0] == f"{GATHER}/output_0"  # the layers read the same name
    part = extract(
        model,
        nodes,
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, [1, None])],
        [helper.make_tensor_value_info(nodes[-1].output[0], dtype, None)],
    )
    session = ort.InferenceSession(part, providers=["CPUExecutionProvider"])
    rows: np.ndarray = session.run(None, {"input_ids": np.arange(vocab)[None]})[0][0]
    return rows


def lm_head_rows(model: onnx.ModelProto, hidden: int) -> np.ndarray:
    """The lm_head's dequantized weight rows: its MatMulNBits on one-hot inputs."""
    head = lm_head_node(model)
    node = helper.make_node(
        "MatMulNBits", ["eye", *head.input[1:]], ["rows"], "head", "", "com.microsoft"
    )
    node.attribute.extend(head.attribute)
    part = extract(
        model,
        [node],
        [helper.make_tensor_value_info("eye", TensorProto.FLOAT, [hidden, hidden])],
        [helper.make_tensor_value_info("rows", TensorProto.FLOAT, None)],
    )
    session = ort.InferenceSession(part, providers=["CPUExecutionProvider"])
    columns: np.ndarray = session.run(None, {"eye": np.eye(hidden, dtype=np.float32)})[0]
    return columns.T


@pytest.mark.parametrize("precision", ["int8", "int4"])
@pytest.mark.parametrize("name", [TIED, UNTIED])
def test_the_gather_decodes_what_the_lm_head_multiplies(
    family_checkpoints, name, precision
) -> None:
    """Same packed bytes, same scales, same zero point: the gathered row of token t is row t
    of the lm_head's dequantized weight (tied), and every value is within one quantization
    step (block max / 2^(bits-1)) of the float table, tied and untied: a wrong zero point
    would be 2^(bits-1) steps off. (Symmetric RTN maps the block's extreme to -2^(bits-1);
    the opposite extreme clips at 2^(bits-1) - 1, one step away.)"""
    graph, shape, _ = graph_for(family_checkpoints[name])
    table = numpy_helper.to_array(next(t for t in graph.graph.initializer if t.name == TABLE))
    model, _ = quantize_weights(graph, precision, "cpu")
    rows = gathered_rows(model, shape.vocab_size)
    assert rows.shape == table.shape
    if shape.tie_word_embeddings:
        # Up to float rounding: MatMulNBits at accuracy level 4 scales its (one-hot) input.
        np.testing.assert_allclose(
            rows, lm_head_rows(model, shape.hidden_size), rtol=1e-6, atol=1e-7
        )
    block, levels = BLOCK_SIZES[precision], 2 ** (BITS[precision] - 1)
    padded = np.pad(table, ((0, 0), (0, -shape.hidden_size % block)))
    step = np.abs(padded.reshape(shape.vocab_size, -1, block)).max(axis=2) / levels
    step = np.repeat(step, block, axis=1)[:, : shape.hidden_size]
    assert (np.abs(rows - table) <= step * (1 + 1e-5)).all()
    assert np.abs(rows - table).max() > 0  # it is quantized


def test_the_tied_int4_artifact_drops_the_float_table(family_checkpoints, tmp_path) -> None:
    """The file shrinks by the float table (vocab x hidden x 4 bytes) less the few constants
    and nodes the gather adds; the old path (MatMuls quantized, float Gather) for comparison."""
    graph, shape, _ = graph_for(family_checkpoints[TIED])
    old_graph = quantize_matmuls(
        onnx.ModelProto.FromString(graph.SerializeToString()), "int4", "cpu"
    )
    save_graph(old_graph, tmp_path / "old.onnx")
    save_graph(quantize_weights(graph, "int4", "cpu")[0], tmp_path / "new.onnx")
    saved = (tmp_path / "old.onnx").stat().st_size - (tmp_path / "new.onnx").stat().st_size
    table_bytes = shape.vocab_size * shape.hidden_size * 4
    assert table_bytes - 1024 <= saved <= table_bytes
    entry = build_model(
        str(family_checkpoints[TIED]),
        precision="int4",
        registry=Registry(tmp_path / "registry"),
        name="tied",
        parity="skip",
        kv_cache="float",
        progress=False,
    )
    assert entry.manifest["graph"]["embedding"] == {
        "op": "GatherBlockQuantized",
        "bits": 4,
        "block_size": 128,
        "shared_with_lm_head": True,
    }
    assert entry.manifest["graph"]["op_counts"]["GatherBlockQuantized"] == 1


@pytest.mark.parametrize("name", [TIED, "starcoder2-3b"])
def test_cuda_int4_graphs_gather_float16_rows(family_checkpoints, tmp_path, name) -> None:
    """CUDA builds (fp16 activations, int4 MatMulNBits at accuracy level 0) use the same
    gather: onnxruntime has CUDA kernels for uint8 data with float16 scales. Run on the
    CPU here, which has the float16 kernel too."""
    model, shape, record = quantized(family_checkpoints, name, "int4", "float16")
    check_fused(model, shape)
    assert record["shared_with_lm_head"] == shape.tie_word_embeddings
    (gather,) = by_op(model, "GatherBlockQuantized")
    scales = next(t for t in model.graph.initializer if t.name == gather.input[2])
    assert scales.data_type == TensorProto.FLOAT16
    rows = gathered_rows(model, shape.vocab_size, TensorProto.FLOAT16)
    assert rows.dtype == np.float16 and rows.shape == (shape.vocab_size, shape.hidden_size)
    assert np.isfinite(rows).all() and np.abs(rows).max() > 0
