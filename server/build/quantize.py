"""Weight-only quantization of the fused graph's MatMuls into MatMulNBits.

Uses onnxruntime's own MatMulNBitsQuantizer (symmetric, block 32). On CPU,
accuracy_level 4 lets MatMulNBits compute with int8 activations, which is
what makes int8/int4 prefill fast on AVX2 without VNNI.
"""

from __future__ import annotations

import logging

import onnx

from server.errors import BuildError

BLOCK_SIZE = 32
BITS = {"int4": 4, "int8": 8}


def quantize_matmuls(model: onnx.ModelProto, precision: str, device: str) -> onnx.ModelProto:
    if precision not in BITS:
        raise BuildError(f"no weight quantization for precision {precision}")
    from onnxruntime.quantization.matmul_nbits_quantizer import (
        DefaultWeightOnlyQuantConfig,
        MatMulNBitsQuantizer,
    )
    from onnxruntime.quantization.quant_utils import QuantFormat

    config = DefaultWeightOnlyQuantConfig(
        block_size=BLOCK_SIZE,
        is_symmetric=True,
        accuracy_level=4 if device == "cpu" else 0,
        bits=BITS[precision],
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
