"""Stages 4 and 5: the untrained CodeGen and its training through training/finetune.

There is one training loop in Acepilot, acepilot/training/finetune/train.py
(DeepSpeed; ZeRO-0, fp32 and torch's AdamW on CPU, the same code a GPU cluster
runs). The bootstrap only writes its settings: one rank in this process, its
checkpoints in the stage directory, so a killed run resumes where it stopped
and ends with the same weights.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from acepilot.training import codegen
from acepilot.training.bootstrap.config import BootstrapConfig
from acepilot.training.bootstrap.stages import STAGE_RECORD, Stage, read_json
from acepilot.training.machine import free_port, torch_threads
from acepilot.training.tokenizer import load_tokenizer


def make_init(config: BootstrapConfig, tokenizer_dir: Path, out: Path) -> dict[str, Any]:
    """The untrained CodeGen (transformers' initialisation, seeded) with its tokenizer."""
    parameters = codegen.init_checkpoint(
        out,
        load_tokenizer(tokenizer_dir),
        seed=config.seed,
        n_embd=config.n_embd,
        n_layer=config.n_layer,
        n_head=config.n_head,
        rotary_dim=config.rotary_dim,
        n_positions=config.n_positions,
    )
    return {"parameters": parameters}


def finetune_config(
    config: BootstrapConfig, data_dir: Path, init_dir: Path, out: Path, progress: bool
) -> Any:
    """The training loop's settings for this recipe."""
    from acepilot.training.finetune.train import FinetuneConfig

    return FinetuneConfig(
        init_from=str(init_dir),
        data_dir=str(data_dir),
        out_dir=str(out),
        eval_interval=max(1, min(250, config.steps // 4)),
        eval_iters=8,
        log_interval=10,
        checkpoint_interval=config.checkpoint_interval,
        keep_checkpoints=1,
        resume=True,
        export_hf=True,
        micro_batch=config.micro_batch,
        grad_accum=1,
        learning_rate=config.learning_rate,
        min_lr=config.min_lr,
        warmup_steps=config.warmup_steps,
        max_steps=config.steps,
        lr_schedule=config.lr_schedule,
        decay_fraction=config.decay_fraction,
        weight_decay=config.weight_decay,
        zero_stage=0,
        precision="fp32",
        launcher="none",
        nproc=1,
        master_port=free_port(),
        seed=config.seed,
        progress=progress,
    )


def decay_start(config: BootstrapConfig) -> int:
    """The first step whose learning rate depends on `steps` (wsd: the decay's start)."""
    if config.lr_schedule != "wsd":
        return 0
    return max(
        config.warmup_steps, config.steps - max(1, round(config.decay_fraction * config.steps))
    )


def checkpoint_step(directory: Path) -> int | None:
    try:
        return int((directory / "checkpoints" / "latest").read_text().strip().removeprefix("step"))
    except (OSError, ValueError):
        return None


def train(
    config: BootstrapConfig,
    data_dir: Path,
    init_dir: Path,
    stage: Stage,
    progress: bool,
    resume_key: str | None = None,
) -> None:
    """acepilot/training/finetune/train.py in this process, one rank: it resumes from its checkpoints.

    A run for other settings left in the stage directory is cleared first
    (its checkpoints would not fit). `resume_key` names the settings a
    checkpoint can be resumed under: with the wsd schedule it leaves out
    `steps`, so a run can be lengthened or shortened while its checkpoint is
    still before the decay (its rates until then do not depend on `steps`):
    the result is the run that was planned that long from the start.
    """
    from acepilot.training.finetune.launch import launch

    settings = stage.path / "settings.json"
    resume_key = resume_key or stage.key
    saved = checkpoint_step(stage.path)
    if read_json(settings, {}).get("key") != resume_key or (
        saved is not None and resume_key != stage.key and saved > decay_start(config)
    ):
        shutil.rmtree(stage.path, ignore_errors=True)
        stage.path.mkdir(parents=True)
        settings.write_text(json.dumps({"key": resume_key}) + "\n")
    finetune = finetune_config(config, data_dir, init_dir, stage.path, progress)
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        # the loop only fills in a missing MASTER_PORT: one inherited from a parent
        # that holds a process group (e.g. a test runner) would be taken already
        os.environ["MASTER_PORT"] = str(finetune.master_port)
    began = time.monotonic()
    with torch_threads():
        status = launch(finetune)
    if status != 0 or not (stage.path / "hf" / "config.json").is_file():
        raise RuntimeError(f"training failed (status {status}); see {stage.path / 'log.jsonl'}")
    spent = read_json(stage.path / STAGE_RECORD, {}).get("seconds", 0.0)
    init_info = read_json(init_dir / STAGE_RECORD, {})
    log = [json.loads(line) for line in (stage.path / "log.jsonl").read_text().splitlines() if line]
    stage.finish(
        {
            "parameters": init_info.get("parameters"),
            "seconds": round(spent + time.monotonic() - began, 1),
            "final_loss": log[-1].get("loss") if log else None,
            "val_loss": [r["val_loss"] for r in log if "val_loss" in r],
            "weights_sha256": hashlib.sha256(
                (stage.path / "hf" / "model.safetensors").read_bytes()
            ).hexdigest(),
        }
    )


__all__ = ["finetune_config", "make_init", "train"]
