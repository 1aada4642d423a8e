"""The trained test model: a small CodeGen trained on the standard-library sample.

Random weights give nearly flat logits, on which quantization error and greedy
agreement mean nothing; a trained model has peaked logits, so the parity gate
and the tests that read completions are honest. It is trained through the one
training loop (acepilot/training/finetune, in a child process) from the same
tokenizer trainer and seeded initialisation as acepilot-tiny, and cached: a
checkpoint trained with the same arguments, code and sample is reused.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from acepilot.training import codegen, perplexity
from acepilot.training.atomic import file_lock, replace_atomically
from acepilot.training.machine import cpu_threads, free_port, torch_threads
from acepilot.training.tiny import source_hash
from acepilot.training.tiny.sample import CodeSample, code_sample_files, read_texts
from acepilot.training.tokenizer import load_tokenizer, train_tokenizer

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

TRAINING_RECORD = "training.json"
# Bumped by hand when the training recipe changes in a way the arguments do not show.
RECIPE_VERSION = 3  # 3: the sample found by bootstrap's source functions (their excluded dirs)


@dataclass(frozen=True)
class TinyTrainingArgs:
    """Everything that determines a trained tiny model (the cache key).

    Chosen for quality per CPU-minute on 2 cores: at this compute (~1e13
    FLOPs) a ~1M-parameter transformer trained on ~1M tokens beats a wider
    one trained on fewer, and 256-token windows are enough to learn
    indentation and local structure. head_dim 32 with rotary_dim 16 keeps
    CodeGen's "partial rotary" (rotary_dim < head_dim) in play.
    """

    seed: int = 0
    steps: int = 600
    batch_size: int = 8
    seq_len: int = 256
    vocab_size: int = 2048
    n_embd: int = 128
    n_layer: int = 4
    n_head: int = 4
    rotary_dim: int = 16
    n_positions: int = 512
    learning_rate: float = 6e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 30
    weight_decay: float = 0.1
    eval_tokens: int = 16_384

    def check(self) -> None:
        codegen.check_shape(self.n_embd, self.n_head, self.rotary_dim, self.n_positions)
        if self.seq_len > self.n_positions:
            raise ValueError(f"seq_len {self.seq_len} exceeds n_positions {self.n_positions}")
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError("steps and batch_size must be positive")

    def shape(self) -> dict[str, int]:
        return {
            "n_embd": self.n_embd,
            "n_layer": self.n_layer,
            "n_head": self.n_head,
            "rotary_dim": self.rotary_dim,
            "n_positions": self.n_positions,
        }


def training_record(directory: Path) -> dict[str, Any] | None:
    """The training.json of a trained checkpoint, or None when there is none."""
    try:
        record: dict[str, Any] = json.loads((directory / TRAINING_RECORD).read_text("utf-8"))
    except (OSError, ValueError):
        return None
    return record


def train_tiny_codegen(
    out_dir: Path,
    *,
    seed: int = 0,
    steps: int = 600,
    progress: bool = True,
    sample: CodeSample | None = None,
    **overrides: Any,
) -> Path:
    """Train (or reuse) a tiny CodeGen on the standard library; returns `out_dir`.

    `out_dir` becomes a Hugging Face checkpoint (config.json,
    model.safetensors, tokenizer files) plus training.json: the arguments,
    the final training loss, the held-out loss and perplexity and n-gram
    baselines on the same held-out tokens. If `out_dir` already holds a
    checkpoint trained with the same arguments, code and code sample, it is
    returned as is; otherwise it is trained into a temporary directory and
    swapped in atomically under a file lock. Other keyword arguments are
    fields of TinyTrainingArgs.
    """
    args = TinyTrainingArgs(seed=seed, steps=steps, **overrides)
    args.check()
    sample = sample or code_sample_files()
    key = {
        **args.__dict__,
        "recipe": RECIPE_VERSION,
        "code": source_hash(),
        "sample": sample.fingerprint(),
    }

    def is_current() -> bool:
        record = training_record(out_dir)
        return record is not None and record.get("key") == key

    if is_current():
        return out_dir
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(out_dir):
        if not is_current():
            replace_atomically(out_dir, lambda tmp: _train(tmp, args, sample, key, progress))
    return out_dir


def run_finetune(settings: dict[str, Any], log_path: Path) -> None:
    """acepilot/training/finetune/train.py as a child process, one rank.

    A child, not this process: the loop starts a (gloo) process group, and a
    test session or a caller that holds one must not meet it."""
    env = {
        **os.environ,
        "RANK": "0",
        "LOCAL_RANK": "0",
        "WORLD_SIZE": "1",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(free_port()),
        "DS_ACCELERATOR": "cpu",
        "OMP_NUM_THREADS": str(cpu_threads()),
        "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE"),
    }
    arguments = [f"--{key}={value}" for key, value in settings.items()]
    command = [sys.executable, "-m", "acepilot.training.finetune.train", *arguments]
    with open(log_path, "w") as log:
        done = subprocess.run(command, env=env, stdout=log, stderr=subprocess.STDOUT, check=False)
    if done.returncode != 0:
        tail = log_path.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"training failed (status {done.returncode}):\n{tail}")


def finetune_settings(args: TinyTrainingArgs, work: Path, progress: bool) -> dict[str, Any]:
    """The training loop's settings: ZeRO-0, fp32, one rank, one checkpoint at the end."""
    return {
        "init_from": work / "init",
        "data_dir": work / "data",
        "out_dir": work / "run",
        "max_steps": args.steps,
        "micro_batch": args.batch_size,
        "learning_rate": args.learning_rate,
        "min_lr": args.learning_rate * args.min_lr_ratio,
        "warmup_steps": args.warmup_steps,
        "weight_decay": args.weight_decay,
        "eval_interval": args.steps,
        "checkpoint_interval": args.steps,
        "keep_checkpoints": 1,
        "zero_stage": 0,
        "precision": "fp32",
        "launcher": "none",
        "seed": args.seed,
        "progress": progress,
    }


def pack_rows(stream: list[int], seq_len: int, path: Path) -> int:
    """The stream cut into rows of seq_len (the tail dropped), saved as train.npy."""
    import numpy as np

    rows = len(stream) // seq_len
    data = np.asarray(stream[: rows * seq_len], dtype=np.uint16).reshape(rows, seq_len)
    np.save(path, data)
    return rows


def _train(
    out_dir: Path, args: TinyTrainingArgs, sample: CodeSample, key: dict[str, Any], progress: bool
) -> None:
    """Tokenizer, packed rows, a seeded init, the one training loop, then the record."""
    from transformers import CodeGenForCausalLM

    started = time.monotonic()
    train_texts = read_texts(sample.train)
    train_tokenizer(train_texts, args.vocab_size, out_dir)
    tokenizer = load_tokenizer(out_dir)
    eos = tokenizer.eos_token_id
    assert isinstance(eos, int)
    train_ids = perplexity.token_stream(tokenizer, train_texts, eos)
    held_ids = perplexity.token_stream(tokenizer, read_texts(sample.held_out), eos)
    tokenizer.model_max_length = args.n_positions  # after tokenizing whole files
    tokenizer.save_pretrained(str(out_dir))
    with tempfile.TemporaryDirectory(dir=out_dir.parent) as scratch:
        work = Path(scratch)
        (work / "data").mkdir()
        pack_rows(train_ids, args.seq_len, work / "data" / "train.npy")
        codegen.init_checkpoint(work / "init", tokenizer, seed=args.seed, **args.shape())
        tokenizer_seconds = time.monotonic() - started
        train_started = time.monotonic()
        run_finetune(finetune_settings(args, work, progress), work / "train.log")
        train_seconds = time.monotonic() - train_started
        log = [json.loads(line) for line in (work / "run" / "log.jsonl").read_text().splitlines()]
        model = CodeGenForCausalLM.from_pretrained(str(work / "run" / "hf")).eval()
    model.save_pretrained(str(out_dir), safe_serialization=True)
    record = {
        "key": key,
        "config": model.config.to_dict(),
        "parameters": sum(p.numel() for p in model.parameters()),
        "steps": args.steps,
        "tokens_seen": args.steps * args.batch_size * args.seq_len,
        "train_tokens": len(train_ids),
        "train_files": len(sample.train),
        "held_out_files": len(sample.held_out),
        "final_train_loss": log[-1]["loss"] if log else None,
        "held_out": held_out_record(model, tokenizer, train_ids, held_ids, args),
        "seconds": {
            "tokenizer_and_data": round(tokenizer_seconds, 1),
            "training": round(train_seconds, 1),
            "total": round(time.monotonic() - started, 1),
        },
        "trained_by": "acepilot/training/finetune/train.py (DeepSpeed ZeRO-0, one rank)",
    }
    (out_dir / TRAINING_RECORD).write_text(json.dumps(record, indent=2) + "\n", "utf-8")


def held_out_record(
    model: Any,
    tokenizer: PreTrainedTokenizerFast,
    train_ids: list[int],
    held_ids: list[int],
    args: TinyTrainingArgs,
) -> dict[str, Any]:
    """Held-out loss, perplexity and bits per character, beside the count baselines."""
    windows = perplexity.token_windows(held_ids, args.seq_len, args.eval_tokens)
    with torch_threads():
        loss = perplexity.model_loss(model, windows)
    baselines = perplexity.BigramModel(train_ids, model.config.vocab_size).baselines(windows)
    chars = len(tokenizer.decode([t for w in windows for t in w[1:]]))
    predicted = sum(len(w) - 1 for w in windows)
    return {
        "tokens": predicted,
        "loss": loss,
        "perplexity": math.exp(loss),
        "bits_per_char": loss * predicted / chars / math.log(2),
        "baselines": baselines,
    }


__all__ = ["TinyTrainingArgs", "train_tiny_codegen", "training_record"]
