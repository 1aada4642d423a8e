"""The memory planner: DeepSpeed's estimators reproduced, the seed's experience
(CodeGen-2.7B needs two 32 GB V100s, 6B four), the table for every size."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from acepilot.training import plan


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    from acepilot.training.commands import train

    parser = argparse.ArgumentParser()
    train.register(parser.add_subparsers())
    args = parser.parse_args(["train", "plan", *argv])
    code = args.func(args)
    return code, capsys.readouterr().out


def states(model: str, name: str, gpus: int) -> float:
    rows = plan.plan(plan.model_shape(model), gpus, 1000.0)
    return round(next(r.states_gib for r in rows if r.strategy.name == name), 1)


def test_parameter_counts_match_codegen() -> None:
    assert plan.model_shape("350M").params == 356_712_448  # the real checkpoint's count
    assert plan.model_shape("codegen-2B-mono").params == plan.model_shape("2.7B").params
    assert round(plan.model_shape("2B").params / 1e9, 2) == 2.78
    assert round(plan.model_shape("6B").params / 1e9, 2) == 7.06
    with pytest.raises(plan.PlanError, match="CodeGen size"):
        plan.model_shape("7B")


def test_counts_from_a_checkpoint_dir_match_torch(tmp_path: Path) -> None:
    """A local config is counted analytically (CodeGen) and on the meta device (any)."""
    from transformers import CodeGenConfig, CodeGenForCausalLM

    config = CodeGenConfig(vocab_size=300, n_embd=64, n_layer=2, n_head=4, rotary_dim=16)
    config.save_pretrained(tmp_path / "tiny")
    model = CodeGenForCausalLM(config)
    shape = plan.model_shape(str(tmp_path / "tiny"))
    assert shape.params == sum(p.numel() for p in model.parameters())
    meta = plan._shape_by_meta(tmp_path / "tiny", lora_r=8)
    assert meta.params == shape.params and meta.lora_params == shape.lora_params
    assert meta.largest_layer == shape.largest_layer


def test_deepspeed_estimators_as_measured() -> None:
    """The figures ENVIRONMENT.md measured with DeepSpeed's own functions."""
    assert [states("2B", "ZeRO-3", n) for n in (1, 2, 4)] == [47.1, 23.8, 12.1]
    assert [states("2B", "ZeRO-2", n) for n in (1, 2, 4)] == [51.8, 28.5, 16.8]
    assert states("2B", "ZeRO-2 + optimizer offload", 1) == 5.2
    assert [states("6B", "ZeRO-3", n) for n in (1, 2, 4, 8)] == [119.2, 60.0, 30.4, 15.6]
    assert states("6B", "ZeRO-3 + optimizer offload", 1) == 13.9
    # ZeRO-0/1 follow the same accounting: all equal on one GPU
    assert states("2B", "ZeRO-0 (data parallel)", 1) == states("2B", "ZeRO-1", 1) == 51.8


def test_the_seeds_experience() -> None:
    """Full fine-tuning on 32 GB V100s without offload: 2.7B needs two, 6B four."""
    v100 = plan.parse_mem("32GB")
    assert plan.min_gpus(plan.model_shape("2.7B"), v100) == 2
    assert plan.min_gpus(plan.model_shape("6B"), v100) == 4
    # with CPU optimizer offload one GPU is enough, given the host memory
    assert plan.min_gpus(plan.model_shape("6B"), v100, offload=True) == 1
    one = plan.plan(plan.model_shape("6B"), 1, v100, cpu_mem_gib=128.0, lora=False)
    assert not any(r.fits for r in one)  # 6B offload needs ~158 GiB of host memory
    rows = plan.plan(plan.model_shape("2.7B"), 2, v100)
    assert plan.pick(rows).strategy.name == "ZeRO-2"  # type: ignore[union-attr]


def test_activations_grow_with_sequence_and_batch() -> None:
    shape = plan.model_shape("2B")
    base = plan.activation_bytes(shape, 1024, 1)
    assert plan.activation_bytes(shape, 1024, 2) == pytest.approx(2 * base, rel=1e-6)
    assert plan.activation_bytes(shape, 2048, 1) > 2 * base
    assert plan.activation_bytes(shape, 1024, 1, checkpointing=False) > 5 * base


@pytest.mark.parametrize(
    ("model", "gpus", "nodes", "pick"),
    [
        ("350M", 1, 1, "ZeRO-0 (data parallel)"),
        ("2.7B", 1, 1, "ZeRO-2 + optimizer offload"),
        ("2.7B", 2, 1, "ZeRO-2"),
        ("6B", 4, 1, "ZeRO-3"),
        ("16B", 8, 2, "ZeRO-3"),
    ],
)
def test_cli_table_for_every_size(
    capsys: pytest.CaptureFixture[str], model: str, gpus: int, nodes: int, pick: str
) -> None:
    code, out = run_cli(
        capsys, "--model", model, "--gpus", str(gpus), "--gpu-mem", "32GB", "--nodes", str(nodes)
    )
    assert code == 0
    chosen = [line for line in out.splitlines() if "<- pick" in line]
    assert len(chosen) == 1 and chosen[0].startswith(pick + " ")
    assert len(
        [line for line in out.splitlines() if line.endswith(("yes", "no")) or "<-" in line]
    ) == len(plan.STRATEGIES)


def test_cli_json_and_nothing_fits(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run_cli(
        capsys, "--model", "16B", "--gpu-mem", "16GB", "--cpu-mem", "64GB", "--lora", "no", "--json"
    )
    data = json.loads(out)
    assert code == 1 and data["pick"] is None  # 16B, one 16 GB GPU, 64 GB of host memory
    # with enough host memory ZeRO-Infinity style offload does fit it
    assert any(
        r["fits"]
        for r in json.loads(run_cli(capsys, "--model", "16B", "--gpu-mem", "16GB", "--json")[1])[
            "rows"
        ]
    )
    assert {r["lora"] for r in data["rows"]} == {False}
    code, out = run_cli(
        capsys, "--model", "16B", "--gpu-mem", "16GB", "--cpu-mem", "64GB", "--json"
    )
    assert code == 0 and json.loads(out)["pick"].startswith("LoRA")
