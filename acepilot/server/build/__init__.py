"""Model build: a checkpoint of a supported family -> fused (and quantized) ONNX graph -> registry.

base.py writes what every family shares, families/*.py what differs (one thin class
each); pipeline.py runs checkpoint -> graph -> quantize -> parity gate -> registry.
Needs the `build` extra (torch, transformers, onnx, sentencepiece) except `shape`;
serving never imports this package.
"""
