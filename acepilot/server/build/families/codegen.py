"""CodeGen 1 (Salesforce/codegen-{350M,2B,6B,16B}-{mono,multi,nl}): `model_type: codegen`.

What differs from the LLaMA layout: GPT-J interleaved rotary on the first
`rotary_dim` dims of each head (partial), attention and MLP in parallel off one
LayerNorm (`ln_1`), qkv_proj packed in `mp_num` model-parallel groups each
ordered q, v, k (mp_num is 4 in transformers' CodeGen), an lm_head bias.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from acepilot.server.build.base import GELU_OPS, DecoderGraphBuilder, Norm
from acepilot.server.build.shape import ModelShape, capped_length, positive_int
from acepilot.server.errors import BuildError, ModelSourceError

MP_NUM = 4  # transformers' CodeGen: 4 groups of [q | v | k] (TPU-v3/v4 model parallelism)


def split_qkv(
    qkv_weight: np.ndarray, n_head: int, mp_num: int = MP_NUM
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Undo CodeGen's packing: rows are [mp_num groups] x [q | v | k] x local_dim.

    Returns q, k, v weights of shape [n_embd, n_embd] (out, in), rows ordered by
    head then head dimension, as GroupQueryAttention expects.
    """
    out_features, in_features = qkv_weight.shape
    n_embd = out_features // 3
    if out_features != 3 * n_embd or n_embd % n_head or n_embd % mp_num:
        raise BuildError(f"qkv_proj has unexpected shape {qkv_weight.shape}")
    local_dim = n_embd // mp_num
    grouped = qkv_weight.reshape(mp_num, 3, local_dim, in_features)
    q = grouped[:, 0].reshape(n_embd, in_features)
    v = grouped[:, 1].reshape(n_embd, in_features)
    k = grouped[:, 2].reshape(n_embd, in_features)
    return q, k, v


def pack_qkv(q: np.ndarray, k: np.ndarray, v: np.ndarray, mp_num: int) -> np.ndarray:
    """The inverse of `split_qkv`: CodeGen's packed qkv_proj rows for `mp_num` groups."""
    n_embd, in_features = q.shape
    local_dim = n_embd // mp_num
    parts = [part.reshape(mp_num, local_dim, in_features) for part in (q, v, k)]
    return np.stack(parts, axis=1).reshape(3 * n_embd, in_features)


def codegen_shape(
    config: Mapping[str, object], family: str, mp_num: int, max_length: int | None
) -> ModelShape:
    n_embd = positive_int(config, "n_embd")
    n_head = positive_int(config, "n_head")
    n_positions = positive_int(config, "n_positions")
    activation = str(config.get("activation_function", "gelu_new"))
    if activation not in GELU_OPS:
        raise BuildError(f"activation_function {activation!r} is not supported")
    if n_embd % n_head:
        raise BuildError(f"n_embd {n_embd} is not divisible by n_head {n_head}")
    if n_head % mp_num:
        raise BuildError(f"n_head {n_head} must be a multiple of {mp_num} (CodeGen's mp_num)")
    n_inner = config.get("n_inner")
    shape = ModelShape(
        family=family,
        vocab_size=positive_int(config, "vocab_size"),
        hidden_size=n_embd,
        num_layers=positive_int(config, "n_layer"),
        num_heads=n_head,
        num_kv_heads=n_head,  # multi-head attention: as many KV heads
        head_dim=n_embd // n_head,
        rotary_dim=positive_int(config, "rotary_dim"),
        max_length=capped_length(n_positions, max_length),
        norm_epsilon=float(config.get("layer_norm_epsilon", 1e-5)),  # type: ignore[arg-type]
        activation=activation,
        intermediate_size=n_inner if isinstance(n_inner, int) and n_inner > 0 else 4 * n_embd,
        layout="parallel",
        norm="layer_norm",
        rotary_interleaved=True,
        rope_theta=10000.0,
        tie_word_embeddings=False,
        mp_num=mp_num,
        config_max_positions=n_positions,
    )
    shape.check()
    return shape


class CodeGenBuilder(DecoderGraphBuilder):
    """CodeGen 1; CodeGen2 differs only in mp_num (families/codegen2.py)."""

    family = "codegen"
    architectures = ("CodeGenForCausalLM",)

    @classmethod
    def shape_from_config(
        cls, config: Mapping[str, object], directory: Path | None, max_length: int | None = None
    ) -> ModelShape:
        return codegen_shape(config, cls.family, MP_NUM, max_length)

    @classmethod
    def load_reference(
        cls, directory: Path, shape: ModelShape
    ) -> tuple[Any, dict[str, np.ndarray]]:
        """transformers' CodeGenForCausalLM (float32) and the weights as the checkpoint has them."""
        from transformers import CodeGenForCausalLM

        model = load_pretrained(CodeGenForCausalLM, directory)
        return model, state_arrays(model)

    def rotary_inv_freq(self) -> tuple[np.ndarray, float]:
        """Exactly as CodeGen's create_sinusoidal_positions (GPT-J rotary, theta 10000)."""
        rotary_dim = self.shape.rotary_dim
        exponent = np.arange(0, rotary_dim, 2, dtype=np.int64) / rotary_dim
        return (1.0 / (10000.0**exponent)).astype(np.float32), 1.0

    def embedding(self) -> np.ndarray:
        return self.weight("transformer.wte.weight")

    def qkv_projection(self, layer: int) -> tuple[np.ndarray, np.ndarray | None]:
        q, k, v = split_qkv(
            self.weight(f"transformer.h.{layer}.attn.qkv_proj.weight"),
            self.shape.num_heads,
            self.shape.mp_num or MP_NUM,
        )
        return np.concatenate([q, k, v], axis=0), None

    def out_projection(self, layer: int) -> tuple[np.ndarray, np.ndarray | None]:
        return self.weight(f"transformer.h.{layer}.attn.out_proj.weight"), None

    def input_norm(self, layer: int) -> Norm:
        return self.layer_norm_params(f"transformer.h.{layer}.ln_1")

    def final_norm(self) -> Norm:
        return self.layer_norm_params("transformer.ln_f")

    def make_mlp(self, layer: int, x: str) -> tuple[str, np.ndarray | None]:
        key = f"transformer.h.{layer}.mlp"
        return self.make_gelu_mlp(
            layer,
            x,
            self.weight(f"{key}.fc_in.weight"),
            self.weight(f"{key}.fc_in.bias"),
            self.weight(f"{key}.fc_out.weight"),
            self.weight(f"{key}.fc_out.bias"),
        )

    def lm_head(self) -> tuple[np.ndarray, np.ndarray | None]:
        return self.weight("lm_head.weight"), self.optional_weight("lm_head.bias")


def load_pretrained(model_class: Any, directory: Path) -> Any:
    """A transformers model in float32, eval mode; loading errors become ModelSourceError."""
    import torch

    try:
        model = model_class.from_pretrained(directory, dtype=torch.float32)
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        raise ModelSourceError(f"{directory}: cannot load the checkpoint ({exc})") from None
    model.eval()
    return model


def state_arrays(model: Any) -> dict[str, np.ndarray]:
    """The model's tensors as float32 numpy arrays (tied tensors appear under both names)."""
    return {key: value.detach().float().numpy() for key, value in model.state_dict().items()}
