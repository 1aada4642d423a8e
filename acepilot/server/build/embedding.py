"""The input embedding of a weight-quantized graph: GatherBlockQuantized, not a float table.

The fused graph starts with `Gather(/model/embed_tokens.weight, input_ids)` on a
float table (base.py). In int8/int4 builds that table would be the largest tensor
in the file: Qwen2.5-Coder-0.5B's 151,936 x 896 rows are 545 MB in float32, more
than all its quantized layers together, where a GGUF file stores them quantized.
This replaces the Gather with onnxruntime's contrib op GatherBlockQuantized (CPU
and CUDA kernels for uint8 data with float or float16 scales), as
onnxruntime-genai's builder does for tied embeddings:

- tied (the lm_head's weight equals the table, e.g. Qwen2.5-Coder 0.5B-3B,
  StarCoder2-3B): the gather reads the lm_head MatMulNBits' own initializers,
  so the file holds the packed weights and scales once. MatMulNBits' B is
  [vocab, k_blocks, blob] uint8, rows packed along K low nibble first, which is
  byte for byte a [vocab, k_blocks * blob] table quantized along its last axis:
  one Reshape (constant-folded when the session loads) gives the gather its 2-D
  view, and the scales [vocab, k_blocks] are shared as they are.
- untied: the table is quantized on its own by the same onnxruntime routine
  MatMulNBitsQuantizer uses for a MatMul weight (symmetric, same bits and block).

Both ops then decode the same values: symmetric quantization writes no zero
points, and GatherBlockQuantized's default zero point for uint8 data is
2^(bits-1) (8 for 4 bits, 128 for 8), MatMulNBits' default too. When the hidden
size is not a multiple of the block, the packed rows are padded to whole blocks;
a Slice cuts the gathered rows back to the hidden size.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from acepilot.server.errors import BuildError

TABLE = "/model/embed_tokens.weight"
GATHER = "/model/embed_tokens/Gather"
LM_HEAD_WEIGHT = "/model/lm_head.weight"
PREFIX = "/model/embed_tokens"
MS_DOMAIN = "com.microsoft"


def initializer(model: onnx.ModelProto, name: str) -> onnx.TensorProto | None:
    return next((t for t in model.graph.initializer if t.name == name), None)


def lm_head_ties_embedding(model: onnx.ModelProto) -> bool:
    """True when the lm_head's weight (stored [hidden, vocab]) is the embedding table
    transposed, value for value: then one quantized copy serves both. Call it before
    the MatMuls are quantized (afterwards the float lm_head weight is gone)."""
    table, head = initializer(model, TABLE), initializer(model, LM_HEAD_WEIGHT)
    if table is None or head is None or list(table.dims) != list(reversed(head.dims)):
        return False
    rows, columns = numpy_helper.to_array(table), numpy_helper.to_array(head)
    if not np.array_equal(rows[0], columns[:, 0]):  # untied models differ at once
        return False
    return bool(np.array_equal(rows, columns.T))


def quantize_embedding(
    model: onnx.ModelProto, bits: int, block_size: int, tied: bool
) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """Replace the float Gather by GatherBlockQuantized; returns the model (changed in
    place) and what the manifest records about the embedding."""
    graph = model.graph
    position, gather = next(
        ((i, n) for i, n in enumerate(graph.node) if n.name == GATHER), (None, None)
    )
    table = initializer(model, TABLE)
    if gather is None or position is None or table is None or gather.input[0] != TABLE:
        raise BuildError(f"graph has no float embedding Gather {GATHER!r} on {TABLE!r}")
    vocab, hidden = (int(d) for d in table.dims)
    nodes: list[onnx.NodeProto] = []
    if tied:
        data, scales = shared_lm_head_tensors(model, vocab, hidden, bits, block_size)
        shape_name = f"{PREFIX}/constants/shape"
        graph.initializer.append(
            numpy_helper.from_array(np.array([vocab, -1], dtype=np.int64), shape_name)
        )
        nodes.append(
            helper.make_node(
                "Reshape", [data, shape_name], [f"{PREFIX}/Reshape/output_0"], f"{PREFIX}/Reshape"
            )
        )
        data = f"{PREFIX}/Reshape/output_0"
    else:
        data, scales = quantize_table(model, table, bits, block_size)
    graph.initializer.remove(table)
    padded = -(-hidden // block_size) * block_size
    gathered = f"{PREFIX}/GatherBlockQuantized/output_0"
    nodes.append(
        helper.make_node(
            "GatherBlockQuantized",
            [data, gather.input[1], scales],
            [gathered if padded != hidden else gather.output[0]],
            f"{PREFIX}/GatherBlockQuantized",
            domain=MS_DOMAIN,
            bits=bits,
            block_size=block_size,
            gather_axis=0,
            quantize_axis=1,  # explicit: older CUDA kernels default to 0
        )
    )
    if padded != hidden:
        cut = [f"{PREFIX}/constants/{name}" for name in ("starts", "ends", "axes")]
        for name, value in zip(cut, (0, hidden, -1), strict=True):
            graph.initializer.append(numpy_helper.from_array(np.array([value], np.int64), name))
        nodes.append(
            helper.make_node("Slice", [gathered, *cut], [gather.output[0]], f"{PREFIX}/Slice")
        )
    graph.node.remove(gather)
    for offset, node in enumerate(nodes):
        graph.node.insert(position + offset, node)
    return model, {
        "op": "GatherBlockQuantized",
        "bits": bits,
        "block_size": block_size,
        "shared_with_lm_head": tied,
    }


def shared_lm_head_tensors(
    model: onnx.ModelProto, vocab: int, hidden: int, bits: int, block_size: int
) -> tuple[str, str]:
    """The packed weight and scales of the lm_head's MatMulNBits, checked to be the
    layout the gather reads (N = vocab, K = hidden, same bits and block, no zero points)."""
    for node in model.graph.node:
        if node.op_type == "MatMulNBits" and node.input[1].startswith(LM_HEAD_WEIGHT):
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            expected = {"N": vocab, "K": hidden, "bits": bits, "block_size": block_size}
            if any(attrs.get(key) != value for key, value in expected.items()):
                raise BuildError(f"lm_head MatMulNBits is {attrs}, the embedding needs {expected}")
            if len(node.input) > 3 and node.input[3]:
                raise BuildError("lm_head MatMulNBits has zero points; expected symmetric weights")
            return node.input[1], node.input[2]
    raise BuildError("tied embeddings: no MatMulNBits on the lm_head weight")


def quantize_table(
    model: onnx.ModelProto, table: onnx.TensorProto, bits: int, block_size: int
) -> tuple[str, str]:
    """An untied table, quantized like a MatMul weight of shape [hidden, vocab]: onnxruntime's
    own routine, so the rounding and scales are those of every MatMulNBits in the graph."""
    from onnxruntime.quantization.matmul_nbits_quantizer import (
        DefaultWeightOnlyQuantConfig,
        DefaultWeightOnlyQuantizer,
    )
    from onnxruntime.quantization.quant_utils import QuantFormat

    config = DefaultWeightOnlyQuantConfig(
        block_size=block_size, is_symmetric=True, bits=bits, quant_format=QuantFormat.QOperator
    )
    values = numpy_helper.to_array(table)
    packed, scales, _ = DefaultWeightOnlyQuantizer(config).qbits_block_quant(
        np.ascontiguousarray(values.T)
    )
    vocab = values.shape[0]
    data_name, scales_name = f"{TABLE}_Q{bits}", f"{TABLE}_scales"
    model.graph.initializer.extend(
        [
            numpy_helper.from_array(np.ascontiguousarray(packed.reshape(vocab, -1)), data_name),
            numpy_helper.from_array(np.ascontiguousarray(scales.reshape(vocab, -1)), scales_name),
        ]
    )
    return data_name, scales_name
