"""Start acepilot/training/finetune/train.py on every rank: `acepilot train finetune`.

One command line for a laptop CPU, one GPU or a cluster: the same settings go to
torchrun (one node, fast to start), DeepSpeed's launcher (a hostfile for many
nodes) or straight into this process (launcher=none, one rank).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from acepilot.training import plan
from acepilot.training.config import write_config_file
from acepilot.training.finetune.train import FinetuneConfig

MODULE = "acepilot.training.finetune.train"

log = logging.getLogger(__name__)


def launch_command(c: FinetuneConfig, settings: Sequence[str]) -> list[str]:
    """The command line that starts `nproc` ranks (per node) with these settings
    (in practice one argument: the config file launch() writes)."""
    if c.launcher == "torchrun":
        return [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            str(c.nproc),
            "--master_port",
            str(c.master_port),
            "-m",
            MODULE,
            *settings,
        ]
    if c.launcher == "deepspeed":
        command = [sys.executable, "-m", "deepspeed.launcher.runner"]
        if c.hostfile:
            command += ["--hostfile", c.hostfile]
        else:
            command += ["--num_nodes", "1"]
            # DeepSpeed's runner counts accelerators; on CPU it is told how many ranks
            command += ["--num_accelerators" if _cpu_only() else "--num_gpus", str(c.nproc)]
        return [*command, "--master_port", str(c.master_port), "--module", MODULE, *settings]
    raise ValueError(f"launcher {c.launcher!r}: expected torchrun, deepspeed or none")


def _cpu_only() -> bool:
    import torch

    return not torch.cuda.is_available()


def rank_environment(c: FinetuneConfig) -> dict[str, str]:
    env = dict(os.environ)
    if _cpu_only():
        env.setdefault("DS_ACCELERATOR", "cpu")
        # every rank would take every core: 15x slower on 2 ranks x 2 cores
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // max(c.nproc, 1))))
    return env


def resolve_strategy(
    c: FinetuneConfig, gpu_mem_gib: float | None = None, nodes: int | None = None
) -> FinetuneConfig:
    """strategy=auto: the memory planner picks ZeRO stage and offload for this
    model, corpus sequence length, micro-batch, GPU count and GPU memory (the
    first GPU's, unless given). On CPU the host's memory is the limit and the
    configured stage stays."""
    if c.strategy == "manual":
        return c
    if c.strategy != "auto":
        raise ValueError(f"strategy {c.strategy!r}: expected manual or auto")
    if gpu_mem_gib is None:
        import torch

        if not torch.cuda.is_available():
            log.info("strategy=auto: no GPU, keeping zero_stage=%d", c.zero_stage)
            return c
        gpu_mem_gib = torch.cuda.get_device_properties(0).total_memory / plan.GIB
    if nodes is None:
        nodes = 1
        if c.hostfile:
            lines = Path(c.hostfile).read_text().splitlines()
            nodes = max(1, sum(1 for line in lines if line.strip() and not line.startswith("#")))
    manifest = Path(c.data_dir) / "manifest.json"
    seq_len = json.loads(manifest.read_text())["seq_len"] if manifest.exists() else 2048
    shape = plan.model_shape(c.init_from, c.lora_r)
    rows = plan.plan(
        shape,
        c.nproc,
        gpu_mem_gib,
        nodes=nodes,
        seq_len=seq_len,
        micro_batch=c.micro_batch,
        checkpointing=c.gradient_checkpointing,
        lora=c.lora,
    )
    chosen = plan.pick(rows)
    if chosen is None:
        raise plan.PlanError(
            "strategy=auto: nothing fits\n"
            + plan.format_table(shape, rows, c.nproc, nodes, gpu_mem_gib)
        )
    log.info("strategy=auto picked %s", chosen.strategy.name)
    return dataclasses.replace(
        c,
        zero_stage=chosen.strategy.stage,
        offload_optimizer=chosen.strategy.offload_optimizer,
        offload_params=chosen.strategy.offload_params,
    )


def launch(c: FinetuneConfig) -> int:
    """Run the fine-tune; returns the launcher's exit status. The resolved settings
    go to the ranks as out_dir/finetune_config.py, which also records the run."""
    c = resolve_strategy(c)
    if c.launcher == "none":
        if c.nproc != 1:
            raise ValueError("launcher=none runs one rank: use torchrun or deepspeed for nproc > 1")
        from acepilot.training.finetune.train import main

        for key, value in rank_environment(c).items():
            os.environ.setdefault(key, value)
        main(c)
        return 0
    config_file = write_config_file(
        c, Path(c.out_dir) / "finetune_config.py", "written by `acepilot train finetune`"
    )
    status = subprocess.call(launch_command(c, [str(config_file)]), env=rank_environment(c))
    if status == 0:
        print(summary(Path(c.out_dir)))
    return status


def summary(out_dir: Path) -> str:
    """Where the results are, and the last losses."""
    lines = [line for line in (out_dir / "log.jsonl").read_text().splitlines() if line]
    last = json.loads(lines[-1]) if lines else {}
    vals = [json.loads(line)["val_loss"] for line in lines if '"val_loss"' in line]
    text = [
        f"run: {out_dir}",
        f"steps: {last.get('step', 0)}, train loss {last.get('loss', float('nan')):.4f}",
    ]
    if vals:
        text.append(f"validation loss: {vals[0]:.4f} -> {vals[-1]:.4f}")
    if (out_dir / "hf").exists():
        text.append(
            f"model: {out_dir / 'hf'} (acepilot model build {out_dir / 'hf'} --precision int4)"
        )
    text.append(f"log: {out_dir / 'log.jsonl'}, plot: {out_dir / 'loss.png'}")
    return "\n".join(text)
