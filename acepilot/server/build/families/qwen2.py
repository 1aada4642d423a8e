"""Qwen2 (`model_type: qwen2`): Qwen2.5-Coder 0.5B-32B.

The LLaMA layout plus q/k/v biases and (0.5B-3B) tied embeddings. Qwen2's
sliding window is off in every Qwen2.5-Coder config (`use_sliding_window:
false`); a config that turns it on is refused (it applies to only some layers).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from acepilot.server.build.families.llama import LlamaBuilder
from acepilot.server.build.shape import ModelShape
from acepilot.server.errors import BuildError


class Qwen2Builder(LlamaBuilder):
    family = "qwen2"
    architectures = ("Qwen2ForCausalLM",)

    @classmethod
    def shape_from_config(
        cls, config: Mapping[str, object], directory: Path | None, max_length: int | None = None
    ) -> ModelShape:
        if config.get("use_sliding_window"):
            raise BuildError(
                "config.json: use_sliding_window is true; Qwen2's per-layer sliding window "
                "is not supported (no Qwen2.5-Coder checkpoint uses it)"
            )
        return super().shape_from_config(config, directory, max_length)

    @classmethod
    def reference_class(cls) -> Any:
        from transformers import Qwen2ForCausalLM

        return Qwen2ForCausalLM
