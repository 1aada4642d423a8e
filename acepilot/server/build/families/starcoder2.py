"""StarCoder2 (`model_type: starcoder2`): bigcode/starcoder2-{3b,7b,15b}.

Sequential pre-norm blocks with LayerNorm (with bias), a GELU-tanh MLP
(c_fc, c_proj) with biases, biases on q/k/v/o (`use_bias`), grouped-query
attention, rotate-half rotary with `rope_theta`, tied embeddings (3B).

`sliding_window` (4,096 in the published configs) is honoured, not refused:
GroupQueryAttention's `local_window_size` restricts every layer's attention to
the last `sliding_window` positions, as transformers' Starcoder2 does; the
parity tests check it with a window shorter than the test sequences.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from acepilot.server.build.base import GELU_OPS
from acepilot.server.build.families.llama import LlamaBuilder, rotate_half_shape
from acepilot.server.build.shape import ModelShape, optional_positive_int
from acepilot.server.errors import BuildError


class Starcoder2Builder(LlamaBuilder):
    family = "starcoder2"
    architectures = ("Starcoder2ForCausalLM",)

    @classmethod
    def shape_from_config(
        cls, config: Mapping[str, object], directory: Path | None, max_length: int | None = None
    ) -> ModelShape:
        act = str(config.get("hidden_act", "gelu_pytorch_tanh"))
        if act not in GELU_OPS:
            raise BuildError(f"config.json: hidden_act {act!r} is not supported")
        if config.get("mlp_type", "default") != "default":
            raise BuildError(f"config.json: mlp_type {config.get('mlp_type')!r} is not supported")
        if config.get("norm_type", "layer_norm") != "layer_norm":
            raise BuildError(f"config.json: norm_type {config.get('norm_type')!r} is not supported")
        shape = rotate_half_shape(
            config,
            family=cls.family,
            norm="layer_norm",
            activation=act,
            epsilon_key="norm_epsilon",
            tie_default=True,
            max_length=max_length,
        )
        return replace(shape, sliding_window=optional_positive_int(config, "sliding_window"))

    @classmethod
    def reference_class(cls) -> Any:
        from transformers import Starcoder2ForCausalLM

        return Starcoder2ForCausalLM

    def make_mlp(self, layer: int, x: str) -> tuple[str, np.ndarray | None]:
        key = f"{self.layer_key(layer)}.mlp"
        return self.make_gelu_mlp(
            layer,
            x,
            self.weight(f"{key}.c_fc.weight"),
            self.optional_weight(f"{key}.c_fc.bias"),
            self.weight(f"{key}.c_proj.weight"),
            self.optional_weight(f"{key}.c_proj.bias"),
        )
