"""`acepilot model build`: checkpoint -> fused graph -> quantize -> parity gate -> registry.

The checkpoint's config.json picks the family (families/__init__.py); the
family's builder writes the graph, its PyTorch model is the parity reference.

Everything is written into a registry staging directory and renamed into
place only after the parity gate passed, so a failed build leaves nothing.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from acepilot.server import __version__
from acepilot.server.build.checkpoint import Checkpoint, resolve_checkpoint
from acepilot.server.build.families import family_for
from acepilot.server.build.graph_io import GraphStepper, check_fused, save_graph
from acepilot.server.build.kv_cache import calibrate_kv_scales, quantize_kv_cache, resolve_kv_cache
from acepilot.server.build.parity import ParityReport, check_parity
from acepilot.server.build.quantize import quantization_settings, quantize_weights
from acepilot.server.build.shape import ModelShape
from acepilot.server.build.tokenizer import check_vocab, fim_from_vocab, load_tokenizer
from acepilot.server.errors import BuildError
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
    max_length: int | None = None,
) -> ModelEntry:
    """`kv_cache`: auto (int8 for CPU int8/int4 builds, else the graph's float type),
    float, or int8 (acepilot/server/build/kv_cache.py). `max_length`: the graph's
    context (default: the config's positions capped at shape.DEFAULT_MAX_LENGTH)."""
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
    family = family_for(checkpoint.config)
    shape = family.shape_from_config(checkpoint.config, checkpoint.path, max_length)
    name = name or default_name(checkpoint)
    require_build_extra()
    tokenizer = load_tokenizer(checkpoint.path)
    check_vocab(tokenizer, shape.vocab_size)
    model, weights = family.load_reference(checkpoint.path, shape)
    steps.update()

    steps.set_postfix_str("fused graph")
    dtype = graph_dtype(precision, device)
    graph = family(shape, weights, dtype).make_model()
    del weights
    embedding = None
    if precision in ("int8", "int4"):
        steps.set_postfix_str(f"quantize {precision}")
        graph, embedding = quantize_weights(graph, precision, device)
    kv_quantization = None
    if kv_dtype == "int8":
        steps.set_postfix_str("calibrate int8 KV cache")
        k_scales, v_scales, tokens = calibrate_kv_scales(
            model,
            lambda text: list(tokenizer(text)["input_ids"]),
            shape.max_length,
            shape.rotary_dim,
            interleaved=shape.rotary_interleaved,
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
        if embedding is not None:
            manifest["graph"]["embedding"] = embedding
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


def require_build_extra() -> None:
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as exc:
        raise BuildError(
            "model build needs the build extra: pip install 'acepilot[build]'"
        ) from exc


def run_parity(
    precision: str,
    device: str,
    model: Any,
    tokenizer: Any,
    path: Path,
    shape: ModelShape,
    kv_dtype: str,
) -> ParityReport:
    stepper = GraphStepper(path, shape, kv_dtype, device)

    def encode(text: str) -> list[int]:
        return list(tokenizer(text)["input_ids"])

    gate = parity_precision(precision, kv_dtype)
    report = check_parity(gate, model, stepper, encode, shape.max_length)
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
    shape: ModelShape,
    precision: str,
    device: str,
    kv_dtype: str,
    tokenizer: Any,
    report: ParityReport | None,
) -> dict[str, Any]:
    fim, repo = fim_from_vocab(tokenizer.get_vocab())
    architectures = checkpoint.config.get("architectures")
    return {
        "acepilot_version": __version__,
        "source": checkpoint.source,
        "family": shape.family,
        "architecture": (
            architectures[0] if isinstance(architectures, list) and architectures else None
        ),
        "config": shape.manifest_config(),
        "precision": precision,
        "device": device,
        "graph": {
            "file": "model.onnx",
            "num_layers": shape.num_layers,
            "num_kv_heads": shape.num_kv_heads,
            "head_dim": shape.head_dim,
            "max_length": shape.max_length,
            "kv_dtype": kv_dtype,
            "logits": "last",
        },
        "tokenizer": {
            "file": "tokenizer.json",
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            # Read from the tokenizer's special tokens (build/tokenizer.py); None: no FIM.
            "fim": fim,
            "repo": repo,
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
