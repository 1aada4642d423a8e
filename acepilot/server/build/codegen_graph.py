"""The fused CodeGen graph, written from the weights.

No exporter fuses CodeGen (optimum exports it unfused; onnxruntime's optimizer
fuses neither attention nor rotary for it; onnxruntime-genai's builder has no
CodeGen), so this module writes the graph the way onnxruntime-genai's builder
does for other decoders: one `make_*` function per op, subgraph, layer and
model, names of the form `/model/layers.{i}/...`, and contrib ops of
onnxruntime in place of every unfused pattern:

- attention: com.microsoft GroupQueryAttention with CodeGen's GPT-J rotary
  inside (interleaved, partial: `rotary_dim` of `head_dim`, cos/sin caches of
  width rotary_dim/2) and one past/present KV buffer shared in place;
- LayerNorm + residual: SkipLayerNormalization (the MLP's output bias folded in);
- MLP: MatMul -> FastGelu (tanh GELU, "gelu_new", with the fc_in bias) -> MatMul;
- logits only for the last position (prefill costs 15-20% less).

Weights are float32 or float16; `server.build.quantize` turns MatMuls into
MatMulNBits afterwards. See docs/model-format.md for the inputs and outputs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from acepilot.server.errors import BuildError

OPSET = 17
MS_DOMAIN = "com.microsoft"
MP_NUM = 4  # CodeGen packs qkv_proj in 4 model-parallel groups, each ordered q, v, k.
SUPPORTED_ACTIVATIONS = {"gelu_new": "FastGelu", "gelu_pytorch_tanh": "FastGelu", "gelu": "Gelu"}


@dataclass(frozen=True)
class CodeGenShape:
    """The hyper-parameters the graph depends on, read from a CodeGenConfig."""

    vocab_size: int
    n_embd: int
    n_layer: int
    n_head: int
    rotary_dim: int
    n_positions: int
    layer_norm_epsilon: float
    activation: str

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @classmethod
    def from_config(cls, config: Mapping[str, object]) -> CodeGenShape:
        def number(key: str) -> int:
            value = config.get(key)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise BuildError(f"config.json: {key} must be a positive integer, got {value!r}")
            return value

        if config.get("model_type") != "codegen":
            raise BuildError(
                f"config.json: model_type is {config.get('model_type')!r}; only 'codegen' is supported"
            )
        shape = cls(
            vocab_size=number("vocab_size"),
            n_embd=number("n_embd"),
            n_layer=number("n_layer"),
            n_head=number("n_head"),
            rotary_dim=number("rotary_dim"),
            n_positions=number("n_positions"),
            layer_norm_epsilon=float(config.get("layer_norm_epsilon", 1e-5)),  # type: ignore[arg-type]
            activation=str(config.get("activation_function", "gelu_new")),
        )
        shape.check()
        return shape

    def check(self) -> None:
        if self.n_embd % self.n_head:
            raise BuildError(f"n_embd {self.n_embd} is not divisible by n_head {self.n_head}")
        if self.n_head % MP_NUM:
            raise BuildError(
                f"n_head {self.n_head} must be a multiple of {MP_NUM} (CodeGen's mp_num)"
            )
        # GroupQueryAttention on CPU needs the cos cache (rotary_dim / 2) to be a
        # multiple of 8 and at most head_dim / 2.
        if self.rotary_dim % 16 or self.rotary_dim > self.head_dim:
            raise BuildError(
                f"rotary_dim {self.rotary_dim} must be a multiple of 16 and <= head_dim "
                f"{self.head_dim} for GroupQueryAttention"
            )
        if self.activation not in SUPPORTED_ACTIVATIONS:
            raise BuildError(f"activation_function {self.activation!r} is not supported")


def split_qkv(qkv_weight: np.ndarray, n_head: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Undo CodeGen's packing: rows are [mp_num groups] x [q | v | k] x local_dim.

    Returns q, k, v weights of shape [n_embd, n_embd] (out, in), rows ordered by
    head then head dimension, as GroupQueryAttention expects.
    """
    out_features, in_features = qkv_weight.shape
    n_embd = out_features // 3
    local_dim = n_embd // MP_NUM
    if out_features != 3 * n_embd or n_embd % n_head:
        raise BuildError(f"qkv_proj has unexpected shape {qkv_weight.shape}")
    grouped = qkv_weight.reshape(MP_NUM, 3, local_dim, in_features)
    q = grouped[:, 0].reshape(n_embd, in_features)
    v = grouped[:, 1].reshape(n_embd, in_features)
    k = grouped[:, 2].reshape(n_embd, in_features)
    return q, k, v


def rotary_caches(shape: CodeGenShape) -> tuple[np.ndarray, np.ndarray]:
    """cos/sin caches [n_positions, rotary_dim/2], exactly as CodeGen's
    create_sinusoidal_positions (GPT-J rotary on the first rotary_dim dims)."""
    exponent = np.arange(0, shape.rotary_dim, 2, dtype=np.int64) / shape.rotary_dim
    inv_freq = 1.0 / (10000.0**exponent)
    angles = np.outer(np.arange(shape.n_positions, dtype=np.float32), inv_freq.astype(np.float32))
    return np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)


class CodeGenGraphBuilder:
    """Writes the fused graph of one CodeGen checkpoint."""

    def __init__(
        self, shape: CodeGenShape, weights: Mapping[str, np.ndarray], dtype: str = "float32"
    ) -> None:
        if dtype not in ("float32", "float16"):
            raise BuildError(f"unsupported graph dtype {dtype}")
        self.shape = shape
        self.weights = weights
        self.np_dtype = np.float32 if dtype == "float32" else np.float16
        self.onnx_dtype = TensorProto.FLOAT if dtype == "float32" else TensorProto.FLOAT16
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.constants: dict[str, str] = {}
        self.attention_attrs: dict[str, Any] = {
            "num_heads": shape.n_head,  # query heads
            "kv_num_heads": shape.n_head,  # CodeGen is multi-head: as many KV heads
            "do_rotary": 1,  # rotary inside the kernel, positions from seqlens_k
            "rotary_interleaved": 1,  # GPT-J "rotate every two", not rotate-half
            "scale": 1.0 / float(np.sqrt(shape.head_dim)),
        }
        self.layernorm_attrs: dict[str, Any] = {"epsilon": shape.layer_norm_epsilon}

    # ---- op level -------------------------------------------------------------

    def weight(self, key: str) -> np.ndarray:
        try:
            return np.asarray(self.weights[key], dtype=np.float32)
        except KeyError as exc:
            raise BuildError(f"checkpoint has no tensor {key!r}") from exc

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
        domain = MS_DOMAIN if op_type in _CONTRIB_OPS else ""
        output_names = [f"{name}/output_{i}" for i in range(outputs)]
        self.nodes.append(
            helper.make_node(op_type, inputs, output_names, name, None, domain, **attrs)
        )
        return output_names

    def make_matmul(self, x: str, weight_out_in: np.ndarray, name: str) -> str:
        """x @ W^T with W stored [in, out]; a constant B is what MatMulNBits quantizes."""
        b = self.make_initializer(f"{name}.weight", weight_out_in.T)
        return self.make_node("MatMul", [x, b], f"{name}/MatMul")[0]

    # ---- subgraph level -------------------------------------------------------

    def make_attention(self, layer: int, x: str) -> tuple[str, str, str]:
        """
                 x
                 |
          MatMul (packed q|k|v)
                 |
        GroupQueryAttention  <- past k/v (shared buffer), seqlens_k, total_len, cos, sin
                 |
          MatMul (out_proj)
        """
        prefix = f"/model/layers.{layer}/attn"
        q, k, v = split_qkv(
            self.weight(f"transformer.h.{layer}.attn.qkv_proj.weight"), self.shape.n_head
        )
        qkv = self.make_matmul(x, np.concatenate([q, k, v], axis=0), f"{prefix}/qkv_proj")
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
        out_w = self.weight(f"transformer.h.{layer}.attn.out_proj.weight")
        return self.make_matmul(attn, out_w, f"{prefix}/out_proj"), present_k, present_v

    def make_mlp(self, layer: int, x: str) -> str:
        """
           x -> MatMul (fc_in) -> FastGelu(+ fc_in bias) -> MatMul (fc_out)
        (fc_out's bias is added by the next SkipLayerNormalization)
        """
        prefix = f"/model/layers.{layer}/mlp"
        w_in = self.weight(f"transformer.h.{layer}.mlp.fc_in.weight")
        b_in = self.make_initializer(
            f"{prefix}/fc_in.bias", self.weight(f"transformer.h.{layer}.mlp.fc_in.bias")
        )
        hidden = self.make_matmul(x, w_in, f"{prefix}/fc_in")
        op = SUPPORTED_ACTIVATIONS[self.shape.activation]
        if op == "FastGelu":
            act = self.make_node("FastGelu", [hidden, b_in], f"{prefix}/FastGelu")[0]
        else:
            biased = self.make_node("Add", [hidden, b_in], f"{prefix}/fc_in/Add")[0]
            act = self.make_node("Gelu", [biased], f"{prefix}/Gelu")[0]
        w_out = self.weight(f"transformer.h.{layer}.mlp.fc_out.weight")
        return self.make_matmul(act, w_out, f"{prefix}/fc_out")

    def make_layernorm(self, x: str, key: str, name: str) -> str:
        gamma = self.make_initializer(f"{name}.weight", self.weight(f"{key}.weight"))
        beta = self.make_initializer(f"{name}.bias", self.weight(f"{key}.bias"))
        return self.make_node(
            "LayerNormalization",
            [x, gamma, beta],
            f"{name}/LayerNorm",
            axis=-1,
            **self.layernorm_attrs,
        )[0]

    def make_skip_layernorm(
        self, x: str, residual: str, key: str, bias_key: str, name: str
    ) -> tuple[str, str]:
        """Normalised (x + residual + bias) and the sum itself (the next residual)."""
        gamma = self.make_initializer(f"{name}.weight", self.weight(f"{key}.weight"))
        beta = self.make_initializer(f"{name}.bias", self.weight(f"{key}.bias"))
        bias = self.make_initializer(f"{name}.skip_bias", self.weight(bias_key))
        out = self.make_node(
            "SkipLayerNormalization",
            [x, residual, gamma, beta, bias],
            f"{name}/SkipLayerNorm",
            outputs=4,
            **self.layernorm_attrs,
        )
        return out[0], out[3]

    def make_lm_head(self, x: str) -> str:
        """
        x -> Slice (last position) -> MatMul -> Add (bias) -> [Cast to float32]
        """
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
        logits = self.make_matmul(last, self.weight("lm_head.weight"), "/model/lm_head")
        bias = self.make_initializer("/model/lm_head.bias", self.weight("lm_head.bias"))
        logits = self.make_node("Add", [logits, bias], "/model/lm_head/Add")[0]
        if self.onnx_dtype != TensorProto.FLOAT:
            logits = self.make_node("Cast", [logits], "/model/lm_head/Cast", to=TensorProto.FLOAT)[
                0
            ]
        self.rename_output(logits, "logits")
        return "logits"

    def rename_output(self, old: str, new: str) -> None:
        for node in self.nodes:
            for i, name in enumerate(node.output):
                if name == old:
                    node.output[i] = new

    # ---- model level -----------------------------------------------------------

    def make_model(self) -> onnx.ModelProto:
        """
        input_ids -> Gather(wte) -> LayerNorm(ln_1 of layer 0)
          per layer i: attention(x) + mlp(x) -> SkipLayerNorm(residual, ln_1 of i+1 | ln_f)
        -> lm_head on the last position -> logits
        """
        shape = self.shape
        cos, sin = rotary_caches(shape)
        self.make_initializer("cos_cache", cos)
        self.make_initializer("sin_cache", sin)
        wte = self.make_initializer(
            "/model/embed_tokens.weight", self.weight("transformer.wte.weight")
        )
        residual = self.make_node("Gather", [wte, "input_ids"], "/model/embed_tokens/Gather")[0]
        x = self.make_layernorm(residual, "transformer.h.0.ln_1", "/model/layers.0/ln_1")
        for layer in range(shape.n_layer):
            attn, _, _ = self.make_attention(layer, x)
            mlp = self.make_mlp(layer, x)
            branch_sum = self.make_node("Add", [attn, mlp], f"/model/layers.{layer}/Add")[0]
            last = layer == shape.n_layer - 1
            ln_key = "transformer.ln_f" if last else f"transformer.h.{layer + 1}.ln_1"
            ln_name = "/model/ln_f" if last else f"/model/layers.{layer + 1}/ln_1"
            x, residual = self.make_skip_layernorm(
                branch_sum, residual, ln_key, f"transformer.h.{layer}.mlp.fc_out.bias", ln_name
            )
        self.make_lm_head(x)
        return self.make_graph_proto()

    def make_graph_proto(self) -> onnx.ModelProto:
        shape = self.shape
        kv_shape: list[str | int | None] = ["batch", shape.n_head, "max_length", shape.head_dim]
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
        for layer in range(shape.n_layer):
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
            self.nodes, "acepilot-codegen", inputs, outputs, self.initializers
        )
        model = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid(MS_DOMAIN, 1)],
            producer_name="acepilot",
        )
        model.ir_version = 10
        return model


_CONTRIB_OPS = {"GroupQueryAttention", "SkipLayerNormalization", "FastGelu", "MatMulNBits"}
