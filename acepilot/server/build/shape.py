"""What the fused graph depends on, for every supported family, read from config.json.

One frozen `ModelShape` describes any decoder the base builder writes
(`acepilot/server/build/base.py`): the families (`families/*.py`) only fill it
in from their own config keys. Values are validated here, once, so that a
malformed or hostile config.json is refused with the key's name rather than
failing deep inside graph construction.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from acepilot.server.errors import BuildError

# Prompts on a CPU are a few thousand tokens at most, and the engine allocates
# every session's KV buffer at the graph's max_length: a Qwen2.5-Coder config
# says 32,768 positions (800 MB of fp32 cache per session for the 0.5B). Builds
# cap the graph's context here unless `model build --max-length` says otherwise.
DEFAULT_MAX_LENGTH = 4096


def positive_int(config: Mapping[str, object], key: str) -> int:
    value = config.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise BuildError(f"config.json: {key} must be a positive integer, got {value!r}")
    return value


def optional_positive_int(config: Mapping[str, object], key: str) -> int | None:
    if config.get(key) is None:
        return None
    return positive_int(config, key)


def positive_float(config: Mapping[str, object], key: str, default: float) -> float:
    value = config.get(key, default)
    if value is None:
        value = default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise BuildError(f"config.json: {key} must be a positive number, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class ModelShape:
    """The hyper-parameters of one decoder, in the builder's terms.

    `layout`: "parallel" (CodeGen: attention and MLP read one LayerNorm and are
    summed) or "sequential" (pre-norm LLaMA-style blocks). `norm`: "layer_norm"
    (with bias) or "rms_norm". `rotary_interleaved`: GPT-J "rotate every two"
    (CodeGen) or rotate-half (LLaMA, Qwen2, StarCoder2). `rope_scaling` is the
    config's dict as JSON (the dataclass stays hashable) or None.
    """

    family: str
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rotary_dim: int
    max_length: int
    norm_epsilon: float
    activation: str
    intermediate_size: int
    layout: str
    norm: str
    rotary_interleaved: bool
    rope_theta: float = 10000.0
    rope_scaling_json: str | None = None
    tie_word_embeddings: bool = False
    sliding_window: int | None = None
    mp_num: int | None = None
    config_max_positions: int = 0
    extra: tuple[tuple[str, Any], ...] = field(default=())

    @property
    def rope_scaling(self) -> dict[str, Any] | None:
        return None if self.rope_scaling_json is None else json.loads(self.rope_scaling_json)

    # Aliases in CodeGen's terms (older readers of the manifest and of GraphStepper use them).
    @property
    def n_layer(self) -> int:
        return self.num_layers

    @property
    def n_positions(self) -> int:
        return self.max_length

    def check(self) -> None:
        if self.num_heads % self.num_kv_heads:
            raise BuildError(
                f"num_attention_heads {self.num_heads} is not a multiple of "
                f"num_key_value_heads {self.num_kv_heads}"
            )
        # GroupQueryAttention on CPU needs the cos cache (rotary_dim / 2) to be a
        # multiple of 8 and at most head_dim / 2.
        if self.rotary_dim % 16 or self.rotary_dim > self.head_dim:
            raise BuildError(
                f"rotary_dim {self.rotary_dim} must be a multiple of 16 and <= head_dim "
                f"{self.head_dim} for GroupQueryAttention"
            )
        if self.layout not in ("parallel", "sequential"):
            raise BuildError(f"unknown block layout {self.layout!r}")
        if self.norm not in ("layer_norm", "rms_norm"):
            raise BuildError(f"unknown norm {self.norm!r}")

    def manifest_config(self) -> dict[str, Any]:
        """The manifest's "config": CodeGen's key names kept, the rest added."""
        return {
            "vocab_size": self.vocab_size,
            "n_embd": self.hidden_size,
            "n_layer": self.num_layers,
            "n_head": self.num_heads,
            "n_kv_head": self.num_kv_heads,
            "head_dim": self.head_dim,
            "rotary_dim": self.rotary_dim,
            "rotary_interleaved": self.rotary_interleaved,
            "n_positions": self.max_length,
            "config_max_positions": self.config_max_positions,
            "layer_norm_epsilon": self.norm_epsilon,
            "activation": self.activation,
            "intermediate_size": self.intermediate_size,
            "layout": self.layout,
            "norm": self.norm,
            "rope_theta": self.rope_theta,
            "rope_scaling": self.rope_scaling,
            "tie_word_embeddings": self.tie_word_embeddings,
            "sliding_window": self.sliding_window,
            **({"mp_num": self.mp_num} if self.mp_num is not None else {}),
        }


def capped_length(config_positions: int, max_length: int | None) -> int:
    """The graph's context: the config's positions, capped (see DEFAULT_MAX_LENGTH)."""
    cap = DEFAULT_MAX_LENGTH if max_length is None else max_length
    if cap <= 0:
        raise BuildError(f"max length must be positive, got {cap}")
    return min(config_positions, cap)


def rope_scaling_json(config: Mapping[str, object], supported: tuple[str, ...]) -> str | None:
    """The config's rope_scaling, refused unless its kind is one the graph can bake in."""
    scaling = config.get("rope_scaling")
    if scaling is None:
        return None
    if not isinstance(scaling, dict):
        raise BuildError(f"config.json: rope_scaling must be an object or null, got {scaling!r}")
    kind = scaling.get("rope_type", scaling.get("type"))
    if kind == "default":
        return None
    if kind not in supported:
        raise BuildError(
            f"config.json: rope_scaling type {kind!r} is not supported "
            f"(supported: none, {', '.join(supported)}); dynamic and longrope scaling change "
            "with the sequence length, which a fixed cos/sin cache cannot follow"
        )
    return json.dumps(scaling, sort_keys=True)
