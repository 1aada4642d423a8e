"""Engine benchmark (not a test): PyTorch eager vs optimum-onnx vs Acepilot's fused graphs.

Random weights with real CodeGen shapes (speed does not depend on weight values);
every variant runs in its own process, one after the other, on this machine's CPU.
Prints one table with ratios to the PyTorch eager baseline and to the physical
floors measured in the same run (bench/floors.py).

    .venv/bin/python bench/engine.py                 # 350M shapes
    .venv/bin/python bench/engine.py --shapes 350M 2B --variants torch int4
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.floors import copy_bandwidth, matmul_flops

SHAPES: dict[str, dict[str, int]] = {
    "350M": {"n_embd": 1024, "n_layer": 20, "n_head": 16, "rotary_dim": 32},
    "2B": {"n_embd": 2560, "n_layer": 32, "n_head": 32, "rotary_dim": 64},
    "6B": {"n_embd": 4096, "n_layer": 33, "n_head": 16, "rotary_dim": 64},
    "16B": {"n_embd": 6144, "n_layer": 34, "n_head": 24, "rotary_dim": 64},
}
VOCAB, POSITIONS = 51200, 2048
VARIANTS = ("torch", "optimum", "fp32", "int8", "int4")
OURS = ("fp32", "int8", "int4")
DEFAULT_CACHE = Path(os.environ.get("ACEPILOT_BENCH_CACHE", Path.home() / ".cache/acepilot-bench"))


def ensure_checkpoint(cache: Path, shape: str) -> Path:
    """A random-weight CodeGen with real shapes, plus a small BPE tokenizer (ids < vocab)."""
    directory = cache / f"codegen-{shape}-random"
    if (directory / "config.json").exists():
        return directory
    import torch
    from transformers import CodeGenConfig, CodeGenForCausalLM

    from acepilot.training.tiny.sample import code_sample_files, read_texts
    from acepilot.training.tokenizer import train_tokenizer

    torch.manual_seed(0)
    config = CodeGenConfig(
        vocab_size=VOCAB, n_positions=POSITIONS, n_ctx=POSITIONS, **SHAPES[shape]
    )
    tmp = directory.with_name(directory.name + ".tmp")
    CodeGenForCausalLM(config).save_pretrained(tmp)
    train_files = code_sample_files().train
    train_tokenizer(read_texts(train_files[:200]), 4096, tmp)
    tmp.rename(directory)
    return directory


def ensure_artifact(cache: Path, checkpoint: Path, shape: str, precision: str) -> Path:
    from acepilot.server.build.pipeline import build_model
    from acepilot.server.registry import Registry

    registry = Registry(cache / "registry")
    name = f"bench-{shape}-{precision}"
    if registry.production(name) is None or not current_recipe(registry.resolve(name), precision):
        # Random weights have flat logits: record parity, never gate on it here.
        entry = build_model(
            str(checkpoint), precision=precision, registry=registry, name=name, parity="skip"
        )
        registry.set_production(name, entry.version)
    return registry.resolve(name).path


def current_recipe(entry: Any, precision: str) -> bool:
    """Whether a cached artifact was built the way `model build` builds today (KV cache
    type, weight block size): a benchmark must measure what a user would get."""
    from acepilot.server.build.pipeline import kv_cache_dtype
    from acepilot.server.build.quantize import quantization_settings

    graph = entry.manifest["graph"]
    if graph["kv_dtype"] != kv_cache_dtype(precision, "cpu"):
        return False
    if precision in ("int8", "int4"):
        return bool(graph.get("weights") == quantization_settings(precision, "cpu"))
    return True


# ---- workers (each in a fresh process) --------------------------------------


def timed(fn: Any, repeats: int) -> float:
    """Median wall time in ms."""
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


def hf_worker(variant: str, checkpoint: Path, args: argparse.Namespace) -> dict[str, Any]:
    import torch

    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    if variant == "torch":
        from transformers import CodeGenForCausalLM

        model = CodeGenForCausalLM.from_pretrained(checkpoint, dtype=torch.float32).eval()
    else:
        from optimum.onnxruntime import ORTModelForCausalLM

        export_dir = args.cache / f"optimum-{checkpoint.name}"
        if not (export_dir / "model.onnx").exists():
            ORTModelForCausalLM.from_pretrained(checkpoint, export=True).save_pretrained(export_dir)
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = args.threads
        model = ORTModelForCausalLM.from_pretrained(export_dir, session_options=options)
    load_s = time.perf_counter() - start
    ids = prompt_ids(max(args.prompt_lengths) + 8)

    def generate(prompt: list[int], new: int) -> None:
        with torch.no_grad():
            model.generate(
                torch.tensor([prompt]),
                attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                max_new_tokens=new,
                min_new_tokens=new,
                do_sample=False,
                pad_token_id=0,
            )

    return measure(generate, ids, args, load_s)


def ours_worker(variant: str, artifact: Path, args: argparse.Namespace) -> dict[str, Any]:
    from acepilot.server.engine import Engine, GenerationParams
    from acepilot.server.registry import Registry

    start = time.perf_counter()
    engine = Engine.load(
        Registry(artifact.parent.parent).resolve(str(artifact)), threads=args.threads
    )
    load_s = time.perf_counter() - start
    ids = prompt_ids(max(args.prompt_lengths) + 8)
    counter = iter(range(10**9))

    def generate(prompt: list[int], new: int, session: str | None = None) -> None:
        params = GenerationParams(max_new_tokens=new, temperature=0.0, ignore_eos=True)
        engine.generate(prompt, params, session=session or f"cold-{next(counter)}")

    result = measure(generate, ids, args, load_s)
    # The user typed 8 more tokens: the warm session prefills only those.
    base = ids[:512]

    def warm_request() -> None:
        generate(base, 16, session="warm")
        start = time.perf_counter()
        generate(base + ids[512:520], 16, session="warm")
        warm_samples.append((time.perf_counter() - start) * 1000)

    warm_samples: list[float] = []
    for _ in range(args.repeats):
        warm_request()
    result["incremental_ms"] = statistics.median(warm_samples)
    result["artifact_mb"] = sum(f.stat().st_size for f in artifact.iterdir()) / 1e6
    result["weight_bytes_per_token"] = decode_weight_bytes(artifact)
    return result


def measure(
    generate: Any, ids: list[int], args: argparse.Namespace, load_s: float
) -> dict[str, Any]:
    generate(ids[:16], 2)  # warm up kernels and allocators
    result: dict[str, Any] = {"load_s": load_s}
    for length in args.prompt_lengths:
        result[f"prefill_{length}_ms"] = timed(lambda n=length: generate(ids[:n], 1), args.repeats)
    one = result.get("prefill_512_ms") or timed(lambda: generate(ids[:512], 1), args.repeats)
    many = timed(lambda: generate(ids[:512], args.decode_tokens + 1), args.repeats)
    result["decode_ms_per_token"] = (many - one) / args.decode_tokens
    # What a system without KV reuse pays for the same keystroke: a cold 520-token request.
    result["cold_incremental_ms"] = timed(lambda: generate(ids[:520], 16), args.repeats)
    result["peak_rss_mb"] = peak_rss_mb()
    return result


def peak_rss_mb() -> float:
    """This process's own peak RSS (VmHWM): ru_maxrss would include the parent's peak
    when the parent built the artifacts before starting this worker."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def prompt_ids(n: int) -> list[int]:
    return np.random.default_rng(0).integers(10, 4000, n).tolist()


def decode_weight_bytes(artifact: Path) -> int:
    """Bytes of weights one decode step reads: everything but the embedding table."""
    import onnx

    model = onnx.load(str(artifact / "model.onnx"), load_external_data=False)
    total = 0
    for tensor in model.graph.initializer:
        if tensor.name.startswith("/model/embed_tokens") or tensor.name in (
            "cos_cache",
            "sin_cache",
        ):
            continue
        total += len(tensor.raw_data) if tensor.raw_data else 0
        for entry in tensor.external_data:
            if entry.key == "length":
                total += int(entry.value)
    return total


# ---- driver -------------------------------------------------------------------


def run_worker(variant: str, path: Path, args: argparse.Namespace) -> dict[str, Any]:
    command = [sys.executable, __file__, "--worker", variant, "--path", str(path)]
    command += ["--threads", str(args.threads), "--repeats", str(args.repeats)]
    command += ["--decode-tokens", str(args.decode_tokens), "--cache", str(args.cache)]
    command += ["--prompt-lengths", *map(str, args.prompt_lengths)]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


def params_without_embedding(shape: str) -> int:
    s = SHAPES[shape]
    e, layers = s["n_embd"], s["n_layer"]
    per_layer = 3 * e * e + e * e + 2 * 4 * e * e  # qkv, out, fc_in, fc_out
    return layers * per_layer + e * VOCAB  # + lm_head


def prefill_flops(shape: str, tokens: int) -> float:
    s = SHAPES[shape]
    attention = 2 * s["n_layer"] * tokens * tokens * s["n_embd"]  # QK^T and AV, causal half of 2x
    return 2 * params_without_embedding(shape) * tokens + attention


def report(
    shape: str,
    rows: dict[str, dict[str, Any]],
    bandwidth: float,
    flops: float,
    args: argparse.Namespace,
) -> str:
    base = rows.get("torch")
    fp32_bytes = 4 * params_without_embedding(shape)
    lines = [
        f"### CodeGen-{shape} shapes (random weights), {args.threads} threads",
        "",
        f"Floors: copy bandwidth {bandwidth / 1e9:.1f} GB/s (read+write), fp32 matmul {flops / 1e9:.0f} GFLOP/s.",
        "",
        "| variant | "
        + " | ".join(f"prefill {n} ms" for n in args.prompt_lengths)
        + " | decode ms/token | incremental ms (8 in, 16 out) | peak RSS MB | artifact MB"
        + " | prefill vs torch | decode vs torch | decode / floor | prefill / floor |",
        "|---" * (len(args.prompt_lengths) + 9) + "|",
    ]
    for variant, row in rows.items():
        weight_bytes = row.get("weight_bytes_per_token", fp32_bytes)
        decode_floor_ms = weight_bytes / bandwidth * 1000  # bytes moved per second by a copy
        prefill_floor_ms = prefill_flops(shape, 512) / flops * 1000
        incremental = row.get("incremental_ms", row["cold_incremental_ms"])
        cells = [f"{row[f'prefill_{n}_ms']:.0f}" for n in args.prompt_lengths]
        cells += [
            f"{row['decode_ms_per_token']:.1f}",
            f"{incremental:.0f}",
            f"{row['peak_rss_mb']:.0f}",
        ]
        cells.append(f"{row['artifact_mb']:.0f}" if "artifact_mb" in row else "-")
        if base:
            cells.append(f"{base['prefill_512_ms'] / row['prefill_512_ms']:.2f}x")
            cells.append(f"{base['decode_ms_per_token'] / row['decode_ms_per_token']:.2f}x")
        else:
            cells += ["-", "-"]
        cells.append(f"{row['decode_ms_per_token'] / decode_floor_ms:.2f}")
        cells.append(f"{row['prefill_512_ms'] / prefill_floor_ms:.2f}")
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(
        "incremental: ours = the previous 512-token prompt + 8 new tokens on a warm session; "
        "torch/optimum = the same 520-token request cold (they keep no cache across requests)."
    )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shapes", nargs="+", default=["350M"], choices=sorted(SHAPES))
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--prompt-lengths", nargs="+", type=int, default=[512, 1536])
    parser.add_argument("--decode-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--markdown", type=Path, help="append the table to this file")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--path", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if 512 not in args.prompt_lengths:
        parser.error("--prompt-lengths must include 512 (the reference point of the table)")

    if args.worker:
        worker = hf_worker if args.worker in ("torch", "optimum") else ours_worker
        print(json.dumps(worker(args.worker, args.path, args)))
        return 0

    args.cache.mkdir(parents=True, exist_ok=True)
    bandwidth, flops = copy_bandwidth(), matmul_flops()
    for shape in args.shapes:
        checkpoint = ensure_checkpoint(args.cache, shape)
        rows: dict[str, dict[str, Any]] = {}
        for variant in args.variants:
            path = (
                ensure_artifact(args.cache, checkpoint, shape, variant)
                if variant in OURS
                else checkpoint
            )
            print(f"[{shape}] {variant} ...", file=sys.stderr, flush=True)
            rows[variant] = run_worker(variant, path, args)
        table = report(shape, rows, bandwidth, flops, args)
        print(table)
        if args.markdown:
            with args.markdown.open("a") as handle:
                handle.write(table + "\n\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
