"""CodeGen2 (Salesforce/codegen2-{1B,3_7B,7B,16B}): CodeGen's architecture, its own code.

The checkpoints set `model_type: codegen` and ship their own modeling_codegen.py
(config.json's `auto_map`), which differs from transformers' CodeGen in one way
the graph sees: qkv_proj is packed in `mp_num` groups of [q | v | k], and
mp_num is 8 in the 1B and 3.7B code, 4 in the 7B and 16B code. A CodeGen2
checkpoint loaded as transformers' CodeGen mixes columns of queries, values
and keys. So the family reads mp_num from the checkpoint's modeling_codegen.py
(as text: it is never imported or run) and refuses without it.

Vocabulary and special tokens (`<mask_N>`, `<sep>`, `<eom>` for infilling) come
from the tokenizer (acepilot/server/build/tokenizer.py), not from here.

The PyTorch reference is transformers' CodeGenForCausalLM with qkv_proj
regrouped from mp_num groups to its 4. Assumption (stated in docs/parity.md):
apart from mp_num, CodeGen2's modeling code computes what transformers'
CodeGen computes — the same attention, rotary, parallel block and lm_head.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from acepilot.server.build.families.codegen import (
    MP_NUM,
    CodeGenBuilder,
    codegen_shape,
    load_pretrained,
    pack_qkv,
    split_qkv,
    state_arrays,
)
from acepilot.server.build.shape import ModelShape
from acepilot.server.errors import BuildError, ModelSourceError

MODELING_FILE = "modeling_codegen.py"
MAX_MODELING_BYTES = 1 << 20
MP_NUM_LINE = re.compile(r"^\s*mp_num\s*=\s*(\d+)\s*(?:#.*)?$", re.MULTILINE)


def is_codegen2(config: Mapping[str, object]) -> bool:
    """CodeGen2 ships its modeling code: config.json's auto_map names modeling_codegen."""
    auto_map = config.get("auto_map")
    if not isinstance(auto_map, dict):
        return False
    return any(isinstance(v, str) and v.startswith("modeling_codegen.") for v in auto_map.values())


def read_mp_num(directory: Path | None) -> int:
    """The `mp_num = N` of the checkpoint's modeling_codegen.py (read, never imported)."""
    path = None if directory is None else directory / MODELING_FILE
    if path is None or not path.is_file():
        raise ModelSourceError(
            f"this is a CodeGen2 checkpoint (config.json's auto_map names {MODELING_FILE}) but "
            f"{MODELING_FILE} is missing from it: its qkv packing (mp_num) is read from that file"
        )
    if path.stat().st_size > MAX_MODELING_BYTES:
        raise ModelSourceError(f"{path}: implausibly large")
    values = {
        int(v) for v in MP_NUM_LINE.findall(path.read_text(encoding="utf-8", errors="replace"))
    }
    if len(values) != 1 or not next(iter(values)) > 0:
        raise BuildError(
            f"{path}: expected one `mp_num = N` assignment (the qkv packing), found "
            f"{sorted(values) or 'none'}"
        )
    return values.pop()


class CodeGen2Builder(CodeGenBuilder):
    family = "codegen2"

    @classmethod
    def shape_from_config(
        cls, config: Mapping[str, object], directory: Path | None, max_length: int | None = None
    ) -> ModelShape:
        return codegen_shape(config, cls.family, read_mp_num(directory), max_length)

    @classmethod
    def load_reference(
        cls, directory: Path, shape: ModelShape
    ) -> tuple[Any, dict[str, np.ndarray]]:
        """The graph gets the checkpoint's tensors; the reference gets qkv regrouped to 4."""
        import torch
        from transformers import CodeGenForCausalLM

        model = load_pretrained(CodeGenForCausalLM, directory)
        weights = {key: np.array(value, copy=True) for key, value in state_arrays(model).items()}
        regroup_qkv_(model, shape.num_heads, shape.mp_num or MP_NUM, MP_NUM, torch)
        return model, weights


def regroup_qkv_(model: Any, n_head: int, from_mp: int, to_mp: int, torch: Any) -> None:
    """Repack every qkv_proj in place from `from_mp` groups to `to_mp` groups."""
    if from_mp == to_mp:
        return
    with torch.no_grad():
        for block in model.transformer.h:
            weight = block.attn.qkv_proj.weight
            q, k, v = split_qkv(weight.detach().float().numpy(), n_head, from_mp)
            block.attn.qkv_proj.weight = torch.nn.Parameter(
                torch.from_numpy(pack_qkv(q, k, v, to_mp)).to(weight.dtype), requires_grad=False
            )
