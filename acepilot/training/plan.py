"""The memory planner: `acepilot train plan --model 2B --gpus 2 --gpu-mem 32GB`.

What fits where, before anyone rents a cluster. Model states come from
DeepSpeed's own estimators (estimate_zero2/zero3_model_states_mem_needs, which
need only parameter counts); ZeRO-0/1 and LoRA follow the same accounting
(2 bytes fp16 params + 18 bytes of fp16/fp32 gradients, fp32 master weights and
Adam moments per trainable parameter). Activations are added for the sequence
length and micro-batch (Korthikanti et al. 2022, per layer s*b*h*(34 + 5*a*s/h)
bytes in fp16; with activation checkpointing only each layer's input is kept
and one layer is recomputed at a time) plus the logits, which CodeGen computes
in fp32 over a 51k vocabulary: ~12 bytes per token per vocabulary entry
(fp16 logits, their fp32 copy, the shifted copy the loss makes).

The strategies are listed from fastest to slowest (less communication first,
no offload before offload, full fine-tuning before LoRA), and the first that
fits is the pick.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from acepilot.server.errors import AcepilotError

GIB = 1 << 30

# CodeGen shapes (mono/multi/nl share them): ../shared/ENVIRONMENT.md
CODEGEN_SIZES: dict[str, dict[str, int]] = {
    "350M": dict(n_embd=1024, n_layer=20, n_head=16, vocab_size=51200, n_positions=2048),
    "2B": dict(n_embd=2560, n_layer=32, n_head=32, vocab_size=51200, n_positions=2048),
    "6B": dict(n_embd=4096, n_layer=33, n_head=16, vocab_size=51200, n_positions=2048),
    "16B": dict(n_embd=6144, n_layer=34, n_head=24, vocab_size=51200, n_positions=2048),
}
SIZE_ALIASES = {"2.7B": "2B", "6.1B": "6B", "16.1B": "16B", "400M": "350M"}
LORA_TARGETS = ("qkv_proj", "out_proj", "fc_in", "fc_out")


class PlanError(AcepilotError):
    """The planner could not read the model or the memory sizes."""


@dataclass(frozen=True)
class ModelShape:
    name: str
    params: int  # all parameters
    largest_layer: int  # parameters of the largest single module (ZeRO-3 gathers it whole)
    n_embd: int
    n_layer: int
    n_head: int
    vocab_size: int
    lora_params: int  # trainable parameters of a LoRA adapter (rank `lora_r` on LORA_TARGETS)


@dataclass(frozen=True)
class Strategy:
    name: str
    stage: int
    offload_optimizer: bool = False
    offload_params: bool = False
    lora: bool = False


STRATEGIES = (  # fastest first
    Strategy("ZeRO-0 (data parallel)", 0),
    Strategy("ZeRO-1", 1),
    Strategy("ZeRO-2", 2),
    Strategy("ZeRO-3", 3),
    Strategy("ZeRO-2 + optimizer offload", 2, offload_optimizer=True),
    Strategy("ZeRO-3 + optimizer offload", 3, offload_optimizer=True),
    Strategy("ZeRO-3 + optimizer + param offload", 3, True, True),
    # LoRA + ZeRO-1 is left out: zero_to_fp32 drops the frozen base (ENVIRONMENT.md)
    Strategy("LoRA, ZeRO-0", 0, lora=True),
    Strategy("LoRA, ZeRO-2", 2, lora=True),
    Strategy("LoRA, ZeRO-3", 3, lora=True),
    Strategy("LoRA, ZeRO-3 + param offload", 3, True, True, lora=True),
)


@dataclass
class Row:
    strategy: Strategy
    states_gib: float  # model states per GPU
    activations_gib: float  # per GPU
    gpu_gib: float  # total per GPU, with the reserve
    cpu_gib: float  # per node
    fits: bool


def codegen_params(n_embd: int, n_layer: int, vocab_size: int, **_: int) -> int:
    """CodeGen's count: embedding, per layer LN + packed qkv + out + MLP (with
    biases), final LN, untied lm_head with bias. 350M gives 356,712,448."""
    per_layer = 2 * n_embd + 4 * n_embd * n_embd + (8 * n_embd * n_embd + 5 * n_embd)
    return vocab_size * n_embd + n_layer * per_layer + 2 * n_embd + vocab_size * (n_embd + 1)


def codegen_shape(name: str, lora_r: int = 8, **cfg: int) -> ModelShape:
    n, layers = cfg["n_embd"], cfg["n_layer"]
    # LoRA adds r*(in+out) per target: qkv n->3n, out n->n, fc_in n->4n, fc_out 4n->n
    lora = layers * lora_r * (4 * n + 2 * n + 5 * n + 5 * n)
    return ModelShape(
        name=name,
        params=codegen_params(**cfg),
        largest_layer=max(cfg["vocab_size"] * (n + 1), 4 * n * n + 4 * n),  # lm_head (bias)
        n_embd=n,
        n_layer=layers,
        n_head=cfg["n_head"],
        vocab_size=cfg["vocab_size"],
        lora_params=lora,
    )


def _shape_by_meta(path: Path, lora_r: int) -> ModelShape:
    """Any causal LM config: instantiate it on the meta device and count."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(path)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    params = sum(p.numel() for p in model.parameters())
    largest = max(sum(p.numel() for p in m.parameters(recurse=False)) for m in model.modules())
    lora = sum(
        lora_r * (m.in_features + m.out_features)
        for name, m in model.named_modules()
        if isinstance(m, torch.nn.Linear) and name.rsplit(".", 1)[-1] in LORA_TARGETS
    )
    get = lambda *keys: next(int(getattr(config, k)) for k in keys if hasattr(config, k))  # noqa: E731
    return ModelShape(
        name=path.name,
        params=params,
        largest_layer=largest,
        n_embd=get("n_embd", "hidden_size"),
        n_layer=get("n_layer", "num_hidden_layers"),
        n_head=get("n_head", "num_attention_heads"),
        vocab_size=get("vocab_size"),
        lora_params=lora,
    )


def model_shape(size_or_path: str, lora_r: int = 8) -> ModelShape:
    """A CodeGen size (350M, 2B/2.7B, 6B, 16B; '-mono' etc. ignored) or a checkpoint dir."""
    path = Path(size_or_path).expanduser()
    if (path / "config.json").is_file():
        config = json.loads((path / "config.json").read_text())
        if config.get("model_type") == "codegen":
            keys = ("n_embd", "n_layer", "n_head", "vocab_size")
            return codegen_shape(path.name, lora_r, **{k: int(config[k]) for k in keys})
        return _shape_by_meta(path, lora_r)
    key = re.sub(r"^(?:.*/)?codegen-|-(?:mono|multi|nl)$", "", size_or_path, flags=re.I).upper()
    key = SIZE_ALIASES.get(key, key)
    if key not in CODEGEN_SIZES:
        raise PlanError(
            f"--model {size_or_path!r}: give a CodeGen size ({', '.join(CODEGEN_SIZES)}) "
            "or a checkpoint directory with config.json"
        )
    return codegen_shape(f"CodeGen-{key}", lora_r, **CODEGEN_SIZES[key])


def parse_mem(text: str) -> float:
    """'32GB', '32GiB', '80G', '512MB' -> GiB. GPU makers' GB are GiB (a "32 GB"
    V100 has 32 GiB), so GB and GiB read the same here."""
    match = re.fullmatch(r"\s*([\d.]+)\s*([KMGT]?)(?:i?B)?\s*", text, re.I)
    if not match:
        raise PlanError(f"memory size {text!r}: expected e.g. 32GB")
    scale = {"K": 1 / (1 << 20), "M": 1 / 1024, "G": 1.0, "T": 1024.0, "": 1.0}
    return float(match.group(1)) * scale[match.group(2).upper()]


def activation_bytes(
    shape: ModelShape, seq_len: int, micro_batch: int, checkpointing: bool = True
) -> int:
    s, b, h, a = seq_len, micro_batch, shape.n_embd, shape.n_head
    layer = s * b * h * (34 + 5 * a * s / h)
    kept = 2 * s * b * h * shape.n_layer + layer if checkpointing else layer * shape.n_layer
    logits = 12 * s * b * shape.vocab_size
    return int(kept + logits)


def model_states(
    shape: ModelShape, strategy: Strategy, gpus_per_node: int, nodes: int
) -> tuple[int, int]:
    """(GPU bytes per GPU, CPU bytes per node) from DeepSpeed's estimators."""
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs
    from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

    n = gpus_per_node * nodes
    trainable = shape.lora_params if strategy.lora else shape.params
    frozen = shape.params if strategy.lora else 0  # LoRA keeps the base, in fp16, untrained
    if strategy.stage == 3:
        cpu, gpu, _ = estimate_zero3_model_states_mem_needs(
            total_params=trainable,
            largest_layer_params=shape.largest_layer,
            num_gpus_per_node=gpus_per_node,
            num_nodes=nodes,
            cpu_offload=strategy.offload_optimizer,
            cpu_offload_params=strategy.offload_params,
            zero_init=True,
        )
        if strategy.offload_params:
            cpu += 2 * frozen / nodes
        else:
            gpu += 2 * frozen // n
        return int(gpu), int(cpu)
    if strategy.stage == 2:
        cpu, gpu = estimate_zero2_model_states_mem_needs(
            total_params=trainable,
            num_gpus_per_node=gpus_per_node,
            num_nodes=nodes,
            cpu_offload=strategy.offload_optimizer,
        )
        return int(gpu + 2 * frozen), int(cpu + (4 * frozen * gpus_per_node * 1.5 if frozen else 0))
    # ZeRO-0/1 have no DeepSpeed estimator: the same accounting as ZeRO-2's
    # (2 fp16 params + 2 fp16 grads + 16 of fp32 grads, master weights and Adam),
    # with the 16 partitioned by ZeRO-1 and replicated by ZeRO-0
    optimizer = 16 * trainable / (n if strategy.stage == 1 else 1)
    gpu = 2 * (trainable + frozen) + 2 * trainable + optimizer
    cpu = 4 * (trainable + frozen) * gpus_per_node * 1.5  # each rank loads the fp32 model
    return int(gpu), int(cpu)


def plan(
    shape: ModelShape,
    gpus_per_node: int,
    gpu_mem_gib: float,
    nodes: int = 1,
    seq_len: int = 1024,
    micro_batch: int = 1,
    checkpointing: bool = True,
    reserve_gib: float = 0.5,
    cpu_mem_gib: float | None = None,
    lora: bool | None = None,
) -> list[Row]:
    """Every strategy, fastest first. `lora`: None = all, True/False = only those."""
    acts = activation_bytes(shape, seq_len, micro_batch, checkpointing) / GIB
    rows = []
    for strategy in STRATEGIES:
        if lora is not None and strategy.lora != lora:
            continue
        gpu, cpu = model_states(shape, strategy, gpus_per_node, nodes)
        total = gpu / GIB + acts + reserve_gib
        fits = total <= gpu_mem_gib and (cpu_mem_gib is None or cpu / GIB <= cpu_mem_gib)
        rows.append(Row(strategy, gpu / GIB, acts, total, cpu / GIB, fits))
    return rows


def pick(rows: list[Row]) -> Row | None:
    """The fastest that fits, full fine-tuning before LoRA."""
    return next((r for r in rows if r.fits), None)


def min_gpus(shape: ModelShape, gpu_mem_gib: float, offload: bool = False, **kw: Any) -> int:
    """The fewest GPUs (one node) on which full fine-tuning fits; without offload
    by default, as the seed's team ran it."""
    for n in range(1, 257):
        rows = plan(shape, n, gpu_mem_gib, lora=False, **kw)
        if any(r.fits and (offload or not r.strategy.offload_optimizer) for r in rows):
            return n
    raise PlanError(f"{shape.name} does not fit on 256 GPUs of {gpu_mem_gib} GiB")


def deepspeed_config(strategy: Strategy, micro_batch: int) -> dict[str, Any]:
    """The zero_optimization block a run with this strategy uses."""
    zero: dict[str, Any] = {"stage": strategy.stage}
    if strategy.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
    if strategy.offload_params:
        zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    return {"train_micro_batch_size_per_gpu": micro_batch, "zero_optimization": zero}


def format_table(shape: ModelShape, rows: list[Row], gpus: int, nodes: int, gpu_mem: float) -> str:
    chosen = pick(rows)
    lines = [
        f"{shape.name}: {shape.params / 1e9:.2f}B parameters (LoRA r=8: {shape.lora_params / 1e6:.1f}M "
        f"trainable); {nodes} node(s) x {gpus} GPU(s) of {gpu_mem:g} GiB",
        "",
        f"{'strategy':36} {'states/GPU':>10} {'activ.':>7} {'total/GPU':>10} {'CPU/node':>9}  fits",
    ]
    for r in rows:
        mark = "yes" if r.fits else "no"
        if r is chosen:
            mark += "  <- pick (fastest that fits)"
        lines.append(
            f"{r.strategy.name:36} {r.states_gib:9.1f}G {r.activations_gib:6.1f}G "
            f"{r.gpu_gib:9.1f}G {r.cpu_gib:8.1f}G  {mark}"
        )
    lines.append("")
    if chosen is None:
        lines.append("nothing fits: add GPUs or nodes, or shorten seq_len / micro-batch")
    else:
        config = json.dumps(deepspeed_config(chosen.strategy, 1)["zero_optimization"])
        lines.append(f"pick: {chosen.strategy.name}: zero_optimization = {config}")
    return "\n".join(lines)
