"""Real DeepSpeed fine-tunes of a tiny CodeGen on 2 CPU ranks (gloo), through the
same `acepilot train finetune` path a GPU cluster takes: ZeRO-2, ZeRO-3 with
optimizer and parameter offload, LoRA through DeepSpeed's own launcher, kill -9
and resume, and the exported Hugging Face checkpoint against the engine's loss.

Nothing JIT-compiles (torch_adam, shm_comm skipped): each run takes ~25 s."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_train_corpus import code, write

from acepilot.training.config import ConfigError, configure
from acepilot.training.corpus.build import CorpusConfig, build_corpus
from acepilot.training.finetune.launch import launch, launch_command, resolve_strategy
from acepilot.training.finetune.train import FinetuneConfig, check, get_lr

CLI = (
    "import argparse, sys\n"
    "from acepilot.training.commands import train\n"
    "p = argparse.ArgumentParser(); train.register(p.add_subparsers())\n"
    "a = p.parse_args(sys.argv[1:]); sys.exit(a.func(a))\n"
)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, random_codegen_dir: Path) -> dict[str, Path]:
    """A 4-repository corpus (one held out) tokenized for the shared random tiny
    CodeGen (tests/conftest.py), which is the model fine-tuned."""
    root = tmp_path_factory.mktemp("finetune")
    sources = [
        str(
            write(
                root / f"repo{r}",
                {f"m{i}.py": code(100 * r + i, "py" if i % 2 else "ts") for i in range(6)},
            )
        )
        for r in range(4)
    ]
    corpus = build_corpus(
        CorpusConfig(
            sources=sources,
            out_dir=str(root / "corpora"),
            tokenizer=str(random_codegen_dir),
            eval_leak="off",
            validation_repos=["repo3"],
            seq_len=64,
            progress=False,
            workers=1,
        )
    )
    return {"root": root, "corpus": corpus, "model": random_codegen_dir}


def settings(setup: dict[str, Path], out: Path, **kw: Any) -> list[str]:
    base = {
        "init_from": setup["model"],
        "data_dir": setup["corpus"],
        "out_dir": out,
        "nproc": 2,
        "max_steps": 16,
        "micro_batch": 4,
        "learning_rate": 3e-3,
        "min_lr": 3e-4,
        "warmup_steps": 2,
        "eval_interval": 8,
        "eval_iters": 3,
        "checkpoint_interval": 8,
        "progress": False,
        "master_port": 29600 + os.getpid() % 300,
    }
    base.update(kw)
    return [f"--{k}={v}" for k, v in base.items()]


def finetune(setup: dict[str, Path], out: Path, **kw: Any) -> list[dict[str, Any]]:
    """`acepilot train finetune` in a child process, as a user runs it."""
    done = subprocess.run(
        [sys.executable, "-c", CLI, "train", "finetune", *settings(setup, out, **kw)],
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    return log_of(out)


def log_of(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def hf_val_loss(hf_dir: Path, corpus: Path, eval_iters: int, world: int, micro_batch: int) -> float:
    """The validation loss the engine reports, recomputed with plain transformers."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(hf_dir).eval()
    val = np.load(corpus / "validation.npy")
    losses = []
    with torch.no_grad():
        for k in range(eval_iters * world):
            rows = [(k * micro_batch + j) % len(val) for j in range(micro_batch)]
            x = torch.from_numpy(val[rows].astype(np.int64))
            losses.append(float(model(input_ids=x, labels=x).loss))
    return sum(losses) / len(losses)


@pytest.fixture(scope="module")
def zero2_run(setup: dict[str, Path]) -> Path:
    out = setup["root"] / "zero2"
    finetune(setup, out, zero_stage=2)
    return out


def test_zero2_two_ranks_lowers_loss_and_exports(setup: dict[str, Path], zero2_run: Path) -> None:
    log = log_of(zero2_run)
    assert [r["step"] for r in log] == list(range(1, 17))
    assert log[-1]["loss"] < log[0]["loss"] - 1.0  # ~ln(1024) = 6.9 at the start
    vals = [r["val_loss"] for r in log if "val_loss" in r]
    assert len(vals) == 2 and vals[1] < vals[0] < log[0]["loss"]
    assert all(r["tokens_per_s"] > 0 and r["lr"] > 0 for r in log)
    assert log[2]["lr"] == pytest.approx(3e-3)  # warmup ends, then cosine to min_lr

    run = json.loads((zero2_run / "run.json").read_text())
    assert run["world_size"] == 2 and run["deepspeed_config"]["zero_optimization"]["stage"] == 2
    assert run["deepspeed_config"]["optimizer"]["params"]["torch_adam"] is True
    assert run["corpus_manifest"]["version"] == "v1" and run["config"]["seed"] == 1337
    assert (zero2_run / "loss.png").stat().st_size > 1000
    assert sorted(p.name for p in (zero2_run / "checkpoints").glob("step*")) == [
        "step000008",
        "step000016",
    ]

    # the exported checkpoint: transformers loads it and gets the engine's loss
    hf = zero2_run / "hf"
    assert (hf / "model.safetensors").exists() and (hf / "tokenizer.json").exists()
    made = json.loads((hf / "acepilot_finetune.json").read_text())
    assert made["checkpoint"] == "step000016" and made["corpus"]["version"] == "v1"
    assert made["config"]["zero_stage"] == 2 and made["last"]["val_loss"] == vals[-1]
    loss = hf_val_loss(hf, setup["corpus"], eval_iters=3, world=2, micro_batch=4)
    assert loss == pytest.approx(vals[-1], abs=1e-4)


def test_kill_and_resume_continues_the_curve(setup: dict[str, Path], zero2_run: Path) -> None:
    """kill -9 mid-run, start the same command again: the loss curve from the last
    checkpoint on is the one the uninterrupted run drew."""
    out = setup["root"] / "killed"
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            CLI,
            "train",
            "finetune",
            *settings(setup, out, checkpoint_interval=4),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: torchrun and both ranks
    )
    deadline = time.time() + 300
    try:
        while time.time() < deadline and child.poll() is None:
            ready = (out / "checkpoints" / "step000004").exists() and (out / "log.jsonl").exists()
            if ready and log_of(out)[-1]["step"] >= 6:
                break
            time.sleep(0.02)
        assert child.poll() is None, "the run ended before it could be killed"
    finally:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()
    killed_at = log_of(out)[-1]["step"]
    assert 6 <= killed_at < 16 and not (out / "hf").exists()

    log = finetune(setup, out, checkpoint_interval=4)
    assert [r["step"] for r in log] == list(range(1, 17))  # no step twice, none missing
    reference = log_of(zero2_run)
    for mine, theirs in zip(log, reference, strict=True):
        assert mine["loss"] == pytest.approx(theirs["loss"], rel=1e-5), mine["step"]
        assert mine.get("val_loss", 0) == pytest.approx(theirs.get("val_loss", 0), rel=1e-5)


def test_zero3_with_optimizer_and_param_offload(setup: dict[str, Path]) -> None:
    out = setup["root"] / "zero3"
    log = finetune(
        setup,
        out,
        zero_stage=3,
        offload_optimizer=True,
        offload_params=True,
        max_steps=10,
        eval_interval=10,
    )
    assert log[-1]["loss"] < log[0]["loss"] - 0.8
    run = json.loads((out / "run.json").read_text())
    zero = run["deepspeed_config"]["zero_optimization"]
    assert zero["stage"] == 3 and zero["offload_optimizer"]["device"] == "cpu"
    assert zero["offload_param"]["device"] == "cpu"
    loss = hf_val_loss(out / "hf", setup["corpus"], eval_iters=3, world=2, micro_batch=4)
    assert loss == pytest.approx(log[-1]["val_loss"], abs=1e-4)


def test_lora_through_the_deepspeed_launcher(setup: dict[str, Path]) -> None:
    """LoRA (peft) on ZeRO-2, started by DeepSpeed's own launcher; the merged
    model and the adapter are both written."""
    from safetensors.torch import load_file

    out = setup["root"] / "lora"
    log = finetune(
        setup,
        out,
        lora=True,
        lora_r=16,
        launcher="deepspeed",
        max_steps=10,
        eval_interval=10,
        learning_rate=1e-2,
    )
    assert log[-1]["loss"] < log[0]["loss"] - 0.2
    run = json.loads((out / "run.json").read_text())
    assert (
        0
        < run["trainable_params"]
        < 0.2 * sum(v.numel() for v in load_file(setup["model"] / "model.safetensors").values())
    )
    assert (out / "adapter" / "adapter_config.json").exists()
    merged = load_file(out / "hf" / "model.safetensors")
    base = load_file(setup["model"] / "model.safetensors")
    assert not any("lora" in k for k in merged)
    changed = {k for k in base if not np.allclose(base[k].numpy(), merged[k].numpy())}
    assert changed and all(
        k.rsplit(".", 2)[-2] in ("qkv_proj", "out_proj", "fc_in", "fc_out") for k in changed
    )
    loss = hf_val_loss(out / "hf", setup["corpus"], eval_iters=3, world=2, micro_batch=4)
    assert loss == pytest.approx(log[-1]["val_loss"], abs=1e-4)


def test_launch_commands_and_schedule(tmp_path: Path) -> None:
    config = configure(FinetuneConfig(), ["--nproc=4", "--launcher=deepspeed", "--hostfile=hosts"])
    command = launch_command(config, ["cfg.py"])
    assert command[1:3] == ["-m", "deepspeed.launcher.runner"] and "--hostfile" in command
    assert command[-3:] == ["--module", "acepilot.training.finetune.train", "cfg.py"]
    command = launch_command(configure(FinetuneConfig(), ["--nproc=2"]), ["cfg.py"])
    assert command[1:5] == ["-m", "torch.distributed.run", "--nproc_per_node", "2"]
    with pytest.raises(ValueError, match="launcher=none runs one rank"):
        launch(configure(FinetuneConfig(), ["--launcher=none", "--nproc=2"]))
    c = FinetuneConfig(learning_rate=1.0, min_lr=0.1, warmup_steps=4, max_steps=20)
    assert get_lr(0, c) == pytest.approx(0.2) and get_lr(4, c) == pytest.approx(1.0)
    assert get_lr(20, c) == pytest.approx(0.1) and math.isclose(get_lr(12, c), 0.55)


def test_wsd_schedule_does_not_depend_on_the_length_before_its_decay() -> None:
    """warmup-stable-decay: the peak rate until the last decay_fraction of the steps,
    then linear to min_lr; before the decay the rates of a 100- and a 60-step run are
    the same, which is what lets a long run be shortened and stay reproducible."""
    long = FinetuneConfig(
        learning_rate=1.0, min_lr=0.1, warmup_steps=4, max_steps=100, lr_schedule="wsd"
    )
    short = dataclasses.replace(long, max_steps=60)
    assert get_lr(0, long) == pytest.approx(0.2) and get_lr(4, long) == pytest.approx(1.0)
    assert [get_lr(s, long) for s in range(48)] == [get_lr(s, short) for s in range(48)]
    assert get_lr(79, long) == 1.0 and get_lr(90, long) == pytest.approx(0.55)
    assert get_lr(100, long) == pytest.approx(0.1) and get_lr(60, short) == pytest.approx(0.1)
    assert get_lr(54, short) == pytest.approx(0.55)
    with pytest.raises(ConfigError, match="lr_schedule"):
        check(dataclasses.replace(long, lr_schedule="linear", init_from="", data_dir=""))


def test_strategy_auto_asks_the_planner(tmp_path: Path) -> None:
    """strategy=auto on GPUs: the planner's pick becomes the ZeRO settings."""
    from acepilot.training.plan import CODEGEN_SIZES, PlanError

    model = tmp_path / "codegen-2B"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "codegen", **CODEGEN_SIZES["2B"]}))
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "manifest.json").write_text(json.dumps({"seq_len": 1024}))
    base = [
        "--strategy=auto",
        "--gradient_checkpointing",
        f"--init_from={model}",
        f"--data_dir={corpus}",
    ]
    two = resolve_strategy(configure(FinetuneConfig(), [*base, "--nproc=2"]), gpu_mem_gib=32.0)
    assert (two.zero_stage, two.offload_optimizer) == (2, False)
    one = resolve_strategy(configure(FinetuneConfig(), [*base, "--nproc=1"]), gpu_mem_gib=32.0)
    assert (one.zero_stage, one.offload_optimizer) == (2, True)
    big = resolve_strategy(configure(FinetuneConfig(), [*base, "--nproc=8"]), gpu_mem_gib=80.0)
    assert big.zero_stage == 0
    lora = resolve_strategy(configure(FinetuneConfig(), [*base, "--lora"]), gpu_mem_gib=16.0)
    assert lora.lora and not lora.offload_optimizer
    with pytest.raises(PlanError, match="nothing fits"):
        resolve_strategy(configure(FinetuneConfig(), [*base, "--lora=False"]), gpu_mem_gib=1.0)
    manual = configure(FinetuneConfig(), ["--zero_stage=3"])
    assert resolve_strategy(manual, gpu_mem_gib=1.0) is manual


@pytest.mark.parametrize(("stage", "lora"), [(0, False), (1, True)])
def test_zero0_and_lora_on_zero1_export(setup: dict[str, Path], stage: int, lora: bool) -> None:
    """ZeRO-0 exports from the module state; LoRA on ZeRO-1, where zero_to_fp32
    drops the frozen base, exports too, because the base is reloaded from
    init_from and only the trained weights come from the checkpoint."""
    out = setup["root"] / f"zero{stage}-lora{lora}"
    log = finetune(
        setup, out, zero_stage=stage, lora=lora, max_steps=4, eval_interval=4, learning_rate=1e-2
    )
    assert log[-1]["loss"] < log[0]["loss"]
    loss = hf_val_loss(out / "hf", setup["corpus"], eval_iters=3, world=2, micro_batch=4)
    assert loss == pytest.approx(log[-1]["val_loss"], abs=1e-4)


def test_mistakes_are_reported_before_launching(setup: dict[str, Path]) -> None:
    from acepilot.training.config import ConfigError
    from acepilot.training.finetune.train import check

    with pytest.raises(ConfigError, match="set init_from"):
        check(FinetuneConfig())
    good = [f"--init_from={setup['model']}", f"--data_dir={setup['corpus']}"]
    check(configure(FinetuneConfig(), good))
    for bad, message in (
        ("--zero_stage=4", "zero_stage must be 0-3"),
        ("--offload_params", "offload_params needs zero_stage=3"),
        ("--precision=fp8", "precision"),
        ("--data_dir=/nonexistent", "no train.npy"),
    ):
        with pytest.raises(ConfigError, match=message):
            check(configure(FinetuneConfig(), [*good, bad]))


def test_the_exported_model_builds_into_the_registry(zero2_run: Path, tmp_path: Path) -> None:
    """hf/ is what `acepilot model build` takes: fused ONNX, parity gate passed."""
    from acepilot.server.build.pipeline import build_model
    from acepilot.server.registry import Registry

    entry = build_model(
        str(zero2_run / "hf"),
        precision="fp32",
        registry=Registry(tmp_path),
        name="tuned",
        progress=False,
    )
    assert entry.manifest["parity"]["status"] == "passed", entry.manifest["parity"]


def test_resume_refuses_other_sharding(
    setup: dict[str, Path], zero2_run: Path, tmp_path: Path
) -> None:
    """A checkpoint written with ZeRO-2 on 2 ranks does not resume as ZeRO-3 or
    on 4 ranks: the message names the settings."""
    from acepilot.training.config import ConfigError
    from acepilot.training.finetune.train import check_resumable

    checkpoints = zero2_run / "checkpoints"
    config = configure(FinetuneConfig(), settings(setup, zero2_run, zero_stage=2))
    check_resumable(config, checkpoints, world=2)
    with pytest.raises(ConfigError, match=r"zero_stage: 2 -> 3"):
        check_resumable(
            configure(FinetuneConfig(), settings(setup, zero2_run, zero_stage=3)), checkpoints, 2
        )
    with pytest.raises(ConfigError, match=r"world_size: 2 -> 4"):
        check_resumable(config, checkpoints, world=4)
    from acepilot.training.finetune.launch import summary

    text = summary(zero2_run)
    assert "steps: 16" in text and "validation loss" in text and str(zero2_run / "hf") in text


def test_batches_cover_every_row_once_per_epoch() -> None:
    from acepilot.training.finetune.train import batch_rows

    c = FinetuneConfig(micro_batch=3, grad_accum=2, seed=7)
    rows, world = 24, 2  # 12 samples per step: an epoch is 2 steps
    seen = [
        batch_rows(rows, step, micro, rank, world, c)
        for step in range(2)
        for micro in range(2)
        for rank in range(world)
    ]
    assert sorted(np.concatenate(seen).tolist()) == list(range(rows))
    again = batch_rows(rows, 2, 0, 0, world, c)  # the next epoch: another order
    assert len(set(again.tolist())) == 3 and not np.array_equal(again, seen[0])
    assert np.array_equal(batch_rows(rows, 1, 1, 1, world, c), seen[-1])
