"""An int8 KV cache for CPU builds: calibrated per-channel scales inside GroupQueryAttention.

Why: at the context an editor sends (~1,000 tokens), one decode step of a
350M model reads as many bytes of fp32 keys/values (~140 MB) as of int4
weights. onnxruntime's CPU GroupQueryAttention can keep the cache as int8
(symmetric, one scale per channel of each layer's K and V) and dequantize as
it reads: measured on the 350M shapes at 846 tokens on this project's 2-core
machine, GroupQueryAttention went from 4.9 to 2.9 ms per step (docs/parity.md
has the accuracy, docs/lsp.md the latency).

Scales come from calibration, not from the data at run time: the largest
|K| and |V| per channel while the PyTorch reference reads CALIBRATION_TEXT,
with a margin for text that reaches further (values beyond saturate). Keys
are stored after rotary, which turns each pair of rotary channels by the
position's angle: both channels of a pair get the pair's larger scale, so
the scale holds at every position. Which channels pair up is the family's:
GPT-J interleaved rotary (CodeGen) turns 2i with 2i+1, rotate-half (LLaMA,
Qwen2, StarCoder2) turns i with i + rotary_dim/2. Scales are per KV head
(num_kv_heads × head_dim), which is fewer than the query heads under GQA.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from acepilot.server.errors import BuildError

KV_CACHE_CHOICES = ("auto", "float", "int8")
INT8_MAX = 127
CALIBRATION_MARGIN = 1.25  # headroom over the calibration maxima
QUANT_TYPE = "PER_CHANNEL"
SCALE_INPUTS = (12, 13)  # GroupQueryAttention's k_scale, v_scale

# Code in several languages, none of it the parity gate's held-out text.
CALIBRATION_TEXT = """\
import json
import os
from dataclasses import dataclass, field


@dataclass
class Config:
    name: str
    paths: list[str] = field(default_factory=list)
    retries: int = 3

    @classmethod
    def load(cls, path):
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
        return cls(data["name"], data.get("paths", []), int(data.get("retries", 3)))


def walk(root, suffix=".py"):
    for directory, _dirs, files in os.walk(root):
        for name in sorted(files):
            if name.endswith(suffix):
                yield os.path.join(directory, name)


async function fetchAll(urls, limit = 4) {
  const results = new Array(urls.length);
  let next = 0;
  async function worker() {
    while (next < urls.length) {
      const index = next++;
      const response = await fetch(urls[index]);
      results[index] = response.ok ? await response.json() : null;
    }
  }
  await Promise.all(Array.from({ length: limit }, worker));
  return results;
}

int binary_search(const int *items, int count, int wanted) {
    int lo = 0, hi = count - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        if (items[mid] == wanted) return mid;
        if (items[mid] < wanted) lo = mid + 1; else hi = mid - 1;
    }
    return -1;
}

func (s *Server) handle(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	defer r.Body.Close()
}
"""


def resolve_kv_cache(choice: str, precision: str, device: str) -> bool:
    """Whether the build quantizes its KV cache to int8.

    `auto`: on CPU for the weight-quantized precisions, whose users chose speed
    over the last fraction of accuracy; fp32/fp16 builds keep a float cache
    (fp32 is the exact reference). The int8 cache is only known to work with
    onnxruntime's CPU kernel, so CUDA builds are refused.
    """
    if choice not in KV_CACHE_CHOICES:
        raise BuildError(f"kv cache must be one of {', '.join(KV_CACHE_CHOICES)}, got {choice!r}")
    if choice == "auto":
        return device == "cpu" and precision in ("int8", "int4")
    if choice == "int8" and device != "cpu":
        raise BuildError("--kv-cache int8 is only supported for --device cpu")
    return choice == "int8"


def calibrate_kv_scales(
    model: Any,
    encode: Callable[[str], list[int]],
    max_length: int,
    rotary_dim: int,
    text: str = CALIBRATION_TEXT,
    *,
    interleaved: bool = True,
) -> tuple[list[np.ndarray], list[np.ndarray], int]:
    """Per layer, the K and V scales [kv_heads * head_dim] (float32), and the tokens read."""
    import torch

    ids = encode(text)[:max_length]
    if len(ids) < 16:
        raise BuildError("KV calibration: the calibration text is too short for this tokenizer")
    with torch.no_grad():
        cache = model(torch.tensor([ids], dtype=torch.long), use_cache=True).past_key_values
    k_scales, v_scales = [], []
    for layer in cache.layers:
        keys = layer.keys[0].abs().amax(dim=1).float().numpy()  # [heads, head_dim]
        values = layer.values[0].abs().amax(dim=1).float().numpy()
        pair_rotary_channels_(keys, rotary_dim, interleaved)
        k_scales.append(to_scale(keys))
        v_scales.append(to_scale(values))
    return k_scales, v_scales, len(ids)


def pair_rotary_channels_(keys: np.ndarray, rotary_dim: int, interleaved: bool) -> None:
    """Give both channels of every rotary pair the pair's maximum ([heads, head_dim], in place)."""
    if interleaved:
        keys[:, :rotary_dim] = np.repeat(
            keys[:, :rotary_dim].reshape(keys.shape[0], -1, 2).max(axis=-1), 2, axis=-1
        )
        return
    half = rotary_dim // 2
    pair_max = np.maximum(keys[:, :half], keys[:, half:rotary_dim])
    keys[:, :half] = pair_max
    keys[:, half:rotary_dim] = pair_max


def to_scale(maxima: np.ndarray) -> np.ndarray:
    """Symmetric int8 scale per channel; a channel never seen non-zero still gets a usable one."""
    flat = maxima.reshape(-1).astype(np.float32) * CALIBRATION_MARGIN
    floor = max(float(flat.max()), 1e-6) * 1e-3
    return np.maximum(flat, floor) / INT8_MAX


def quantize_kv_cache(
    graph: onnx.ModelProto, k_scales: list[np.ndarray], v_scales: list[np.ndarray]
) -> onnx.ModelProto:
    """Switch every GroupQueryAttention and the graph's past/present to an int8 cache."""
    attentions = [node for node in graph.graph.node if node.op_type == "GroupQueryAttention"]
    if len(attentions) != len(k_scales) or len(k_scales) != len(v_scales):
        raise BuildError(
            f"KV calibration has {len(k_scales)} layers, the graph {len(attentions)} attentions"
        )
    for layer, node in enumerate(attentions):
        while len(node.input) <= max(SCALE_INPUTS):
            node.input.append("")
        for index, kind, scale in (
            (SCALE_INPUTS[0], "k", k_scales[layer]),
            (SCALE_INPUTS[1], "v", v_scales[layer]),
        ):
            name = f"/model/kv_cache_scales/{kind}_scale.{layer}"
            graph.graph.initializer.append(numpy_helper.from_array(scale, name))
            node.input[index] = name
        node.attribute.extend(
            [
                helper.make_attribute("kv_cache_bit_width", 8),
                helper.make_attribute("k_quant_type", QUANT_TYPE),
                helper.make_attribute("v_quant_type", QUANT_TYPE),
            ]
        )
    for value in [*graph.graph.input, *graph.graph.output]:
        if value.name.startswith(("past_key_values.", "present.")):
            value.type.tensor_type.elem_type = TensorProto.INT8
    return graph
