"""The supported model families and how a checkpoint's config.json picks one.

`model_type` (and, where it is ambiguous, what the checkpoint ships) decides,
never the repository's name: CodeGen 1 and CodeGen2 both say `codegen`, and
CodeGen2 is the one whose config.json maps AutoModel to its own
modeling_codegen.py. `architectures`, when present, must name the causal-LM
class of that family. Anything else is refused with the supported list.
"""

from __future__ import annotations

from collections.abc import Mapping

from acepilot.server.build.families.codegen import CodeGenBuilder
from acepilot.server.build.families.codegen2 import CodeGen2Builder, is_codegen2
from acepilot.server.build.families.llama import LlamaBuilder
from acepilot.server.build.families.qwen2 import Qwen2Builder
from acepilot.server.build.families.starcoder2 import Starcoder2Builder
from acepilot.server.errors import BuildError

FamilyBuilder = type[CodeGenBuilder] | type[LlamaBuilder]

BY_MODEL_TYPE: dict[str, FamilyBuilder] = {
    "codegen": CodeGenBuilder,
    "llama": LlamaBuilder,
    "qwen2": Qwen2Builder,
    "starcoder2": Starcoder2Builder,
}
FAMILIES: dict[str, FamilyBuilder] = {
    builder.family: builder
    for builder in (CodeGenBuilder, CodeGen2Builder, LlamaBuilder, Qwen2Builder, Starcoder2Builder)
}
SUPPORTED = (
    "codegen (CodeGen 1 mono/multi/nl; CodeGen2), llama (CodeGen2.5, DeepSeek-Coder, "
    "CodeLlama), qwen2 (Qwen2.5-Coder), starcoder2 (StarCoder2)"
)


def family_for(config: Mapping[str, object]) -> FamilyBuilder:
    """The builder class of the checkpoint's family, or a BuildError naming what is supported."""
    model_type = config.get("model_type")
    builder = BY_MODEL_TYPE.get(model_type) if isinstance(model_type, str) else None
    if builder is None:
        raise BuildError(
            f"config.json: model_type {model_type!r} is not supported; supported model types: "
            f"{SUPPORTED}"
        )
    if builder is CodeGenBuilder and is_codegen2(config):
        builder = CodeGen2Builder
    architectures = config.get("architectures")
    if architectures is not None and (
        not isinstance(architectures, list)
        or not any(a in builder.architectures for a in architectures)
    ):
        raise BuildError(
            f"config.json: architectures {architectures!r} do not include "
            f"{' or '.join(builder.architectures)} (model_type {model_type!r}); only causal "
            "language models are supported"
        )
    return builder
