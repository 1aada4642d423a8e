"""The built graph as a file: save it, check that it is fully fused, step through it."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import onnx

from acepilot.server.errors import BuildError

log = logging.getLogger(__name__)

# Weights above this go to model.onnx.data. Protobuf cannot hold 2 GB; and onnxruntime loads
# an inline graph by parsing it whole first: a 252 MB int4 graph peaked 157 MB higher inline
# (docs/benchmarks.md, "Where the memory goes"). Small graphs (the test models, the shipped
# default) stay one file.
EXTERNAL_DATA_BYTES = 64 << 20
# Every op the fused graph may contain; anything else means a pattern was left unfused.
FUSED_OPS = {
    "Gather",
    "GatherBlockQuantized",  # the embedding of int8/int4 builds (embedding.py)
    "Reshape",  # its view of a tied lm_head's packed weight, folded at load
    "LayerNormalization",
    "SkipLayerNormalization",
    "SimplifiedLayerNormalization",
    "SkipSimplifiedLayerNormalization",
    "Sigmoid",
    "Mul",
    "GroupQueryAttention",
    "MatMul",
    "MatMulNBits",
    "FastGelu",
    "Gelu",
    "Add",
    "Slice",
    "Cast",
}


class KVLayout(Protocol):
    """What stepping through a graph needs to know: a ModelShape, or CodeGenShape."""

    @property
    def num_layers(self) -> int: ...

    @property
    def num_kv_heads(self) -> int: ...

    @property
    def head_dim(self) -> int: ...

    @property
    def max_length(self) -> int: ...


@dataclass(frozen=True)
class ManifestLayout:
    """The KV layout a registry entry's manifest records."""

    num_layers: int
    num_kv_heads: int
    head_dim: int
    max_length: int

    @classmethod
    def of(cls, manifest: dict[str, Any]) -> ManifestLayout:
        graph = manifest["graph"]
        return cls(
            graph["num_layers"], graph["num_kv_heads"], graph["head_dim"], graph["max_length"]
        )


def check_fused(graph: onnx.ModelProto, shape: KVLayout) -> dict[str, int]:
    counts = Counter(node.op_type for node in graph.graph.node)
    unexpected = set(counts) - FUSED_OPS
    if unexpected:
        raise BuildError(f"graph has unfused ops: {sorted(unexpected)}")
    if counts["GroupQueryAttention"] != shape.num_layers:
        raise BuildError(
            f"expected {shape.num_layers} GroupQueryAttention nodes, got {counts['GroupQueryAttention']}"
        )
    return dict(sorted(counts.items()))


def save_graph(
    graph: onnx.ModelProto, path: Path, external_above: int = EXTERNAL_DATA_BYTES
) -> list[str]:
    """Inline weights up to `external_above` bytes, one external data file beyond."""
    weight_bytes = sum(len(t.raw_data) for t in graph.graph.initializer)
    if weight_bytes <= external_above:
        onnx.save_model(graph, path)
        return [path.name]
    data_name = path.name + ".data"
    onnx.save_model(
        graph, path, save_as_external_data=True, all_tensors_to_one_file=True, location=data_name
    )
    return [path.name, data_name]


class GraphStepper:
    """Runs the graph one step at a time on a single sequence (parity's view of it)."""

    def __init__(self, path: Path, shape: KVLayout, dtype: str, device: str) -> None:
        import onnxruntime as ort

        providers = ["CPUExecutionProvider"]
        if device == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        elif device == "cuda":
            log.warning("CUDA is not available here: the parity gate runs on the CPU")
        self.session = ort.InferenceSession(str(path), providers=providers)
        self.max_length = shape.max_length
        kv = np.zeros((1, shape.num_kv_heads, shape.max_length, shape.head_dim), dtype=dtype)
        self.buffers = {
            f"{layer}.{kind}": ort.OrtValue.ortvalue_from_numpy(kv.copy())
            for layer in range(shape.num_layers)
            for kind in ("key", "value")
        }

    def __call__(self, ids: Sequence[int], cached: int) -> np.ndarray:
        binding = self.session.io_binding()
        total = cached + len(ids)
        binding.bind_cpu_input("input_ids", np.asarray([ids], dtype=np.int64))
        binding.bind_cpu_input("seqlens_k", np.asarray([total - 1], dtype=np.int32))
        binding.bind_cpu_input("total_sequence_length", np.asarray(total, dtype=np.int32))
        binding.bind_output("logits")
        for key, buffer in self.buffers.items():
            binding.bind_ortvalue_input(f"past_key_values.{key}", buffer)
            binding.bind_ortvalue_output(f"present.{key}", buffer)
        self.session.run_with_iobinding(binding)
        logits: np.ndarray = binding.get_outputs()[0].numpy()
        return logits[0, -1]
