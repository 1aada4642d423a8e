"""llama.cpp side by side (not a test): the same random-weight checkpoints, same threads.

What a user who runs code completion on a CPU picks today is llama.cpp
(llama.vscode, llama.vim, Tabby's local backend). This script builds it from
PyPI's llama-cpp-python sdist (which vendors llama.cpp's sources, its
`convert_hf_to_gguf.py`, `llama-bench`, `llama-server`, `llama-quantize`),
makes random-weight checkpoints with the real Qwen2.5-Coder-0.5B/1.5B and
DeepSeek-Coder-1.3B configs (tests/data/configs; speed does not depend on
weight values), converts them to GGUF (Q8_0, Q4_0, Q4_K_M) and builds ours
(int8, int4) from the same checkpoints, then prints one table of ratios:

- prefill of 512 and 1,536 tokens (ms), decode (ms/token, 64 tokens);
- an incremental request on a warm cache: llama-server with `cache_prompt` and
  `--cache-reuse 256` against our per-document KV reuse (the same ~1,000-token
  document, then the document with a few characters typed near its end);
- peak RSS of the process, file size.

Ratios are llama.cpp / ours (> 1.0: ours is faster or smaller). Everything is
cached under `$ACEPILOT_BENCH_CACHE` (~/.cache/acepilot-bench); the first run
builds llama.cpp's three tools (at `nice -n 15`; ~11 minutes for the whole tree on 2 free cores).

    .venv/bin/python bench/peers.py --setup-only          # build llama.cpp, nothing else
    .venv/bin/python bench/peers.py --models qwen2.5-coder-0.5b --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "tests" / "data" / "configs"
LLAMA_CPP_PYTHON = "0.3.36"
DEFAULT_CACHE = Path(os.environ.get("ACEPILOT_BENCH_CACHE", Path.home() / ".cache/acepilot-bench"))
MODELS = ("qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b", "deepseek-coder-1.3b-base")
GGUF_TYPES = {"Q8_0": "int8", "Q4_0": "int4", "Q4_K_M": "int4"}
TARGETS = ("llama-bench", "llama-server", "llama-quantize")
PREFILLS = (512, 1536)
DECODE_TOKENS = 64
# The pre-tokenizer name the converter should assume for our home-made byte-level BPE
# (its hash check only knows published tokenizers).
PRE_TOKENIZER = {"qwen2": "qwen2", "llama": "gpt-2"}
FIM_TOKENS = {
    "qwen2": [
        "<|fim_prefix|>",
        "<|fim_middle|>",
        "<|fim_suffix|>",
        "<|fim_pad|>",
        "<|repo_name|>",
        "<|file_sep|>",
    ],
    "llama": ["<｜fim▁hole｜>", "<｜fim▁begin｜>", "<｜fim▁end｜>"],
}


# ---- setup: llama.cpp from the sdist ---------------------------------------------


def llama_cpp_dir(cache: Path) -> Path:
    return cache / "llama-cpp" / f"llama_cpp_python-{LLAMA_CPP_PYTHON}" / "vendor" / "llama.cpp"


# How llama.cpp is configured. Not GGML_NATIVE: on these machines the CPU advertises AMX
# (amx_tile, amx_int8) but the VM does not grant a process the AMX tile state, and a
# native build puts AMX kernels on the Q8_0/Q4_0 path: measured 2026-12-01, llama-bench
# on a Q8_0 model died with "invalid opcode" at `ldtilecfg` in
# tinygemm_kernel_amx<block_q8_0> (objdump of libggml-cpu.so at the faulting address),
# while F16 ran. So the instruction sets are named: everything up to AVX-512 VNNI/BF16
# (what onnxruntime's MLAS dispatches to on this CPU), AMX off. One CPU variant: the
# all-variants build compiles ggml-cpu eight times.
CMAKE_FLAGS = [
    "-DLLAMA_CURL=OFF",
    "-DCMAKE_BUILD_TYPE=Release",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DGGML_NATIVE=OFF",
    "-DGGML_AVX=ON",
    "-DGGML_AVX2=ON",
    "-DGGML_FMA=ON",
    "-DGGML_F16C=ON",
    "-DGGML_BMI2=ON",
    "-DGGML_AVX512=ON",
    "-DGGML_AVX512_VBMI=ON",
    "-DGGML_AVX512_VNNI=ON",
    "-DGGML_AVX512_BF16=ON",
    "-DGGML_AMX_TILE=OFF",
    "-DGGML_AMX_INT8=OFF",
    "-DGGML_AMX_BF16=OFF",
]
BUILD_DIR = "build-avx512"


def ensure_llama_cpp(cache: Path, jobs: int = 2) -> Path:
    """llama.cpp's binaries, built once from the llama-cpp-python sdist; returns bin/."""
    source = llama_cpp_dir(cache)
    bin_dir = source / BUILD_DIR / "bin"
    if all((bin_dir / target).exists() for target in TARGETS):
        return bin_dir
    work = cache / "llama-cpp"
    work.mkdir(parents=True, exist_ok=True)
    archive = work / f"llama_cpp_python-{LLAMA_CPP_PYTHON}.tar.gz"
    if not archive.exists():
        run(
            # `--no-binary :all:` would also build pip's build dependencies (cmake) from source.
            [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary"]
            + ["llama-cpp-python", f"llama-cpp-python=={LLAMA_CPP_PYTHON}", "-d", str(work)]
        )
    if not source.exists():
        with tarfile.open(archive) as tar:
            tar.extractall(work, filter="data")
    nice = ["nice", "-n", "15"]
    build = source / BUILD_DIR
    run(nice + ["cmake", "-S", str(source), "-B", str(build), *CMAKE_FLAGS])
    run(nice + ["cmake", "--build", str(build), f"-j{jobs}", "--target", *TARGETS])
    return bin_dir


def run(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    print("$", " ".join(command), file=sys.stderr, flush=True)
    return subprocess.run(command, check=True, text=True, **kwargs)


# ---- checkpoints, GGUF files, our artifacts ------------------------------------------


def ensure_checkpoint(cache: Path, name: str) -> Path:
    """Random weights with the real config `name`; a 4k byte-level BPE plus the FIM tokens."""
    directory = cache / f"{name}-random"
    if (directory / "config.json").exists():
        return directory
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from acepilot.training.tiny.sample import code_sample_files, read_texts
    from acepilot.training.tokenizer import train_tokenizer

    config = json.loads((CONFIGS / f"{name}.json").read_text())
    tmp = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    train_tokenizer(read_texts(code_sample_files().train[:200]), 4096, tmp)
    tokenizer = AutoTokenizer.from_pretrained(str(tmp))
    tokenizer.add_special_tokens({"additional_special_tokens": FIM_TOKENS[config["model_type"]]})
    tokenizer.save_pretrained(str(tmp))
    settings = {k: v for k, v in config.items() if k != "model_type"}
    settings.update(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(
        AutoConfig.for_model(config["model_type"], **settings), dtype=torch.float32
    )
    model.save_pretrained(str(tmp), safe_serialization=True)
    tmp.rename(directory)
    return directory


CONVERT_WRAPPER = """
import sys
sys.path.insert(0, {source!r})
sys.path.insert(0, {gguf_py!r})
import convert_hf_to_gguf as convert
import conversion.base
# A home-made tokenizer is not in the converter's list of known pre-tokenizers.
conversion.base.TextModel.get_vocab_base_pre = lambda self, tokenizer: {pre!r}
sys.argv = ["convert_hf_to_gguf.py", {checkpoint!r}, "--outfile", {out!r}, "--outtype", "f16"]
convert.main()
"""


def ensure_gguf(cache: Path, bin_dir: Path, checkpoint: Path, name: str, kind: str) -> Path:
    out = cache / "gguf" / f"{name}-{kind}.gguf"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    f16 = cache / "gguf" / f"{name}-f16.gguf"
    if not f16.exists():
        source = llama_cpp_dir(cache)
        model_type = json.loads((checkpoint / "config.json").read_text())["model_type"]
        script = CONVERT_WRAPPER.format(
            source=str(source),
            gguf_py=str(source / "gguf-py"),
            pre=PRE_TOKENIZER[model_type],
            checkpoint=str(checkpoint),
            out=str(f16),
        )
        run([sys.executable, "-c", script])
    run([str(bin_dir / "llama-quantize"), str(f16), str(out), kind], capture_output=True)
    return out


def ensure_ours(cache: Path, checkpoint: Path, name: str, precision: str) -> Path:
    from acepilot.server.build.pipeline import build_model
    from acepilot.server.registry import Registry

    registry = Registry(cache / "registry")
    entry_name = f"peers-{name.replace('.', '-')}-{precision}"
    if registry.production(entry_name) is None:
        build_model(
            str(checkpoint),
            precision=precision,
            registry=registry,
            name=entry_name,
            parity="skip",  # random weights: speed only
            progress=False,
        )
    return registry.resolve(entry_name).path


# ---- measurements (each in a fresh process) -------------------------------------------


def document(tokens: int, encode: Any) -> str:
    """Real code (the standard library) cut to about `tokens` tokens."""
    from acepilot.training.tiny.sample import held_out_text

    text = held_out_text(200_000)
    ids = encode(text)[:tokens]
    return str(text[: len(text) * len(ids) // max(1, len(encode(text)))])


def ours_worker(entry_path: Path, threads: int) -> dict[str, Any]:
    import numpy as np

    from acepilot.server.engine import Engine, GenerationParams
    from acepilot.server.registry import ModelEntry

    entry = ModelEntry.load(entry_path)
    engine = Engine.load(entry, threads=threads, verify=False)
    vocab = engine.tokenizer_vocab
    rng = np.random.default_rng(0)
    results: dict[str, Any] = {}
    one = GenerationParams(max_new_tokens=1, ignore_eos=True)
    for tokens in PREFILLS:
        ids = rng.integers(5, vocab, tokens).tolist()
        engine.generate(ids[:16], one)  # warm
        start = time.perf_counter()
        engine.generate(ids, one)
        results[f"prefill_{tokens}_ms"] = (time.perf_counter() - start) * 1000
    ids = rng.integers(5, vocab, 128).tolist()
    decoded = engine.generate(
        ids, GenerationParams(max_new_tokens=DECODE_TOKENS + 1, ignore_eos=True)
    )
    results["decode_ms_per_token"] = decoded.decode_ms / DECODE_TOKENS
    text = document(1000, engine.encode)
    params = GenerationParams(max_new_tokens=16, ignore_eos=True)
    engine.generate(text, params, session="doc")
    start = time.perf_counter()
    engine.generate(text + "    result = ", params, session="doc")
    results["incremental_ms"] = (time.perf_counter() - start) * 1000
    results["peak_rss_mb"] = peak_rss_mb(os.getpid())
    results["file_mb"] = sum((entry_path / name).stat().st_size for name in entry.files) / (1 << 20)
    return results


def peak_rss_mb(pid: int) -> float:
    """The process's RSS high-water mark (VmHWM). Not ru_maxrss: Linux carries that across
    fork and exec, so a worker started by a process that built a model reports the builder's."""
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM")) / 1024


def llama_bench(bin_dir: Path, gguf: Path, threads: int) -> dict[str, Any]:
    prompts = ",".join(str(p) for p in PREFILLS)
    out = run(
        [str(bin_dir / "llama-bench"), "-m", str(gguf), "-p", prompts, "-n", str(DECODE_TOKENS)]
        + ["-t", str(threads), "-r", "1", "-o", "json"],
        capture_output=True,
    ).stdout
    results: dict[str, Any] = {}
    for row in json.loads(out):
        if row.get("n_gen", 0) == 0:
            results[f"prefill_{row['n_prompt']}_ms"] = row["n_prompt"] / row["avg_ts"] * 1000
        else:
            results["decode_ms_per_token"] = 1000 / row["avg_ts"]
    results["file_mb"] = gguf.stat().st_size / (1 << 20)
    return results


def remote_backend_check(base_url: str, scratch: Path) -> str:
    """Acepilot's language-server pipeline with the remote backend pointed at llama-server's
    OpenAI-compatible /v1 (what a team already running llama.cpp would configure): the
    request must come back from the server, not end in an error. Random weights: the text
    itself is noise (often empty), the protocol is what is checked."""
    from acepilot.server.lsp.headless import complete_file

    source = scratch / "remote-check.py"
    source.write_text("def add(a, b):\n    return a + b\n\n\ndef mul(a, b):\n    return \n")
    settings = {
        "backend": "remote",
        "remoteUrl": base_url,
        "remoteModel": "gguf",
        "maxNewTokens": 8,
    }
    done = complete_file(path=source, text=source.read_text(), line=5, column=11, settings=settings)
    result = done.result
    if result is None:
        return "FAILED: no generation came back"
    return (
        f"ok: {result.prompt_tokens} prompt tokens, finish_reason {result.finish_reason}, "
        f"{result.decode_ms:.0f} ms, text {done.text!r}"
    )


def llama_server_incremental(bin_dir: Path, gguf: Path, threads: int, port: int) -> dict[str, Any]:
    """The same two requests as ours_worker's, through llama-server's /completion."""
    from transformers import AutoTokenizer

    server = subprocess.Popen(
        [str(bin_dir / "llama-server"), "-m", str(gguf), "-t", str(threads), "-c", "4096"]
        + ["--cache-reuse", "256", "--port", str(port), "--host", "127.0.0.1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(600):
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                time.sleep(0.5)
        checkpoint = gguf.parent.parent / (gguf.name.rsplit("-", 1)[0] + "-random")
        tokenizer = AutoTokenizer.from_pretrained(str(checkpoint))
        text = document(1000, lambda t: tokenizer(t)["input_ids"])

        def complete(prompt: str) -> float:
            body = json.dumps(
                {"prompt": prompt, "n_predict": 16, "cache_prompt": True, "ignore_eos": True}
            ).encode()
            request = urllib.request.Request(
                f"{url}/completion", body, {"Content-Type": "application/json"}
            )
            start = time.perf_counter()
            with urllib.request.urlopen(request, timeout=600) as response:
                response.read()
            return (time.perf_counter() - start) * 1000

        complete(text)
        incremental = complete(text + "    result = ")
        return {
            "incremental_ms": incremental,
            "peak_rss_mb": peak_rss_mb(server.pid),
            "remote_backend": remote_backend_check(f"{url}/v1", gguf.parent),
        }
    finally:
        server.terminate()
        server.wait(30)


def graph_summary(entry_path: Path) -> str:
    """Which builder made an artifact: its build date, the embedding's op and the op counts."""
    manifest = json.loads((entry_path / "manifest.json").read_text())
    graph = manifest["graph"]
    embedding = graph.get("embedding", {}).get("op", "Gather (fp32)")
    ops = ", ".join(f"{op} {count}" for op, count in sorted(graph["op_counts"].items()))
    return f"built {manifest['created']}, embedding {embedding}; ops: {ops}"


def in_subprocess(function: str, *args: str) -> dict[str, Any]:
    """Run `function` of this module in a fresh process (clean RSS, no shared caches)."""
    out = run([sys.executable, __file__, "--worker", function, *args], capture_output=True).stdout
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


# ---- the table ---------------------------------------------------------------------------

ROWS = (
    ("prefill_512_ms", "prefill 512 tokens (ms)"),
    ("prefill_1536_ms", "prefill 1,536 tokens (ms)"),
    ("decode_ms_per_token", "decode (ms/token)"),
    ("incremental_ms", "incremental request, warm cache (ms)"),
    ("peak_rss_mb", "peak RSS (MB)"),
    ("file_mb", "file size (MB)"),
)


def table(name: str, results: dict[str, dict[str, Any]], threads: int) -> str:
    lines = [
        f"### {name} shapes (random weights), {threads} threads; ratio = llama.cpp / ours",
        "",
        "| | " + " | ".join(f"{g} / ours {GGUF_TYPES[g]}" for g in GGUF_TYPES) + " |",
        "|---|" + "---|" * len(GGUF_TYPES),
    ]
    for key, label in ROWS:
        cells = []
        for gguf_type, ours in GGUF_TYPES.items():
            theirs, mine = results[gguf_type].get(key), results[ours].get(key)
            if theirs is None or mine is None:
                cells.append("—")
            else:
                cells.append(f"{theirs:,.1f} / {mine:,.1f} = **{theirs / mine:.2f}**")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--port", type=int, default=18080)
    parser.add_argument("--setup-only", action="store_true", help="build llama.cpp and stop")
    parser.add_argument(
        "--ours-only", action="store_true", help="measure only our builds (no llama.cpp needed)"
    )
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        function, *rest = args.worker
        if function == "ours":
            print(json.dumps(ours_worker(Path(rest[0]), int(rest[1]))))
        return 0
    bin_dir = None if args.ours_only else ensure_llama_cpp(args.cache)
    if args.setup_only:
        print(bin_dir)
        return 0
    for name in args.models:
        checkpoint = ensure_checkpoint(args.cache, name)
        results: dict[str, dict[str, Any]] = {}
        # llama.cpp first: its side needs nothing of ours, so our builds (the slow part of
        # a first run) use the builder as it is when they start.
        for gguf_type in GGUF_TYPES:
            if bin_dir is None:
                results[gguf_type] = {}
                continue
            gguf = ensure_gguf(args.cache, bin_dir, checkpoint, name, gguf_type)
            print(f"[{name}] llama.cpp {gguf_type} ...", file=sys.stderr, flush=True)
            results[gguf_type] = llama_bench(bin_dir, gguf, args.threads)
            results[gguf_type].update(
                llama_server_incremental(bin_dir, gguf, args.threads, args.port)
            )
        graphs = []
        for precision in sorted(set(GGUF_TYPES.values())):
            entry = ensure_ours(args.cache, checkpoint, name, precision)
            print(f"[{name}] ours {precision} ...", file=sys.stderr, flush=True)
            results[precision] = in_subprocess("ours", str(entry), str(args.threads))
            graphs.append(f"ours {precision}: {graph_summary(entry)}")
        print(table(name, results, args.threads))
        print("\n" + "\n".join(graphs))
        for gguf_type in GGUF_TYPES:
            if "remote_backend" in results[gguf_type]:
                check = results[gguf_type]["remote_backend"]
                print(f"\nacepilot's remote backend against llama-server ({gguf_type}): {check}")
        print()
        print(json.dumps(results, indent=1), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
