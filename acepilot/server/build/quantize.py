"""Weight-only quantization of the fused graph's MatMuls into MatMulNBits.

Uses onnxruntime's own MatMulNBitsQuantizer (symmetric). On CPU,
accuracy_level 4 lets MatMulNBits compute with int8 activations, which is
what makes int8/int4 prefill fast on AVX2 without VNNI.

Block sizes: int8 keeps 32 (its scales are a small share of its bytes);
int4 uses 128, the group size of GPTQ/AWQ 4-bit models: a block-32 int4
weight spends a fifth of its bytes on fp32 scales, and decode is bound by
bytes read. Measured on the 350M shapes on this project's 2-core machine,
MatMulNBits per decode step: 8.9 ms at block 32, 7.3 at 64, 6.4 at 128; on
the trained test model both block sizes pass the int4 parity gate with
similar margins (docs/parity.md).

`quantize_weights` also turns the input embedding's float Gather into a
GatherBlockQuantized at the same bits and block size (embedding.py), sharing
the lm_head's packed weights when the model ties them.
"""

from __future__ import annotations

import logging
from typing import Any

import onnx

from acepilot.server.build.embedding import lm_head_ties_embedding, quantize_embedding
from acepilot.server.errors import BuildError

BLOCK_SIZES = {"int4": 128, "int8": 32}
BITS = {"int4": 4, "int8": 8}


def quantization_settings(precision: str, device: str) -> dict[str, int]:
    """What the manifest records about the weights' quantization."""
    return {
        "bits": BITS[precision],
        "block_size": BLOCK_SIZES[precision],
        "accuracy_level": 4 if device == "cpu" else 0,
    }


def quantize_weights(
    model: onnx.ModelProto, precision: str, device: str
) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """Every MatMul into MatMulNBits and the embedding into GatherBlockQuantized; returns
    the model and the manifest's record of the embedding."""
    tied = lm_head_ties_embedding(model)  # before the float lm_head weight is replaced
    model = quantize_matmuls(model, precision, device)
    return quantize_embedding(model, BITS[precision], BLOCK_SIZES[precision], tied)


def quantize_matmuls(model: onnx.ModelProto, precision: str, device: str) -> onnx.ModelProto:
    if precision not in BITS:
        raise BuildError(f"no weight quantization for precision {precision}")
    from onnxruntime.quantization.matmul_nbits_quantizer import (
        DefaultWeightOnlyQuantConfig,
        MatMulNBitsQuantizer,
    )
    from onnxruntime.quantization.quant_utils import QuantFormat

    settings = quantization_settings(precision, device)
    config = DefaultWeightOnlyQuantConfig(
        block_size=settings["block_size"],
        is_symmetric=True,
        accuracy_level=settings["accuracy_level"],
        bits=settings["bits"],
        quant_format=QuantFormat.QOperator,
        op_types_to_quantize=("MatMul",),
    )
    quiet = logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer")
    previous = quiet.level
    quiet.setLevel(logging.WARNING)  # it logs every node at INFO
    try:
        quantizer = MatMulNBitsQuantizer(model, algo_config=config)
        quantizer.process()
    finally:
        quiet.setLevel(previous)
    quantized: onnx.ModelProto = quantizer.model.model
    remaining = [n.name for n in quantized.graph.node if n.op_type == "MatMul"]
    if remaining:
        raise BuildError(f"MatMuls left unquantized: {remaining[:3]}")
    return quantized
