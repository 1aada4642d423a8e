"""Fine-tune a CodeGen checkpoint on a corpus with DeepSpeed: one process per rank.

Why one module over 500 lines: it is nanoGPT's train.py on purpose, the config,
the schedule, the batches and the one loop (eval, checkpoint, update, log inline)
read top to bottom; what a run leaves after the loop is export.py.

    acepilot train finetune [config.py ...] --key=value ...   (starts one of these)
    torchrun --nproc_per_node 2 -m acepilot.training.finetune.train run_config.py
    deepspeed --hostfile hosts --module acepilot.training.finetune.train run_config.py

Started by hand, give the ranks a config file rather than --key=value
arguments: the launchers scan the whole command line for their own options and
take e.g. --master_port or an abbreviated --nproc for themselves.

Written like nanoGPT's train.py: the flat config below, overrides from files and
--key=value, one loop with eval, checkpointing, the update and logging inline.
DeepSpeed runs for real through `deepspeed.initialize` (ZeRO 0-3, CPU offload),
on GPUs with NCCL or on CPU with gloo; the same code path either way. (The HF
Trainer / accelerate DeepSpeed path is broken on CPU: every rank thinks it is 0.)

Output, in out_dir: run.json (config, corpus manifest, versions), log.jsonl
(loss, lr, tokens/s per step; val_loss at evals), loss.png, checkpoints/ (DeepSpeed
checkpoints with the step, config and model args in client state; resumed
automatically) and hf/ (the consolidated model in Hugging Face format, which
`acepilot model build` takes; adapter/ too for LoRA; export.py).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import json
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

TRAINING_RECORD = "acepilot_finetune.json"  # beside the exported weights
RESUME_LAYOUT = "acepilot_resume.json"  # in each checkpoint tag
# settings that shape the checkpoint's shards and parameters
RESUME_MUST_MATCH = (
    "zero_stage",
    "offload_optimizer",
    "offload_params",
    "lora",
    "lora_r",
    "lora_targets",
    "init_from",
)


@dataclass
class FinetuneConfig:
    # I/O
    init_from: str = ""  # the checkpoint to fine-tune: a local Hugging Face directory
    data_dir: str = ""  # a corpus version (train.npy, validation.npy, manifest.json)
    out_dir: str = "runs/finetune"  # run.json, log.jsonl, loss.png, checkpoints/, hf/
    eval_interval: int = 50  # steps between validation losses (and at the end)
    eval_iters: int = 20  # validation micro-batches per rank per evaluation
    log_interval: int = 1  # steps between log lines
    checkpoint_interval: int = 100  # steps between checkpoints (and at the end)
    keep_checkpoints: int = 2  # older checkpoints are deleted
    resume: bool = True  # continue from out_dir/checkpoints if there is one
    export_hf: bool = True  # consolidate into out_dir/hf at the end
    # data
    micro_batch: int = 1  # sequences per rank per forward pass
    grad_accum: int = 1  # micro-batches per optimizer step
    # optimizer: AdamW
    learning_rate: float = 5e-5  # peak
    min_lr: float = 5e-6  # at the end of the cosine decay
    warmup_steps: int = 20
    max_steps: int = 1000
    lr_schedule: str = "cosine"  # cosine: decay over the whole run; wsd: warmup-stable-decay
    decay_fraction: float = 0.2  # wsd: the last share of max_steps decays linearly to min_lr
    weight_decay: float = 0.0
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0  # 0 = off
    torch_adam: bool = True  # torch's AdamW: no fused_adam/cpu_adam JIT compile (~4.5 min each)
    # DeepSpeed
    strategy: str = (
        "manual"  # manual: the settings below; auto: on GPUs the planner picks stage and offload
    )
    zero_stage: int = 2  # 0-3; `acepilot train plan` says which fits
    offload_optimizer: bool = False  # optimizer states and step on the CPU
    offload_params: bool = False  # ZeRO-3 only: parameters on the CPU too
    precision: str = (
        "auto"  # auto (bf16 on GPUs that have it, else fp16; fp32 on CPU), fp32, fp16, bf16
    )
    gradient_checkpointing: bool = False  # recompute activations: less memory, ~30% slower
    # LoRA (peft): only adapters train; the base stays frozen
    lora: bool = False
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_targets: list[str] = field(
        default_factory=lambda: ["qkv_proj", "out_proj", "fc_in", "fc_out"]
    )
    # launch (read by `acepilot train finetune`, not by the ranks)
    launcher: str = (
        "torchrun"  # torchrun, deepspeed (multi-node with hostfile) or none (this process)
    )
    nproc: int = 1  # processes per node: GPUs, or 2 on a 2-core CPU
    hostfile: str = ""  # deepspeed launcher: "host slots=N" lines
    master_port: int = 29511
    # system
    seed: int = 1337
    progress: bool = True  # a tqdm bar on rank 0


def check(c: FinetuneConfig) -> None:
    """Mistakes that would otherwise surface as a traceback in every rank."""
    from acepilot.training.config import ConfigError

    problems = []
    if not c.init_from or not c.data_dir:
        problems.append("set init_from (a checkpoint dir) and data_dir (a corpus version)")
    if c.zero_stage not in (0, 1, 2, 3):
        problems.append(f"zero_stage must be 0-3, got {c.zero_stage}")
    if c.offload_params and c.zero_stage != 3:
        problems.append("offload_params needs zero_stage=3")
    if c.precision not in ("auto", "fp32", "fp16", "bf16"):
        problems.append(f"precision {c.precision!r}: expected auto, fp32, fp16 or bf16")
    if c.launcher not in ("torchrun", "deepspeed", "none"):
        problems.append(f"launcher {c.launcher!r}: expected torchrun, deepspeed or none")
    if c.lr_schedule not in ("cosine", "wsd"):
        problems.append(f"lr_schedule {c.lr_schedule!r}: expected cosine or wsd")
    if not 0 < c.decay_fraction <= 1:
        problems.append(f"decay_fraction must be in (0, 1], got {c.decay_fraction}")
    if c.strategy not in ("manual", "auto"):
        problems.append(f"strategy {c.strategy!r}: expected manual or auto")
    if min(c.nproc, c.micro_batch, c.grad_accum, c.max_steps, c.eval_iters) < 1:
        problems.append("nproc, micro_batch, grad_accum, max_steps and eval_iters must be >= 1")
    if c.init_from and not (Path(c.init_from) / "config.json").is_file():
        problems.append(f"init_from {c.init_from!r} is not a checkpoint directory (no config.json)")
    if c.data_dir and not (Path(c.data_dir) / "train.npy").is_file():
        problems.append(
            f"data_dir {c.data_dir!r} has no train.npy: build it with `acepilot train corpus`"
        )
    if problems:
        raise ConfigError("; ".join(problems))


def get_lr(step: int, c: FinetuneConfig) -> float:
    """Linear warmup, then cosine decay to min_lr at max_steps (nanoGPT's get_lr), or
    with lr_schedule=wsd, warmup-stable-decay (Hu et al. 2024, MiniCPM): the peak rate
    until the last `decay_fraction` of the steps, then a linear decay to min_lr.

    Why wsd: until its decay starts, a run's rates do not depend on max_steps, so a
    long run on a shared machine can be resumed with a smaller max_steps and ends
    exactly as a run planned that long from the start would."""
    if step < c.warmup_steps:
        return c.learning_rate * (step + 1) / (c.warmup_steps + 1)
    if c.lr_schedule == "wsd":
        decay_steps = max(1, round(c.decay_fraction * c.max_steps))
        decay_start = max(c.warmup_steps, c.max_steps - decay_steps)
        if step < decay_start:
            return c.learning_rate
        ratio = min(1.0, (step - decay_start) / max(1, c.max_steps - decay_start))
        return c.learning_rate + ratio * (c.min_lr - c.learning_rate)
    ratio = min(1.0, (step - c.warmup_steps) / max(1, c.max_steps - c.warmup_steps))
    return c.min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (c.learning_rate - c.min_lr)


def deepspeed_config(c: FinetuneConfig, on_gpu: bool) -> dict[str, Any]:
    precision = c.precision
    if precision == "auto":
        import torch

        precision = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if on_gpu else "fp32"
    zero: dict[str, Any] = {"stage": c.zero_stage}
    if c.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": on_gpu}
    if c.offload_params:
        if c.zero_stage != 3:
            raise ValueError("offload_params needs zero_stage=3")
        zero["offload_param"] = {"device": "cpu", "pin_memory": on_gpu}
    config: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": c.micro_batch,
        "gradient_accumulation_steps": c.grad_accum,
        "steps_per_print": 1 << 30,  # we log ourselves
        "optimizer": {
            "type": "AdamW",
            "params": {
                "lr": c.learning_rate,
                "betas": [c.beta1, c.beta2],
                "eps": 1e-8,
                "weight_decay": c.weight_decay,
                "torch_adam": c.torch_adam,
            },
        },
        "zero_optimization": zero,
    }
    if c.grad_clip > 0:
        config["gradient_clipping"] = c.grad_clip
    if precision == "bf16":
        config["bf16"] = {"enabled": True}
    elif precision == "fp16":
        config["fp16"] = {"enabled": True, "initial_scale_power": 16}
    return config


def skip_shm_comm() -> None:
    """DeepSpeed builds its shm_comm C++ op at init_distributed (~165 s, and it fails
    without a compiler), yet only inference all-reduce uses it. Replace the builder
    with a no-op. importlib, because `import deepspeed.comm.torch as m` binds the
    real torch package (ENVIRONMENT.md)."""
    module = importlib.import_module("deepspeed.comm.torch")
    module.build_shm_op = lambda: None  # type: ignore[attr-defined]


def check_resumable(c: FinetuneConfig, checkpoint_dir: Path, world: int) -> None:
    """A checkpoint resumes only into the same sharding and model: say which
    setting differs instead of failing deep inside DeepSpeed's loader."""
    from acepilot.training.config import ConfigError

    tag = (checkpoint_dir / "latest").read_text().strip()
    layout_path = checkpoint_dir / tag / RESUME_LAYOUT
    if not layout_path.exists():
        return  # a checkpoint from elsewhere: DeepSpeed will judge
    saved = json.loads(layout_path.read_text())
    now = {"world_size": world, **{k: getattr(c, k) for k in RESUME_MUST_MATCH}}
    differ = {k: (saved.get(k), v) for k, v in now.items() if saved.get(k) != v}
    if differ:
        details = ", ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in differ.items())
        raise ConfigError(
            f"{checkpoint_dir / tag} was written with other settings ({details}); "
            "restore them, or start afresh with another out_dir or resume=False"
        )


@functools.lru_cache(maxsize=2)
def epoch_order(rows: int, seed: int, epoch: int) -> np.ndarray:
    """A fresh shuffle of the rows for each epoch, the same on every rank."""
    return np.random.default_rng([seed, epoch]).permutation(rows)


def batch_rows(
    rows: int, step: int, micro: int, rank: int, world: int, c: FinetuneConfig
) -> np.ndarray:
    """Which rows rank `rank` trains on at (step, micro-step): consecutive slices
    of a per-epoch shuffle, so every row is seen once per epoch and no two ranks
    share one. A pure function of its arguments: the same batches whether a run
    went straight through or was killed and resumed."""
    first = ((step * c.grad_accum + micro) * world + rank) * c.micro_batch
    picks = []
    for sample in range(first, first + c.micro_batch):
        epoch, index = divmod(sample, rows)
        picks.append(epoch_order(rows, c.seed, epoch)[index])
    return np.asarray(picks)


def get_batch(
    data: np.ndarray, step: int, micro: int, rank: int, world: int, c: FinetuneConfig
) -> Any:
    import torch

    rows = batch_rows(len(data), step, micro, rank, world, c)
    return torch.from_numpy(np.asarray(data[rows], dtype=np.int64))


def wrap_lora(model: Any, c: FinetuneConfig) -> Any:
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=c.lora_r,
        lora_alpha=c.lora_alpha,
        lora_dropout=c.lora_dropout,
        target_modules=list(c.lora_targets),
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


def main(c: FinetuneConfig) -> dict[str, Any]:
    """Train; return the last record (rank 0) for callers in the same process."""
    import torch

    from acepilot.training.finetune.export import export_hf, plot_losses

    on_gpu = torch.cuda.is_available()
    if not on_gpu:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    for key, default in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1")):
        os.environ.setdefault(key, default)  # one process without a launcher
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(c.master_port))
    import deepspeed
    import torch.distributed as dist
    from transformers import AutoModelForCausalLM

    if on_gpu:
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))  # before NCCL starts
    else:
        skip_shm_comm()
    deepspeed.init_distributed(dist_backend="nccl" if on_gpu else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    master = rank == 0
    torch.manual_seed(c.seed)

    out_dir = Path(c.out_dir)
    checkpoint_dir = out_dir / "checkpoints"
    log_path = out_dir / "log.jsonl"
    data_dir = Path(c.data_dir)
    train_data = np.load(data_dir / "train.npy", mmap_mode="r")
    val_path = data_dir / "validation.npy"
    val_data = np.load(val_path, mmap_mode="r") if val_path.exists() else None
    if val_data is not None and len(val_data) == 0:
        val_data = None
    manifest_path = data_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else None
    seq_len = int(train_data.shape[1])

    ds_config = deepspeed_config(c, on_gpu)
    keep_alive = None
    if c.zero_stage == 3:
        # from_pretrained partitions the weights as it loads (zero.Init), so a 6B
        # model never sits whole on one GPU
        from transformers.integrations import HfDeepSpeedConfig

        keep_alive = HfDeepSpeedConfig(ds_config)
    model: Any = AutoModelForCausalLM.from_pretrained(c.init_from, dtype=torch.float32)
    vocab = (manifest or {}).get("tokenizer", {}).get("vocab_size", 0)
    if vocab > model.config.vocab_size:
        raise ValueError(
            f"the corpus was tokenized with {vocab} tokens; {c.init_from} has "
            f"{model.config.vocab_size}: build the corpus with this model's tokenizer"
        )
    if seq_len > model.config.n_positions:
        raise ValueError(f"corpus seq_len {seq_len} exceeds the model's {model.config.n_positions}")
    if c.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if c.lora:
        model = wrap_lora(model, c)
    trainable = [p for p in model.parameters() if p.requires_grad]
    engine, _, _, _ = deepspeed.initialize(
        model=model,
        model_parameters=trainable,
        config=ds_config,
        lr_scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: get_lr(s, c) / c.learning_rate
        ),
    )
    device = engine.device

    step, best_val = 0, float("inf")
    if c.resume and (checkpoint_dir / "latest").exists():
        check_resumable(c, checkpoint_dir, world)
        _, client = engine.load_checkpoint(str(checkpoint_dir))
        step, best_val = int(client["step"]), float(client.get("best_val_loss", best_val))
        if master:
            print(f"resumed from {checkpoint_dir} at step {step}", file=sys.stderr)
    if master:
        out_dir.mkdir(parents=True, exist_ok=True)
        # a crash after the last checkpoint left log lines the resumed run repeats
        if log_path.exists():
            kept = [
                line
                for line in log_path.read_text().splitlines()
                if line and json.loads(line)["step"] <= step
            ]
            log_path.write_text("".join(line + "\n" for line in kept))
        run = {
            "config": dataclasses.asdict(c),
            "deepspeed_config": ds_config,
            "world_size": world,
            "seq_len": seq_len,
            "model_args": model.config.to_dict()
            if not c.lora
            else model.base_model.model.config.to_dict(),
            "trainable_params": sum(p.numel() for p in trainable),
            "corpus_manifest": manifest,
            "versions": {
                "torch": torch.__version__,
                "deepspeed": deepspeed.__version__,
                "python": sys.version.split()[0],
            },
        }
        (out_dir / "run.json").write_text(json.dumps(run, indent=2, default=str) + "\n")

    def mean_across_ranks(value: float) -> float:
        # on the engine's device: NCCL reduces only CUDA tensors
        t = torch.tensor([value], dtype=torch.float64, device=device)
        dist.all_reduce(t)
        return float(t.item()) / world

    @torch.no_grad()
    def estimate_val_loss() -> float | None:
        if val_data is None:
            return None
        engine.eval()
        losses = []
        for i in range(c.eval_iters):
            first = ((i * world + rank) * c.micro_batch) % len(val_data)
            idx = [(first + j) % len(val_data) for j in range(c.micro_batch)]
            x = torch.from_numpy(np.asarray(val_data[idx], dtype=np.int64)).to(device)
            losses.append(float(engine(input_ids=x, labels=x).loss))
        engine.train()
        return mean_across_ranks(sum(losses) / len(losses))

    def save(step: int) -> None:
        client = {
            "step": step,
            "best_val_loss": best_val,
            "config": dataclasses.asdict(c),
            "corpus": (manifest or {}).get("name"),
            "corpus_version": (manifest or {}).get("version"),
        }
        tag = f"step{step:06d}"
        engine.save_checkpoint(str(checkpoint_dir), tag=tag, client_state=client)
        dist.barrier()
        if master:
            # what a resume must match, readable without loading the shards
            layout = {"world_size": world, **{k: getattr(c, k) for k in RESUME_MUST_MATCH}}
            (checkpoint_dir / tag / RESUME_LAYOUT).write_text(json.dumps(layout, indent=2) + "\n")
            tags = sorted(p for p in checkpoint_dir.glob("step*") if p.is_dir())
            for old in tags[: -c.keep_checkpoints]:
                shutil.rmtree(old, ignore_errors=True)

    from tqdm import tqdm

    bar = tqdm(total=c.max_steps, initial=step, disable=not (master and c.progress), unit="step")
    tokens_per_step = c.micro_batch * c.grad_accum * world * seq_len
    record: dict[str, Any] = {}
    engine.train()
    while step < c.max_steps:
        started = time.time()
        loss_sum = 0.0
        torch.manual_seed(c.seed + 1000 * step + rank)  # LoRA dropout, same after a resume
        for micro in range(c.grad_accum):
            x = get_batch(train_data, step, micro, rank, world, c).to(device)
            loss = engine(input_ids=x, labels=x).loss
            engine.backward(loss)
            engine.step()
            loss_sum += float(loss.detach())
        lr = get_lr(step, c)  # what LambdaLR gave this step
        step += 1
        loss_mean = mean_across_ranks(loss_sum / c.grad_accum)
        record = {
            "step": step,
            "loss": loss_mean,
            "lr": lr,
            "tokens_per_s": tokens_per_step / (time.time() - started),
            "epoch": step * c.micro_batch * c.grad_accum * world / len(train_data),
            "time": time.time(),
        }
        if step % c.eval_interval == 0 or step == c.max_steps:
            val = estimate_val_loss()
            if val is not None:
                record["val_loss"] = val
                best_val = min(best_val, val)
        if master and (step % c.log_interval == 0 or "val_loss" in record or step == c.max_steps):
            with open(log_path, "a") as f:
                f.write(json.dumps(record) + "\n")
            bar.set_postfix(loss=f"{loss_mean:.3f}")
        bar.update(1)
        if step % c.checkpoint_interval == 0 or step == c.max_steps:
            save(step)
    bar.close()

    if master and log_path.exists():
        plot_losses(log_path, out_dir / "loss.png")
    if keep_alive is not None:
        # the export loads a plain model on rank 0 alone: no zero.Init collectives
        from transformers.integrations.deepspeed import unset_hf_deepspeed_config

        unset_hf_deepspeed_config()
        del keep_alive
    last = sorted(p.name for p in checkpoint_dir.glob("step*") if p.is_dir())
    if c.export_hf and master and last:
        export_hf(
            c,
            checkpoint_dir,
            last[-1],
            out_dir / "hf",
            {
                "format": "acepilot-finetune/1",
                "checkpoint": last[-1],
                "last": record,
                "best_val_loss": best_val,
                "config": dataclasses.asdict(c),
                "corpus": None
                if manifest is None
                else {
                    k: manifest.get(k)
                    for k in ("name", "version", "created", "sources", "splits", "tokens")
                },
            },
        )
    dist.barrier()
    return record


def run(settings: list[str]) -> None:
    from acepilot.training.config import configure

    # DeepSpeed's launcher appends --local_rank=N; LOCAL_RANK says the same
    for item in [s for s in settings if s.startswith("--local_rank=")]:
        os.environ.setdefault("LOCAL_RANK", item.partition("=")[2])
        settings.remove(item)
    main(configure(FinetuneConfig(), settings))


if __name__ == "__main__":
    run(sys.argv[1:])
