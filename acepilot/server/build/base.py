"""The fused decoder graph, written from the weights: the part every family shares.

Modelled on onnxruntime-genai's builder (src/python/py/models/builder.py): one
`make_*` method per op, subgraph, layer and model, names of the form
`/model/layers.{i}/...`, and onnxruntime's contrib ops in place of every
unfused pattern:

- attention: com.microsoft GroupQueryAttention with rotary inside (GPT-J
  interleaved or rotate-half, full or partial, cos/sin caches of width
  rotary_dim/2 with any rope scaling baked in), `kv_num_heads` ≤ `num_heads`,
  one past/present KV buffer shared in place, an optional sliding window;
- norms: (Simplified)LayerNormalization, and Skip(Simplified)LayerNormalization
  for residual + norm (the preceding projection's bias folded in);
- MLP: MatMul -> FastGelu (tanh GELU with the first bias) -> MatMul, or SwiGLU
  (MatMul gate, MatMul up, Sigmoid, Mul, Mul, MatMul down);
- logits only for the last position (prefill costs 15-20% less).

A family (`families/*.py`) subclasses `DecoderGraphBuilder` and says where its
tensors are and how its attention input is packed. Weights are float32 or
float16; `quantize.py` turns MatMuls into MatMulNBits afterwards, and the
embedding's float Gather into a GatherBlockQuantized (`embedding.py`). The
graph's inputs and outputs: docs/model-format.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from acepilot.server.build.shape import ModelShape
from acepilot.server.errors import BuildError

OPSET = 17
MS_DOMAIN = "com.microsoft"
CONTRIB_OPS = {
    "GroupQueryAttention",
    "SkipLayerNormalization",
    "SkipSimplifiedLayerNormalization",
    "FastGelu",
    "MatMulNBits",
}
GELU_OPS = {"gelu_new": "FastGelu", "gelu_pytorch_tanh": "FastGelu", "gelu": "Gelu"}


@dataclass(frozen=True)
class Norm:
    """A norm's affine parameters: RMSNorm has no beta."""

    gamma: np.ndarray
    beta: np.ndarray | None


class DecoderGraphBuilder:
    """Writes the fused graph of one checkpoint; subclasses map the family's tensors."""

    def __init__(
        self, shape: ModelShape, weights: Mapping[str, np.ndarray], dtype: str = "float32"
    ) -> None:
        if dtype not in ("float32", "float16"):
            raise BuildError(f"unsupported graph dtype {dtype}")
        shape.check()
        self.shape = shape
        self.weights = weights
        self.np_dtype = np.float32 if dtype == "float32" else np.float16
        self.onnx_dtype = TensorProto.FLOAT if dtype == "float32" else TensorProto.FLOAT16
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.constants: dict[str, str] = {}
        self.attention_attrs: dict[str, Any] = {
            "num_heads": shape.num_heads,
            "kv_num_heads": shape.num_kv_heads,
            "do_rotary": 1,  # rotary inside the kernel, positions from seqlens_k
            "rotary_interleaved": int(shape.rotary_interleaved),
            "scale": 1.0 / float(np.sqrt(shape.head_dim)),
        }
        if shape.sliding_window is not None:
            # Same count as transformers' Starcoder2 mask (checked against it in
            # tests/server/build/test_families.py with a window shorter than the text).
            self.attention_attrs["local_window_size"] = shape.sliding_window
        self.norm_attrs: dict[str, Any] = {"epsilon": shape.norm_epsilon}

    # ---- what a family provides -------------------------------------------------

    def rotary_inv_freq(self) -> tuple[np.ndarray, float]:
        """inv_freq [rotary_dim/2] (float32) and the factor cos/sin are scaled by."""
        raise NotImplementedError

    def embedding(self) -> np.ndarray:
        raise NotImplementedError

    def qkv_projection(self, layer: int) -> tuple[np.ndarray, np.ndarray | None]:
        """[q; k; v] stacked as (out, in), heads then head dims, and the bias if any."""
        raise NotImplementedError

    def out_projection(self, layer: int) -> tuple[np.ndarray, np.ndarray | None]:
        raise NotImplementedError

    def input_norm(self, layer: int) -> Norm:
        raise NotImplementedError

    def post_attention_norm(self, layer: int) -> Norm:
        """The second norm of a sequential block (parallel blocks have none)."""
        raise NotImplementedError

    def final_norm(self) -> Norm:
        raise NotImplementedError

    def make_mlp(self, layer: int, x: str) -> tuple[str, np.ndarray | None]:
        """The MLP's output before its last bias, and that bias (folded into the next norm)."""
        raise NotImplementedError

    def lm_head(self) -> tuple[np.ndarray, np.ndarray | None]:
        raise NotImplementedError

    # ---- op level -------------------------------------------------------------

    def weight(self, key: str) -> np.ndarray:
        try:
            return np.asarray(self.weights[key], dtype=np.float32)
        except KeyError as exc:
            raise BuildError(f"checkpoint has no tensor {key!r}") from exc

    def optional_weight(self, key: str) -> np.ndarray | None:
        return self.weight(key) if key in self.weights else None

    def layer_norm_params(self, key: str) -> Norm:
        beta = self.optional_weight(f"{key}.bias") if self.shape.norm == "layer_norm" else None
        if self.shape.norm == "layer_norm" and beta is None:
            raise BuildError(f"checkpoint has no tensor {key + '.bias'!r}")
        return Norm(self.weight(f"{key}.weight"), beta)

    def make_initializer(self, name: str, array: np.ndarray, cast: bool = True) -> str:
        data = array.astype(self.np_dtype) if cast else array
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(data), name))
        return name

    def make_int_constant(self, values: list[int]) -> str:
        name = "/model/constants/INT64/" + "_".join(str(v) for v in values)
        if name not in self.constants:
            self.constants[name] = self.make_initializer(name, np.array(values, np.int64), False)
        return name

    def make_node(
        self, op_type: str, inputs: list[str], name: str, outputs: int = 1, **attrs: Any
    ) -> list[str]:
        domain = MS_DOMAIN if op_type in CONTRIB_OPS else ""
        output_names = [f"{name}/output_{i}" for i in range(outputs)]
        self.nodes.append(
            helper.make_node(op_type, inputs, output_names, name, None, domain, **attrs)
        )
        return output_names

    def make_matmul(self, x: str, weight_out_in: np.ndarray, name: str) -> str:
        """x @ W^T with W stored [in, out]; a constant B is what MatMulNBits quantizes."""
        b = self.make_initializer(f"{name}.weight", weight_out_in.T)
        return self.make_node("MatMul", [x, b], f"{name}/MatMul")[0]

    def make_add_bias(self, x: str, bias: np.ndarray | None, name: str) -> str:
        if bias is None:
            return x
        b = self.make_initializer(f"{name}.bias", bias)
        return self.make_node("Add", [x, b], f"{name}/Add")[0]

    def rename_output(self, old: str, new: str) -> None:
        for node in self.nodes:
            for i, name in enumerate(node.output):
                if name == old:
                    node.output[i] = new

    # ---- subgraph level -------------------------------------------------------

    def make_attention(self, layer: int, x: str) -> tuple[str, np.ndarray | None]:
        """
                 x
                 |
          MatMul (packed q|k|v) [+ Add bias]
                 |
        GroupQueryAttention  <- past k/v (shared buffer), seqlens_k, total_len, cos, sin
                 |
          MatMul (o_proj)   -> its bias goes to the next Skip*Norm
        """
        prefix = f"/model/layers.{layer}/attn"
        weight, bias = self.qkv_projection(layer)
        qkv = self.make_matmul(x, weight, f"{prefix}/qkv_proj")
        qkv = self.make_add_bias(qkv, bias, f"{prefix}/qkv_proj")
        attn, present_k, present_v = self.make_node(
            "GroupQueryAttention",
            [
                qkv,
                "",
                "",
                f"past_key_values.{layer}.key",
                f"past_key_values.{layer}.value",
                "seqlens_k",
                "total_sequence_length",
                "cos_cache",
                "sin_cache",
            ],
            f"{prefix}/GroupQueryAttention",
            outputs=3,
            **self.attention_attrs,
        )
        self.rename_output(present_k, f"present.{layer}.key")
        self.rename_output(present_v, f"present.{layer}.value")
        out_w, out_b = self.out_projection(layer)
        return self.make_matmul(attn, out_w, f"{prefix}/o_proj"), out_b

    def make_gelu_mlp(
        self,
        layer: int,
        x: str,
        w_in: np.ndarray,
        b_in: np.ndarray | None,
        w_out: np.ndarray,
        b_out: np.ndarray | None,
    ) -> tuple[str, np.ndarray | None]:
        """x -> MatMul (fc_in) -> FastGelu(+ fc_in bias) -> MatMul (fc_out)."""
        prefix = f"/model/layers.{layer}/mlp"
        hidden = self.make_matmul(x, w_in, f"{prefix}/fc_in")
        op = GELU_OPS[self.shape.activation]
        if op == "FastGelu":
            inputs = [hidden]
            if b_in is not None:
                inputs.append(self.make_initializer(f"{prefix}/fc_in.bias", b_in))
            act = self.make_node("FastGelu", inputs, f"{prefix}/FastGelu")[0]
        else:
            biased = self.make_add_bias(hidden, b_in, f"{prefix}/fc_in")
            act = self.make_node("Gelu", [biased], f"{prefix}/Gelu")[0]
        return self.make_matmul(act, w_out, f"{prefix}/fc_out"), b_out

    def make_swiglu_mlp(
        self, layer: int, x: str, gate: np.ndarray, up: np.ndarray, down: np.ndarray
    ) -> str:
        """
        x -> MatMul (gate) -> Sigmoid -> Mul (SiLU) -> Mul (× MatMul (up)) -> MatMul (down)
        """
        prefix = f"/model/layers.{layer}/mlp"
        g = self.make_matmul(x, gate, f"{prefix}/gate_proj")
        u = self.make_matmul(x, up, f"{prefix}/up_proj")
        sig = self.make_node("Sigmoid", [g], f"{prefix}/act_fn/Sigmoid")[0]
        silu = self.make_node("Mul", [g, sig], f"{prefix}/act_fn/Mul")[0]
        gated = self.make_node("Mul", [silu, u], f"{prefix}/Mul")[0]
        return self.make_matmul(gated, down, f"{prefix}/down_proj")

    def make_norm(self, x: str, norm: Norm, name: str) -> str:
        gamma = self.make_initializer(f"{name}.weight", norm.gamma)
        if norm.beta is None:
            return self.make_node(
                "SimplifiedLayerNormalization",
                [x, gamma],
                f"{name}/SimplifiedLayerNorm",
                axis=-1,
                stash_type=1,
                **self.norm_attrs,
            )[0]
        beta = self.make_initializer(f"{name}.bias", norm.beta)
        return self.make_node(
            "LayerNormalization", [x, gamma, beta], f"{name}/LayerNorm", axis=-1, **self.norm_attrs
        )[0]

    def make_skip_norm(
        self, x: str, residual: str, norm: Norm, bias: np.ndarray | None, name: str
    ) -> tuple[str, str]:
        """Normalised (x + residual + bias) and the sum itself (the next residual)."""
        gamma = self.make_initializer(f"{name}.weight", norm.gamma)
        bias_input = [] if bias is None else [self.make_initializer(f"{name}.skip_bias", bias)]
        if norm.beta is None:
            op, inputs = "SkipSimplifiedLayerNormalization", [x, residual, gamma, *bias_input]
        else:
            beta = self.make_initializer(f"{name}.bias", norm.beta)
            op, inputs = "SkipLayerNormalization", [x, residual, gamma, beta, *bias_input]
        out = self.make_node(op, inputs, f"{name}/{op}", outputs=4, **self.norm_attrs)
        return out[0], out[3]

    def make_lm_head(self, x: str) -> str:
        """x -> Slice (last position) -> MatMul [-> Add bias] [-> Cast to float32]."""
        last = self.make_node(
            "Slice",
            [
                x,
                self.make_int_constant([-1]),
                self.make_int_constant([2**62]),
                self.make_int_constant([1]),
            ],
            "/model/lm_head/Slice",
        )[0]
        weight, bias = self.lm_head()
        logits = self.make_matmul(last, weight, "/model/lm_head")
        logits = self.make_add_bias(logits, bias, "/model/lm_head")
        if self.onnx_dtype != TensorProto.FLOAT:
            logits = self.make_node("Cast", [logits], "/model/lm_head/Cast", to=TensorProto.FLOAT)[
                0
            ]
        self.rename_output(logits, "logits")
        return "logits"

    # ---- model level -----------------------------------------------------------

    def rotary_caches(self) -> tuple[np.ndarray, np.ndarray]:
        """cos/sin [max_length, rotary_dim/2], float32, scaling factor applied."""
        inv_freq, scaling = self.rotary_inv_freq()
        inv_freq = np.asarray(inv_freq, dtype=np.float32)
        if inv_freq.shape != (self.shape.rotary_dim // 2,):
            raise BuildError(f"rotary: {inv_freq.shape[0]} frequencies for {self.shape.rotary_dim}")
        positions = np.arange(self.shape.max_length, dtype=np.float32)
        angles = np.outer(positions, inv_freq).astype(np.float32)
        cos = (np.cos(angles) * np.float32(scaling)).astype(np.float32)
        sin = (np.sin(angles) * np.float32(scaling)).astype(np.float32)
        return cos, sin

    def make_model(self) -> onnx.ModelProto:
        """
        input_ids -> Gather(embed) -> Norm(input norm of layer 0)
          parallel (CodeGen): attention(x) + mlp(x) -> SkipNorm(residual, next input norm)
          sequential: attention(x) -> SkipNorm(residual, post-attention norm)
                      -> mlp -> SkipNorm(residual, next input norm | final norm)
        -> lm_head on the last position -> logits
        """
        shape = self.shape
        cos, sin = self.rotary_caches()
        self.make_initializer("cos_cache", cos)
        self.make_initializer("sin_cache", sin)
        embed = self.make_initializer("/model/embed_tokens.weight", self.embedding())
        residual = self.make_node("Gather", [embed, "input_ids"], "/model/embed_tokens/Gather")[0]
        x = self.make_norm(residual, self.input_norm(0), "/model/layers.0/input_layernorm")
        for layer in range(shape.num_layers):
            last = layer == shape.num_layers - 1
            next_norm = self.final_norm() if last else self.input_norm(layer + 1)
            next_name = "/model/norm" if last else f"/model/layers.{layer + 1}/input_layernorm"
            attn, attn_bias = self.make_attention(layer, x)
            if shape.layout == "parallel":
                mlp, mlp_bias = self.make_mlp(layer, x)
                branch_sum = self.make_node("Add", [attn, mlp], f"/model/layers.{layer}/Add")[0]
                x, residual = self.make_skip_norm(
                    branch_sum, residual, next_norm, sum_biases(attn_bias, mlp_bias), next_name
                )
            else:
                x, residual = self.make_skip_norm(
                    attn,
                    residual,
                    self.post_attention_norm(layer),
                    attn_bias,
                    f"/model/layers.{layer}/post_attention_layernorm",
                )
                mlp, mlp_bias = self.make_mlp(layer, x)
                x, residual = self.make_skip_norm(mlp, residual, next_norm, mlp_bias, next_name)
        self.make_lm_head(x)
        return self.make_graph_proto()

    def make_graph_proto(self) -> onnx.ModelProto:
        shape = self.shape
        kv_shape: list[str | int | None] = [
            "batch",
            shape.num_kv_heads,
            "max_length",
            shape.head_dim,
        ]
        inputs = [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"]),
            helper.make_tensor_value_info("seqlens_k", TensorProto.INT32, ["batch"]),
            helper.make_tensor_value_info("total_sequence_length", TensorProto.INT32, []),
        ]
        outputs = [
            helper.make_tensor_value_info(
                "logits", TensorProto.FLOAT, ["batch", 1, shape.vocab_size]
            )
        ]
        for layer in range(shape.num_layers):
            for kind in ("key", "value"):
                inputs.append(
                    helper.make_tensor_value_info(
                        f"past_key_values.{layer}.{kind}", self.onnx_dtype, kv_shape
                    )
                )
                outputs.append(
                    helper.make_tensor_value_info(
                        f"present.{layer}.{kind}", self.onnx_dtype, kv_shape
                    )
                )
        graph = helper.make_graph(
            self.nodes, f"acepilot-{shape.family}", inputs, outputs, self.initializers
        )
        model = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid(MS_DOMAIN, 1)],
            producer_name="acepilot",
        )
        model.ir_version = 10
        return model


def sum_biases(a: np.ndarray | None, b: np.ndarray | None) -> np.ndarray | None:
    if a is None:
        return b
    if b is None:
        return a
    return a + b


def default_inv_freq(rotary_dim: int, theta: float) -> np.ndarray:
    """1 / theta^(2i/d) in float32, the way transformers computes it (float32 pow)."""
    exponent = (np.arange(0, rotary_dim, 2, dtype=np.int64).astype(np.float32)) / np.float32(
        rotary_dim
    )
    return (np.float32(1.0) / (np.float32(theta) ** exponent)).astype(np.float32)
