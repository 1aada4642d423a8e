"""The LLaMA layout (`model_type: llama`): CodeGen2.5, DeepSeek-Coder, CodeLlama.

Pre-norm sequential blocks with RMSNorm, SwiGLU MLP, rotate-half rotary over
the whole head with `rope_theta` and a baked-in `rope_scaling` (linear:
DeepSeek-Coder; llama3 and yarn also accepted; dynamic/longrope refused: they
change with the sequence length), grouped-query attention
(`num_key_value_heads` ≤ `num_attention_heads`), optional attention biases
(`attention_bias`), tied or untied lm_head. transformers stores q/k already
permuted for rotate-half, so the weights go in unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from acepilot.server.build.base import DecoderGraphBuilder, Norm
from acepilot.server.build.families.codegen import load_pretrained, state_arrays
from acepilot.server.build.shape import (
    ModelShape,
    capped_length,
    positive_float,
    positive_int,
    rope_scaling_json,
)
from acepilot.server.errors import BuildError

ROPE_SCALING_KINDS = ("linear", "llama3", "yarn")


def rotate_half_shape(
    config: Mapping[str, object],
    *,
    family: str,
    norm: str,
    activation: str,
    epsilon_key: str,
    tie_default: bool,
    max_length: int | None,
) -> ModelShape:
    """The shape of a LLaMA-like config (llama, qwen2, starcoder2 share these keys)."""
    hidden = positive_int(config, "hidden_size")
    heads = positive_int(config, "num_attention_heads")
    kv_heads = (
        positive_int(config, "num_key_value_heads")
        if config.get("num_key_value_heads") is not None
        else heads
    )
    head_dim = positive_int(config, "head_dim") if config.get("head_dim") else hidden // heads
    if not config.get("head_dim") and hidden % heads:
        raise BuildError(f"hidden_size {hidden} is not divisible by num_attention_heads {heads}")
    partial = positive_float(config, "partial_rotary_factor", 1.0)
    positions = positive_int(config, "max_position_embeddings")
    tie = config.get("tie_word_embeddings", tie_default)
    shape = ModelShape(
        family=family,
        vocab_size=positive_int(config, "vocab_size"),
        hidden_size=hidden,
        num_layers=positive_int(config, "num_hidden_layers"),
        num_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=head_dim,
        rotary_dim=int(head_dim * partial),
        max_length=capped_length(positions, max_length),
        norm_epsilon=positive_float(config, epsilon_key, 1e-6),
        activation=activation,
        intermediate_size=positive_int(config, "intermediate_size"),
        layout="sequential",
        norm=norm,
        rotary_interleaved=False,
        rope_theta=positive_float(config, "rope_theta", 10000.0),
        rope_scaling_json=rope_scaling_json(config, ROPE_SCALING_KINDS),
        tie_word_embeddings=bool(tie),
        config_max_positions=positions,
    )
    shape.check()
    return shape


def hf_inv_freq(shape: ModelShape) -> tuple[np.ndarray, float]:
    """inv_freq and the cos/sin factor from transformers' own rope code, so that every
    scaling kind (and its float32 arithmetic) is exactly the reference's."""
    import torch
    from transformers import PretrainedConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    scaling = shape.rope_scaling
    kind = "default" if scaling is None else str(scaling.get("rope_type", scaling.get("type")))
    if scaling is not None:
        scaling = {**scaling, "rope_type": kind}
    config = PretrainedConfig(
        rope_theta=shape.rope_theta,
        rope_scaling=scaling,
        hidden_size=shape.hidden_size,
        num_attention_heads=shape.num_heads,
        head_dim=shape.head_dim,
        partial_rotary_factor=shape.rotary_dim / shape.head_dim,
        max_position_embeddings=shape.config_max_positions,
    )
    inv_freq, factor = ROPE_INIT_FUNCTIONS[kind](config, torch.device("cpu"))
    return inv_freq.float().numpy(), float(factor)


class LlamaBuilder(DecoderGraphBuilder):
    family = "llama"
    architectures = ("LlamaForCausalLM",)

    @classmethod
    def shape_from_config(
        cls, config: Mapping[str, object], directory: Path | None, max_length: int | None = None
    ) -> ModelShape:
        act = config.get("hidden_act", "silu")
        if act != "silu":
            raise BuildError(f"config.json: hidden_act {act!r} is not supported (silu only)")
        if config.get("mlp_bias"):
            raise BuildError("config.json: mlp_bias is not supported")
        return rotate_half_shape(
            config,
            family=cls.family,
            norm="rms_norm",
            activation="silu",
            epsilon_key="rms_norm_eps",
            tie_default=False,
            max_length=max_length,
        )

    @classmethod
    def reference_class(cls) -> Any:
        from transformers import LlamaForCausalLM

        return LlamaForCausalLM

    @classmethod
    def load_reference(
        cls, directory: Path, shape: ModelShape
    ) -> tuple[Any, dict[str, np.ndarray]]:
        model = load_pretrained(cls.reference_class(), directory)
        return model, state_arrays(model)

    def rotary_inv_freq(self) -> tuple[np.ndarray, float]:
        return hf_inv_freq(self.shape)

    def layer_key(self, layer: int) -> str:
        return f"model.layers.{layer}"

    def embedding(self) -> np.ndarray:
        return self.weight("model.embed_tokens.weight")

    def qkv_projection(self, layer: int) -> tuple[np.ndarray, np.ndarray | None]:
        key = f"{self.layer_key(layer)}.self_attn"
        weight = np.concatenate([self.weight(f"{key}.{p}_proj.weight") for p in "qkv"], axis=0)
        biases = [self.optional_weight(f"{key}.{p}_proj.bias") for p in "qkv"]
        if all(b is None for b in biases):
            return weight, None
        if any(b is None for b in biases):
            raise BuildError(f"layer {layer}: q/k/v biases must be all present or all absent")
        return weight, np.concatenate(biases)  # type: ignore[arg-type]

    def out_projection(self, layer: int) -> tuple[np.ndarray, np.ndarray | None]:
        key = f"{self.layer_key(layer)}.self_attn.o_proj"
        return self.weight(f"{key}.weight"), self.optional_weight(f"{key}.bias")

    def input_norm(self, layer: int) -> Norm:
        return self.layer_norm_params(f"{self.layer_key(layer)}.input_layernorm")

    def post_attention_norm(self, layer: int) -> Norm:
        return self.layer_norm_params(f"{self.layer_key(layer)}.post_attention_layernorm")

    def final_norm(self) -> Norm:
        return self.layer_norm_params("model.norm")

    def make_mlp(self, layer: int, x: str) -> tuple[str, np.ndarray | None]:
        key = f"{self.layer_key(layer)}.mlp"
        out = self.make_swiglu_mlp(
            layer,
            x,
            self.weight(f"{key}.gate_proj.weight"),
            self.weight(f"{key}.up_proj.weight"),
            self.weight(f"{key}.down_proj.weight"),
        )
        return out, None

    def lm_head(self) -> tuple[np.ndarray, np.ndarray | None]:
        if self.shape.tie_word_embeddings or "lm_head.weight" not in self.weights:
            return self.embedding(), None
        return self.weight("lm_head.weight"), None
