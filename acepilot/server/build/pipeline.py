"""`acepilot model build`: checkpoint -> fused graph -> quantize -> parity gate -> registry.

Everything is written into a registry staging directory and renamed into
place only after the parity gate passed, so a failed build leaves nothing.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from acepilot.server import __version__
from acepilot.server.build.checkpoint import Checkpoint, resolve_checkpoint
from acepilot.server.build.codegen_graph import CodeGenGraphBuilder, CodeGenShape
from acepilot.server.build.graph_io import GraphStepper, check_fused, save_graph
from acepilot.server.build.kv_cache import calibrate_kv_scales, quantize_kv_cache, resolve_kv_cache
from acepilot.server.build.parity import ParityReport, check_parity
from acepilot.server.build.quantize import quantization_settings, quantize_matmuls
from acepilot.server.errors import BuildError, ModelSourceError
from acepilot.server.registry import ModelEntry, Registry

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "int8", "int4")
DEVICES = ("cpu", "cuda")
PARITY_MODES = ("enforce", "record", "skip")


def graph_dtype(precision: str, device: str) -> str:
    """fp16 activations on CUDA (and for fp16 anywhere); float32 on CPU."""
    return "float16" if precision == "fp16" or device == "cuda" else "float32"


def kv_cache_dtype(precision: str, device: str, kv_cache: str = "auto") -> str:
    """The KV cache's type in the manifest: int8 (acepilot/server/build/kv_cache.py) or the graph's."""
    if resolve_kv_cache(kv_cache, precision, device):
        return "int8"
    return graph_dtype(precision, device)


def build_model(
    source: str,
    *,
    precision: str,
    registry: Registry,
    device: str = "cpu",
    name: str | None = None,
    revision: str | None = None,
    parity: str = "enforce",
    progress: bool = True,
    kv_cache: str = "auto",
) -> ModelEntry:
    """`kv_cache`: auto (int8 for CPU int8/int4 builds, else the graph's float type),
    float, or int8 (acepilot/server/build/kv_cache.py)."""
    if precision not in PRECISIONS:
        raise BuildError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if device not in DEVICES:
        raise BuildError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    if parity not in PARITY_MODES:
        raise BuildError(f"parity must be one of {', '.join(PARITY_MODES)}, got {parity!r}")
    kv_dtype = kv_cache_dtype(precision, device, kv_cache)
    from tqdm import tqdm

    steps = tqdm(total=5, desc="model build", unit="step", disable=not progress)
    steps.set_postfix_str("checkpoint")
    checkpoint = resolve_checkpoint(source, revision)
    shape = CodeGenShape.from_config(checkpoint.config)
    name = name or default_name(checkpoint)
    model, tokenizer = load_reference(checkpoint)
    steps.update()

    steps.set_postfix_str("fused graph")
    weights = {key: value.detach().float().numpy() for key, value in model.state_dict().items()}
    dtype = graph_dtype(precision, device)
    graph = CodeGenGraphBuilder(shape, weights, dtype).make_model()
    del weights
    if precision in ("int8", "int4"):
        steps.set_postfix_str(f"quantize {precision}")
        graph = quantize_matmuls(graph, precision, device)
    kv_quantization = None
    if kv_dtype == "int8":
        steps.set_postfix_str("calibrate int8 KV cache")
        k_scales, v_scales, tokens = calibrate_kv_scales(
            model,
            lambda text: list(tokenizer(text)["input_ids"]),
            shape.n_positions,
            shape.rotary_dim,
        )
        graph = quantize_kv_cache(graph, k_scales, v_scales)
        kv_quantization = {"bits": 8, "granularity": "per_channel", "calibration_tokens": tokens}
    op_counts = check_fused(graph, shape)
    steps.update()

    with registry.stage(name) as staging:
        steps.set_postfix_str("save")
        files = save_graph(graph, staging / "model.onnx")
        del graph
        tokenizer.backend_tokenizer.save(str(staging / "tokenizer.json"))
        steps.update()

        steps.set_postfix_str("parity")
        report = None
        if parity != "skip":
            report = run_parity(
                precision, device, model, tokenizer, staging / "model.onnx", shape, kv_dtype
            )
            if report.failures and parity == "enforce":
                raise BuildError(
                    f"parity gate failed for {report.precision}: {'; '.join(report.failures)} "
                    "(nothing was registered)"
                )
        steps.update()

        manifest = make_manifest(checkpoint, shape, precision, device, kv_dtype, tokenizer, report)
        manifest["graph"]["op_counts"] = op_counts
        if precision in ("int8", "int4"):
            manifest["graph"]["weights"] = quantization_settings(precision, device)
        if kv_quantization is not None:
            manifest["graph"]["kv_quantization"] = kv_quantization
        manifest["graph"]["files"] = files
        steps.set_postfix_str("register")
        entry = registry.commit(staging, name, manifest)
        steps.update()
    steps.close()
    if registry.production(name) is None:
        registry.set_production(name, entry.version)
    return entry


def default_name(checkpoint: Checkpoint) -> str:
    if checkpoint.source["kind"] == "hub":
        return str(checkpoint.source["id"]).split("/")[-1]
    return checkpoint.path.name


def load_reference(checkpoint: Checkpoint) -> tuple[Any, Any]:
    """The PyTorch model (the parity reference) and its fast tokenizer."""
    try:
        import torch
        from transformers import AutoTokenizer, CodeGenForCausalLM
    except ImportError as exc:
        raise BuildError(
            "model build needs the build extra: pip install 'acepilot[build]'"
        ) from exc
    try:
        model = CodeGenForCausalLM.from_pretrained(checkpoint.path, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(checkpoint.path, use_fast=True)
    except (OSError, ValueError, RuntimeError) as exc:
        raise ModelSourceError(f"{checkpoint.path}: cannot load the checkpoint ({exc})") from None
    if not getattr(tokenizer, "is_fast", False):
        raise ModelSourceError(f"{checkpoint.path}: no fast (tokenizers) tokenizer available")
    model.eval()
    return model, tokenizer


def run_parity(
    precision: str,
    device: str,
    model: Any,
    tokenizer: Any,
    path: Path,
    shape: CodeGenShape,
    kv_dtype: str,
) -> ParityReport:
    stepper = GraphStepper(path, shape, kv_dtype, device)

    def encode(text: str) -> list[int]:
        return list(tokenizer(text)["input_ids"])

    gate = parity_precision(precision, kv_dtype)
    report = check_parity(gate, model, stepper, encode, shape.n_positions)
    log.info("parity %s: %s", gate, report.results)
    return report


def parity_precision(precision: str, kv_dtype: str) -> str:
    """The thresholds a build is judged by: an int8 KV cache makes float weights an
    int8-class artefact (the fp32 gate is exact, which a quantized cache cannot be)."""
    if kv_dtype == "int8" and precision in ("fp32", "fp16"):
        return "int8"
    return precision


def make_manifest(
    checkpoint: Checkpoint,
    shape: CodeGenShape,
    precision: str,
    device: str,
    kv_dtype: str,
    tokenizer: Any,
    report: ParityReport | None,
) -> dict[str, Any]:
    return {
        "acepilot_version": __version__,
        "source": checkpoint.source,
        "architecture": "codegen",
        "config": {
            "vocab_size": shape.vocab_size,
            "n_embd": shape.n_embd,
            "n_layer": shape.n_layer,
            "n_head": shape.n_head,
            "head_dim": shape.head_dim,
            "rotary_dim": shape.rotary_dim,
            "n_positions": shape.n_positions,
            "layer_norm_epsilon": shape.layer_norm_epsilon,
            "activation": shape.activation,
        },
        "precision": precision,
        "device": device,
        "graph": {
            "file": "model.onnx",
            "num_layers": shape.n_layer,
            "num_kv_heads": shape.n_head,
            "head_dim": shape.head_dim,
            "max_length": shape.n_positions,
            "kv_dtype": kv_dtype,
            "logits": "last",
        },
        "tokenizer": {
            "file": "tokenizer.json",
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "fim": None,  # CodeGen 1 (mono, multi, nl) has no fill-in-the-middle
        },
        "parity": (
            {"status": "skipped"}
            if report is None
            else {
                "status": "passed" if report.passed else "failed",
                "gate": report.precision,
                "failures": report.failures,
                **report.results,
            }
        ),
    }
