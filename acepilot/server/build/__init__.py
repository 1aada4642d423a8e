"""Model build: a CodeGen checkpoint -> fused (and quantized) ONNX graph -> registry entry.

Needs the `build` extra (torch, transformers, onnx); serving never imports this package.
"""
