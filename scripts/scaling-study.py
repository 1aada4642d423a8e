#!/usr/bin/env python3
"""A compute-matched scaling study for the default model: which size learns most per CPU-minute.

Each shape is trained for the same wall time (`--minutes`, one thread) through the one
training loop (acepilot/training/finetune, DeepSpeed, the bootstrap recipe's settings:
warmup-stable-decay, so every run ends decayed and its last validation loss is its
result), on the bootstrap's data and tokenizer. Steps per shape come from a short timed
probe (forward + backward of one batch). Prints one table (non-embedding and all
parameters, steps, tokens, tokens/s, validation loss) and writes WORK/study.json.

    .venv/bin/python scripts/scaling-study.py --bootstrap-work W --work /tmp/study --minutes 9

W is an `acepilot bootstrap` work dir (its `data/` and `tokenizer/` are read, never
written). docs/acepilot-tiny.md records the study and what it chose.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SHAPES = {  # name: (n_embd, n_layer, n_head); CodeGen wants n_head % 4 == 0
    "64x4": (64, 4, 4),
    "128x6": (128, 6, 4),
    "192x6": (192, 6, 4),
    "256x8": (256, 8, 8),
}


def probe_seconds_per_step(init_dir: Path, micro_batch: int, seq_len: int) -> float:
    """Forward + backward + AdamW step of one batch, median of 3 after one warm-up."""
    import torch
    from transformers import CodeGenForCausalLM

    model = CodeGenForCausalLM.from_pretrained(str(init_dir))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids = torch.randint(0, model.config.vocab_size - 1, (micro_batch, seq_len))
    times = []
    for _ in range(4):
        start = time.perf_counter()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        times.append(time.perf_counter() - start)
    return sorted(times[1:])[1]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bootstrap-work", type=Path, required=True)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--minutes", type=float, default=9.0, help="wall time per shape")
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    args = parser.parse_args()

    import torch

    from acepilot.training import codegen
    from acepilot.training.bootstrap.config import BootstrapConfig
    from acepilot.training.bootstrap.train import finetune_config
    from acepilot.training.finetune.launch import launch
    from acepilot.training.machine import torch_threads
    from acepilot.training.tokenizer import load_tokenizer

    torch.set_num_threads(1)
    source = args.bootstrap_work.expanduser().resolve()
    data_dir, tokenizer_dir = source / "data", source / "tokenizer"
    args.work.mkdir(parents=True, exist_ok=True)
    results = []
    for name in args.shapes:
        n_embd, n_layer, n_head = SHAPES[name]
        base = BootstrapConfig()
        init_dir = args.work / name / "init"
        if not (init_dir / "config.json").is_file():
            codegen.init_checkpoint(
                init_dir,
                load_tokenizer(tokenizer_dir),
                seed=base.seed,
                n_embd=n_embd,
                n_layer=n_layer,
                n_head=n_head,
                rotary_dim=base.rotary_dim,
                n_positions=base.n_positions,
            )
        per_step = probe_seconds_per_step(init_dir, base.micro_batch, base.seq_len)
        steps = max(60, int(args.minutes * 60 / per_step))
        config = dataclasses.replace(
            base, n_embd=n_embd, n_layer=n_layer, n_head=n_head, steps=steps
        )
        out = args.work / name / "train"
        finetune = dataclasses.replace(
            finetune_config(config, data_dir, init_dir, out, progress=False),
            eval_interval=max(1, steps // 4),
        )
        print(f"{name}: {per_step:.2f} s/step in the probe -> {steps} steps", flush=True)
        os.environ["MASTER_PORT"] = str(finetune.master_port)
        started = time.monotonic()
        with torch_threads():
            status = launch(finetune)
        wall = time.monotonic() - started
        if status != 0:
            print(f"{name}: training failed ({status})", file=sys.stderr)
            return 1
        log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines() if line]
        val = [(row["step"], row["val_loss"]) for row in log if "val_loss" in row]
        size = config.model_size()
        embeddings = 2 * codegen.padded_vocab(config.vocab_size) * n_embd
        results.append(
            {
                "shape": name,
                "parameters": size,
                "non_embedding": size - embeddings,
                "steps": steps,
                "tokens": steps * base.micro_batch * base.seq_len,
                "seconds": round(wall, 1),
                "validation": val,
            }
        )
        (args.work / "study.json").write_text(json.dumps(results, indent=1) + "\n")
    print("\n| shape | non-embedding params | all params | steps | tokens | tokens/s | val loss |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['shape']} | {r['non_embedding'] / 1e6:.2f}M | {r['parameters'] / 1e6:.2f}M | "
            f"{r['steps']} | {r['tokens'] / 1e6:.2f}M | {r['tokens'] / r['seconds']:.0f} | "
            f"{r['validation'][-1][1]:.3f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
