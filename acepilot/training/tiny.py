"""Tiny CodeGen models made here, because no pretrained weights can be downloaded.

Why one module over 600 lines (a split is due): it is the test suite's model
factory, and its source hash keys the fixture cache, so every change rebuilds
every test model; the planned split moves sample selection and the tokenizer onto
bootstrap's stages (issue 14's note).

The test suite and `acepilot demo` need CodeGen checkpoints that look exactly
like the real ones on disk (config.json, safetensors weights, a fast
tokenizer) but are small enough to make on a 2-core CPU in minutes:

- `train_tokenizer`: a byte-level BPE (GPT-2/CodeGen style) trained on a code
  sample, with CodeGen's single special token `<|endoftext|>` (BOS = EOS).
- `make_random_codegen`: random weights *and* random biases and LayerNorm
  affines. transformers initialises biases to zero and LayerNorms to the
  identity, which would hide a converter that drops or swaps them.
- `train_tiny_codegen`: a small CodeGen actually trained on the Python standard
  library, through the one training loop (acepilot/training/finetune, in a
  child process). Random weights give nearly flat logits, on which quantization
  error and greedy agreement mean nothing; a trained model has peaked
  logits, so the parity gate and the demo are honest.

The code sample is this interpreter's own standard library: present on every
machine, permissively licensed, real code. A deterministic part of it (chosen
by a hash of each file's path) is never trained on: `held_out_text` serves it
for perplexity checks.

torch, transformers and tokenizers are imported inside the functions, so that
importing this module (e.g. by the `acepilot` command line) stays cheap.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformers import CodeGenForCausalLM, PreTrainedTokenizerFast

EOS_TOKEN = "<|endoftext|>"
TRAINING_RECORD = "training.json"
# Bumped by hand when the training recipe changes in a way the arguments do not show.
RECIPE_VERSION = 2  # 2: trained by training/finetune (the one loop), not a loop of its own

# Standard-library folders that are not ordinary code: tests (huge, repetitive),
# the IDLE/Tk GUIs and demos, generated tables (encodings, pydoc_data), vendored
# wheels, installed third-party packages and build configuration.
EXCLUDED_DIRS = frozenset(
    {
        "test",
        "tests",
        "idlelib",
        "tkinter",
        "turtledemo",
        "lib2to3",
        "ensurepip",
        "encodings",
        "pydoc_data",
        "__phello__",
        "__pycache__",
        "site-packages",
        "dist-packages",
    }
)


# ---------------------------------------------------------------------------
# The code sample


@dataclass(frozen=True)
class CodeSample:
    """Standard-library files split into training files and held-out files.

    `held_out` files are never used to train a tokenizer or a model, so
    perplexity measured on them is honest. Both lists are in a fixed order.
    """

    root: Path
    train: tuple[Path, ...]
    held_out: tuple[Path, ...]

    def fingerprint(self) -> str:
        """A hash of the files' names and contents: training caches key on it."""
        digest = hashlib.sha256()
        for label, files in (("train", self.train), ("held_out", self.held_out)):
            digest.update(label.encode() + b"\0")
            for path in files:
                digest.update(path.relative_to(self.root).as_posix().encode() + b"\0")
                digest.update(hashlib.sha256(path.read_bytes()).digest())
        return digest.hexdigest()


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def name_hash(relative: str) -> int:
    """A stable pseudo-random number per file name (Python's hash() is salted)."""
    return int.from_bytes(hashlib.sha256(relative.encode()).digest()[:8], "big")


def read_code(path: Path) -> str | None:
    """The file as text, or None when it is not UTF-8 (a few legacy files)."""
    try:
        return path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def code_sample_files(
    *,
    root: Path | None = None,
    held_out_every: int = 12,
    max_file_bytes: int = 120_000,
    max_train_bytes: int = 4_000_000,
    max_held_out_bytes: int = 400_000,
) -> CodeSample:
    """A deterministic sample of standard-library Python files.

    A file is held out when the hash of its relative path is divisible by
    `held_out_every` (about 1 in `held_out_every`), so the split depends only
    on names and never moves when a budget changes. Files over
    `max_file_bytes` (generated tables, giant modules) and non-UTF-8 files are
    skipped. Within each side files are taken in hash order until the byte
    budget is spent, which spreads a partial budget over the whole library
    instead of the alphabetically first packages.
    """
    if held_out_every < 2:
        raise ValueError(f"held_out_every must be at least 2, got {held_out_every}")
    root = root or stdlib_root()
    candidates: list[tuple[int, str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        # Prune in place: site-packages alone can hold tens of thousands of files.
        dirnames[:] = sorted(
            d for d in dirnames if d not in EXCLUDED_DIRS and not d.startswith("config-")
        )
        for filename in filenames:
            if not filename.endswith(".py") or filename.startswith("test_"):
                continue
            path = Path(dirpath, filename)
            if not path.is_file():
                continue
            size = path.stat().st_size
            if size == 0 or size > max_file_bytes:
                continue
            name = path.relative_to(root).as_posix()
            candidates.append((name_hash(name), name, path))
    candidates.sort()

    def take(selected: list[Path], budget: int, path: Path) -> int:
        size = path.stat().st_size
        if size > budget or read_code(path) is None:
            return budget
        selected.append(path)
        return budget - size

    train: list[Path] = []
    held_out: list[Path] = []
    train_budget, held_out_budget = max_train_bytes, max_held_out_bytes
    for number, _, path in candidates:
        if number % held_out_every == 0:
            held_out_budget = take(held_out, held_out_budget, path)
        else:
            train_budget = take(train, train_budget, path)
    if not train or not held_out:
        raise RuntimeError(f"{root}: too few Python files for a code sample")
    return CodeSample(root, tuple(train), tuple(held_out))


def read_texts(files: Sequence[Path]) -> list[str]:
    texts = []
    for path in files:
        text = read_code(path)
        if text is not None:
            texts.append(text)
    return texts


def held_out_text(max_chars: int = 20_000, sample: CodeSample | None = None) -> str:
    """Code that no tiny tokenizer or model here was trained on, for perplexity checks.

    Whole held-out files in a fixed order, separated by blank lines, cut at
    `max_chars` (at a line end when there is one).
    """
    sample = sample or code_sample_files()
    parts: list[str] = []
    used = 0
    for text in read_texts(sample.held_out):
        parts.append(text.rstrip("\n") + "\n\n\n")
        used += len(parts[-1])
        if used >= max_chars:
            break
    joined = "".join(parts)[:max_chars]
    cut = joined.rfind("\n")
    return joined[: cut + 1] if cut > max_chars // 2 else joined


# ---------------------------------------------------------------------------
# Tokenizer


def train_tokenizer(files: Sequence[Path], vocab_size: int, out_dir: Path) -> Path:
    """Train a byte-level BPE on `files` and save it where transformers finds it.

    Byte-level (like GPT-2 and CodeGen) so that any text, any Unicode,
    round-trips exactly; `<|endoftext|>` is both BOS and EOS, as in CodeGen.
    Writes tokenizer.json (all the server needs) plus the transformers files
    (`AutoTokenizer.from_pretrained(out_dir)` works).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    if vocab_size < 300:
        raise ValueError(f"vocab_size must be at least 300 (256 bytes + merges), got {vocab_size}")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=[EOS_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(read_texts(files), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=EOS_TOKEN,
        eos_token=EOS_TOKEN,
        unk_token=EOS_TOKEN,
        clean_up_tokenization_spaces=False,  # would rewrite " ." etc.: code must round-trip
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(out_dir))
    return out_dir


def load_tokenizer(directory: Path) -> PreTrainedTokenizerFast:
    from transformers import AutoTokenizer

    tokenizer: PreTrainedTokenizerFast = AutoTokenizer.from_pretrained(str(directory))
    return tokenizer


def padded_vocab(tokens: int, multiple: int = 64) -> int:
    """Round the embedding rows up, as CodeGen does (51200 rows for ~50295 tokens)."""
    return -(-tokens // multiple) * multiple


# ---------------------------------------------------------------------------
# Models


def check_shape(n_embd: int, n_head: int, rotary_dim: int, n_positions: int) -> int:
    """Refuse shapes CodeGen or the fused graph cannot take; returns head_dim.

    CodeGen packs qkv_proj in mp_num = 4 groups of heads, so n_head must be a
    multiple of 4. GroupQueryAttention on CPU needs the cos cache
    (rotary_dim / 2) to be a multiple of 8 and at most head_dim / 2.
    CodeGenModel also clamps rotary_dim to n_ctx // n_head.
    """
    if n_head % 4:
        raise ValueError(f"n_head must be a multiple of 4 (CodeGen's mp_num), got {n_head}")
    if n_embd % n_head:
        raise ValueError(f"n_embd {n_embd} is not divisible by n_head {n_head}")
    head_dim = n_embd // n_head
    if rotary_dim % 16 or not 0 < rotary_dim <= head_dim:
        raise ValueError(
            f"rotary_dim must be a positive multiple of 16 and <= head_dim {head_dim}, "
            f"got {rotary_dim}"
        )
    if rotary_dim > n_positions // n_head:
        raise ValueError(f"rotary_dim {rotary_dim} exceeds n_positions // n_head")
    return head_dim


def codegen_config(
    *,
    vocab_size: int,
    n_embd: int,
    n_layer: int,
    n_head: int,
    rotary_dim: int,
    n_positions: int,
    eos_token_id: int,
) -> Any:
    """A CodeGenConfig like the released ones (gelu_new, eps 1e-5, untied lm_head), no dropout."""
    from transformers import CodeGenConfig

    check_shape(n_embd, n_head, rotary_dim, n_positions)
    return CodeGenConfig(
        vocab_size=vocab_size,
        n_positions=n_positions,
        n_ctx=n_positions,
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=n_head,
        rotary_dim=rotary_dim,
        activation_function="gelu_new",
        layer_norm_epsilon=1e-5,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=eos_token_id,
        eos_token_id=eos_token_id,
        tie_word_embeddings=False,
    )


def randomize_(
    model: CodeGenForCausalLM,
    seed: int,
    weight_std: float = 0.05,
    bias_std: float = 0.1,
    norm_std: float = 0.2,
) -> None:
    """Random weights, biases and LayerNorm affines (weight 1 + N(0, norm_std), bias N)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator, dtype=param.dtype)
            if ".ln_" in name or name.startswith(("transformer.ln_f", "ln_")):
                if name.endswith("weight"):
                    param.copy_(1.0 + norm_std * noise)
                else:
                    param.copy_(bias_std * noise)
            elif name.endswith("bias"):
                param.copy_(bias_std * noise)
            else:
                param.copy_(weight_std * noise)


def make_random_codegen(
    out_dir: Path,
    *,
    tokenizer_dir: Path,
    seed: int = 0,
    vocab_size: int | None = None,
    n_embd: int = 128,
    n_layer: int = 2,
    n_head: int = 4,
    rotary_dim: int = 16,
    n_positions: int = 256,
    weight_std: float = 0.05,
    bias_std: float = 0.1,
    norm_std: float = 0.2,
) -> Path:
    """A CodeGen checkpoint with random parameters everywhere, saved like a released one.

    `vocab_size` defaults to the tokenizer's size rounded up to a multiple of
    64: like the real CodeGen (51200 rows, ~50295 tokens) the model has rows
    no token maps to, which servers must cope with.
    """
    import torch
    from transformers import CodeGenForCausalLM

    tokenizer = load_tokenizer(tokenizer_dir)
    tokens = len(tokenizer)
    vocab_size = vocab_size or padded_vocab(tokens)
    if vocab_size < tokens:
        raise ValueError(f"vocab_size {vocab_size} is below the tokenizer's {tokens} tokens")
    eos = tokenizer.eos_token_id
    assert isinstance(eos, int)
    config = codegen_config(
        vocab_size=vocab_size,
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=n_head,
        rotary_dim=rotary_dim,
        n_positions=n_positions,
        eos_token_id=eos,
    )
    torch.manual_seed(seed)
    model = CodeGenForCausalLM(config).eval()
    randomize_(model, seed, weight_std, bias_std, norm_std)
    tokenizer.model_max_length = n_positions
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir), safe_serialization=True)
    tokenizer.save_pretrained(str(out_dir))
    return out_dir


# ---------------------------------------------------------------------------
# Building into a cache: atomically, once, safe across processes


def build_once(target: Path, build: Callable[[Path], object]) -> Path:
    """Make `target` with `build(tmp_dir)` unless it exists; atomic and process-safe.

    `build` fills a fresh temporary directory next to `target`, which is then
    renamed into place: `target` exists only when complete. A file lock
    (`target.lock`) makes parallel test workers or commands wait for one
    another instead of building twice.
    """
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(target):
        if target.is_dir():
            return target
        replace_atomically(target, build)
    return target


def file_lock(target: Path) -> Any:
    from filelock import FileLock

    return FileLock(str(target.parent / f"{target.name}.lock"))


def replace_atomically(target: Path, build: Callable[[Path], object]) -> None:
    """Build into a sibling temp dir and rename it over `target`; the caller holds the lock."""
    for stale in target.parent.glob(f"{target.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)  # left by a killed build (we hold the lock)
    tmp = Path(tempfile.mkdtemp(prefix=f"{target.name}.tmp-", dir=target.parent))
    try:
        build(tmp)
        if target.exists():
            old = target.parent / f"{target.name}.tmp-old"
            target.rename(old)
            shutil.rmtree(old)
        tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# ---------------------------------------------------------------------------
# Training


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
        check_shape(self.n_embd, self.n_head, self.rotary_dim, self.n_positions)
        if self.seq_len > self.n_positions:
            raise ValueError(f"seq_len {self.seq_len} exceeds n_positions {self.n_positions}")
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError("steps and batch_size must be positive")


def module_source_hash() -> str:
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()


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
        "code": module_source_hash(),
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


def token_stream(tokenizer: PreTrainedTokenizerFast, texts: Sequence[str], eos: int) -> list[int]:
    """All texts tokenized and packed into one stream, each followed by EOS."""
    ids: list[int] = []
    for encoding in tokenizer(list(texts), add_special_tokens=False, verbose=False)["input_ids"]:
        ids.extend(encoding)
        ids.append(eos)
    return ids


def eval_windows(stream: Sequence[int], seq_len: int, max_tokens: int) -> list[list[int]]:
    """Consecutive non-overlapping windows covering at most max_tokens predictions."""
    windows = []
    predicted = 0
    for start in range(0, len(stream) - 1, seq_len):
        window = list(stream[start : start + seq_len])
        if len(window) < 2 or predicted >= max_tokens:
            break
        windows.append(window)
        predicted += len(window) - 1
    return windows


def model_loss(model: CodeGenForCausalLM, windows: Sequence[Sequence[int]]) -> float:
    """Mean next-token cross-entropy (nats) over all predicted tokens of the windows."""
    import torch

    total, count = 0.0, 0
    model.eval()
    with torch.no_grad():
        for window in windows:
            ids = torch.tensor([list(window)])
            logits = model(input_ids=ids).logits[0, :-1].float()
            loss = torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="sum")
            total += float(loss)
            count += len(window) - 1
    return total / count


def ngram_baselines(
    train_ids: Sequence[int], windows: Sequence[Sequence[int]], vocab: int
) -> dict[str, float]:
    """Cross-entropy (nats/token) of count-based models on the held-out windows' targets.

    unigram: training counts with add-one smoothing. bigram: training bigram
    counts interpolated with that unigram, the weight chosen *on the
    held-out tokens* from a grid, which flatters the baseline (a model that
    beats it beats any fixed interpolation weight).
    """
    import numpy as np

    train = np.asarray(train_ids, dtype=np.int64)
    unigram = (np.bincount(train, minlength=vocab) + 1.0) / (len(train) + vocab)
    previous = np.concatenate([np.asarray(w[:-1], dtype=np.int64) for w in windows])
    targets = np.concatenate([np.asarray(w[1:], dtype=np.int64) for w in windows])
    codes, counts = np.unique(train[:-1] * vocab + train[1:], return_counts=True)
    pair_counts = dict(zip(codes.tolist(), counts.tolist(), strict=True))
    context_counts = np.bincount(train[:-1], minlength=vocab)
    pairs = np.array(
        [pair_counts.get(code, 0) for code in (previous * vocab + targets).tolist()],
        dtype=np.float64,
    )
    contexts = context_counts[previous].astype(np.float64)
    bigram_ml = np.divide(pairs, contexts, out=np.zeros_like(pairs), where=contexts > 0)
    p_unigram = unigram[targets]
    best = min(
        float(-np.log(weight * bigram_ml + (1 - weight) * p_unigram).mean())
        for weight in np.linspace(0.05, 0.95, 19)
    )
    return {
        "uniform": math.log(vocab),
        "unigram": float(-np.log(p_unigram).mean()),
        "bigram": best,
    }


def cpu_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def pack_rows(stream: Sequence[int], seq_len: int, path: Path) -> int:
    """The stream cut into rows of seq_len (the tail dropped), saved as train.npy."""
    import numpy as np

    rows = len(stream) // seq_len
    data = np.asarray(stream[: rows * seq_len], dtype=np.uint16).reshape(rows, seq_len)
    np.save(path, data)
    return rows


def run_finetune(settings: dict[str, Any], log_path: Path) -> None:
    """acepilot/training/finetune/train.py as a child process, one rank.

    A child, not this process: the loop starts a (gloo) process group, and a
    test session or a caller that holds one must not meet it."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {
        **os.environ,
        "RANK": "0",
        "LOCAL_RANK": "0",
        "WORLD_SIZE": "1",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
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


def _train(
    out_dir: Path, args: TinyTrainingArgs, sample: CodeSample, key: dict[str, Any], progress: bool
) -> None:
    """Tokenizer, packed rows, a seeded init, then the one training loop (training/finetune)."""
    import torch
    from transformers import CodeGenForCausalLM

    started = time.monotonic()
    train_tokenizer(sample.train, args.vocab_size, out_dir)
    tokenizer = load_tokenizer(out_dir)
    eos = tokenizer.eos_token_id
    assert isinstance(eos, int)
    train_ids = token_stream(tokenizer, read_texts(sample.train), eos)
    held_ids = token_stream(tokenizer, read_texts(sample.held_out), eos)
    tokenizer.model_max_length = args.n_positions  # after tokenizing whole files
    tokenizer.save_pretrained(str(out_dir))
    config = codegen_config(
        vocab_size=padded_vocab(len(tokenizer)),
        n_embd=args.n_embd,
        n_layer=args.n_layer,
        n_head=args.n_head,
        rotary_dim=args.rotary_dim,
        n_positions=args.n_positions,
        eos_token_id=eos,
    )
    with tempfile.TemporaryDirectory(dir=out_dir.parent) as scratch:
        work = Path(scratch)
        (work / "data").mkdir()
        pack_rows(train_ids, args.seq_len, work / "data" / "train.npy")
        torch.manual_seed(args.seed)
        CodeGenForCausalLM(config).save_pretrained(str(work / "init"), safe_serialization=True)
        tokenizer.save_pretrained(str(work / "init"))
        tokenizer_seconds = time.monotonic() - started
        train_started = time.monotonic()
        run_finetune(
            {
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
            },
            work / "train.log",
        )
        train_seconds = time.monotonic() - train_started
        log = [json.loads(line) for line in (work / "run" / "log.jsonl").read_text().splitlines()]
        model = CodeGenForCausalLM.from_pretrained(str(work / "run" / "hf")).eval()
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(cpu_threads())
    try:
        windows = eval_windows(held_ids, args.seq_len, args.eval_tokens)
        held_out_loss = model_loss(model, windows)
    finally:
        torch.set_num_threads(previous_threads)
    baselines = ngram_baselines(train_ids, windows, config.vocab_size)
    held_chars = len(tokenizer.decode([t for w in windows for t in w[1:]]))
    predicted = sum(len(w) - 1 for w in windows)
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
        "held_out": {
            "tokens": predicted,
            "loss": held_out_loss,
            "perplexity": math.exp(held_out_loss),
            "bits_per_char": held_out_loss * predicted / held_chars / math.log(2),
            "baselines": baselines,
        },
        "seconds": {
            "tokenizer_and_data": round(tokenizer_seconds, 1),
            "training": round(train_seconds, 1),
            "total": round(time.monotonic() - started, 1),
        },
        "trained_by": "acepilot/training/finetune/train.py (DeepSpeed ZeRO-0, one rank)",
    }
    (out_dir / TRAINING_RECORD).write_text(json.dumps(record, indent=2) + "\n", "utf-8")


def load_model(directory: Path) -> CodeGenForCausalLM:
    from transformers import CodeGenForCausalLM

    model: CodeGenForCausalLM = CodeGenForCausalLM.from_pretrained(str(directory)).eval()
    return model


def token_windows(tokenizer: PreTrainedTokenizerFast, text: str, seq_len: int) -> list[list[int]]:
    """`text` tokenized and cut into windows for `model_loss`."""
    ids = tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
    return eval_windows(ids, seq_len, len(ids))


__all__ = [
    "EOS_TOKEN",
    "CodeSample",
    "TinyTrainingArgs",
    "build_once",
    "code_sample_files",
    "held_out_text",
    "load_model",
    "load_tokenizer",
    "make_random_codegen",
    "model_loss",
    "ngram_baselines",
    "token_windows",
    "train_tiny_codegen",
    "train_tokenizer",
    "training_record",
]
