"""The CodeGen graph under its earlier names (kept for readers of built CodeGen entries).

The builder now lives in `base.py` (what every family shares) and
`families/codegen.py` (CodeGen's part). `CodeGenShape` is what older code
builds from a CodeGen manifest's "config"; it converts to a `ModelShape`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from acepilot.server.build.families.codegen import MP_NUM, CodeGenBuilder, codegen_shape, split_qkv
from acepilot.server.build.shape import ModelShape

__all__ = ["MP_NUM", "CodeGenGraphBuilder", "CodeGenShape", "split_qkv"]


@dataclass(frozen=True)
class CodeGenShape:
    """CodeGen's hyper-parameters under CodeGen's names (n_embd, n_layer, ...)."""

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

    # The KV layout GraphStepper reads.
    @property
    def num_layers(self) -> int:
        return self.n_layer

    @property
    def num_kv_heads(self) -> int:
        return self.n_head

    @property
    def max_length(self) -> int:
        return self.n_positions

    @classmethod
    def from_config(cls, config: Mapping[str, object]) -> CodeGenShape:
        shape = codegen_shape(config, "codegen", MP_NUM, max_length=None)
        return cls(
            vocab_size=shape.vocab_size,
            n_embd=shape.hidden_size,
            n_layer=shape.num_layers,
            n_head=shape.num_heads,
            rotary_dim=shape.rotary_dim,
            n_positions=shape.max_length,
            layer_norm_epsilon=shape.norm_epsilon,
            activation=shape.activation,
        )

    def to_model_shape(self) -> ModelShape:
        return codegen_shape(
            {
                "vocab_size": self.vocab_size,
                "n_embd": self.n_embd,
                "n_layer": self.n_layer,
                "n_head": self.n_head,
                "rotary_dim": self.rotary_dim,
                "n_positions": self.n_positions,
                "layer_norm_epsilon": self.layer_norm_epsilon,
                "activation_function": self.activation,
            },
            "codegen",
            MP_NUM,
            max_length=self.n_positions,
        )


class CodeGenGraphBuilder(CodeGenBuilder):
    """`CodeGenBuilder` that also accepts a `CodeGenShape`."""

    def __init__(
        self,
        shape: CodeGenShape | ModelShape,
        weights: Mapping[str, np.ndarray],
        dtype: str = "float32",
    ) -> None:
        if isinstance(shape, CodeGenShape):
            shape = shape.to_model_shape()
        super().__init__(shape, weights, dtype)
