"""What a fine-tuning run leaves besides its checkpoints: the exported model and loss.png.

`export_hf` consolidates the last DeepSpeed checkpoint (ZeRO shards through
zero_to_fp32; LoRA adapters merged into the base and also kept alone) into a
Hugging Face checkpoint in out_dir/hf, which `acepilot model build` takes,
with the run's record beside the weights so the model says how it was made.
`plot_losses` draws log.jsonl. Both run on rank 0 after the loop (train.py).
"""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from acepilot.training.finetune.train import FinetuneConfig


def plot_losses(log_path: Path, png_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [json.loads(line) for line in log_path.read_text().splitlines() if line]
    train = [(r["step"], r["loss"]) for r in records if "loss" in r]
    val = [(r["step"], r["val_loss"]) for r in records if "val_loss" in r]
    fig, ax = plt.subplots(figsize=(7, 4))
    if train:
        ax.plot(*zip(*train, strict=True), label="train", linewidth=1)
    if val:
        ax.plot(*zip(*val, strict=True), "o-", label="validation")
    ax.set_title(f"{png_path.parent.name}: loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)


def export_hf(
    c: FinetuneConfig, checkpoint_dir: Path, tag: str, out: Path, record: dict[str, Any]
) -> None:
    """Consolidate the ZeRO shards (zero_to_fp32) into a Hugging Face checkpoint
    dir; LoRA adapters are merged into the base (and saved alone in adapter/).
    `record` (config, step, losses, corpus) goes beside the weights, so the
    exported model says how it was made."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from acepilot.training.finetune.train import TRAINING_RECORD, wrap_lora

    if c.zero_stage == 0:
        saved = torch.load(
            checkpoint_dir / tag / "mp_rank_00_model_states.pt",
            map_location="cpu",
            weights_only=False,
        )
        state = saved["module"]
    else:
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        state = get_fp32_state_dict_from_zero_checkpoint(str(checkpoint_dir), tag=tag)
    model: Any = AutoModelForCausalLM.from_pretrained(c.init_from, dtype=torch.float32)
    if c.lora:
        model = wrap_lora(model, c)
    result = model.load_state_dict({k: v.float() for k, v in state.items()}, strict=False)
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    missing = trained & set(result.missing_keys)
    if missing or result.unexpected_keys:
        raise RuntimeError(
            f"checkpoint does not match the model: missing {sorted(missing)[:5]}, "
            f"unexpected {sorted(result.unexpected_keys)[:5]}"
        )
    if c.lora:
        model.save_pretrained(out.parent / "adapter")
        model = model.merge_and_unload()
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    # a checkpoint without a tokenizer: the model builder will say so
    with contextlib.suppress(OSError, ValueError):
        AutoTokenizer.from_pretrained(c.init_from).save_pretrained(tmp)
    (tmp / TRAINING_RECORD).write_text(json.dumps(record, indent=2, default=str) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)


__all__ = ["export_hf", "plot_losses"]
