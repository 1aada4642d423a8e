"""acepilot-tiny: Acepilot's own default model, trained here from code every machine has.

Model hubs are out of reach on many self-hosted networks, yet `make run` must
complete code on a fresh machine. So Acepilot trains its default model with
its own training package, the path users take for their own models:

1. sources    the Python standard library's .py files (PSF-2.0) and, when
              npm/corepack are installed, their JavaScript (only packages
              whose package.json licence is permissive; each recorded). A
              file is held out when the hash of its path says so (1 in
              `held_out_every`): never seen by the tokenizer or the model.
2. tokenizer  byte-level BPE with `tokenizers` (acepilot/training/tiny.py's recipe).
3. data       packed rows (acepilot/training/corpus/pack.py's Packer), the layout
              `acepilot train corpus` writes: train.npy, validation.npy.
4. init       a CodeGen (CodeGenConfig, rotary_dim a multiple of 16) with
              transformers' own initialisation, seeded.
5. train      acepilot/training/finetune/train.py: DeepSpeed (ZeRO-0, fp32 and
              torch's AdamW on CPU; the same loop as a GPU cluster), with its
              checkpoints: a killed run resumes at its last checkpoint and
              ends with the same weights.
6. build      `model build` into a private registry in the work dir: fused
              ONNX graph, int8, parity gate against PyTorch.
7. evaluate   on the held-out files, against two baselines in the same run:
              line-completion exact match / edit similarity through the
              built artifact (acepilot/training/eval/line_completion.py) and
              perplexity, for the model, a token bigram model and "repeat
              the previous line". The run fails unless the model beats both.
8. publish    the evaluated entry is copied into the user's registry and
              made production of `acepilot-tiny`.

Every stage writes into the work dir and leaves a record keyed by the
settings (and the sources' fingerprint); a rerun skips finished stages, so
the command is cached and resumable. Everything is seeded: the same config
gives the same tokenizer and the same weights (the tests check it).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import shutil
import socket
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from acepilot.training import tiny

if TYPE_CHECKING:
    from acepilot.server.registry import ModelEntry, Registry

MODEL_NAME = "acepilot-tiny"
# Bumped by hand when the recipe changes in a way the config does not show.
RECIPE_VERSION = 1
# Bumped when the evaluation changes (only the evaluation re-runs).
EVAL_RECIPE = 2
RECORD = "bootstrap.json"
STAGE_RECORD = "stage.json"
STAGES = ("sources", "tokenizer", "data", "init", "train", "build", "evaluate", "publish")
NODE_MODULE_ROOTS = (Path("/usr/lib/node_modules"), Path("/usr/local/lib/node_modules"))
PERMISSIVE = frozenset(
    {"MIT", "ISC", "BSD-2-Clause", "BSD-3-Clause", "Apache-2.0", "0BSD", "BlueOak-1.0.0", "CC0-1.0"}
)
JS_EXCLUDED_DIRS = frozenset({"test", "tests", "__tests__", "example", "examples", "docs"})
PYTHON_LICENCE = "PSF-2.0"

# Prompts whose completions go into the record (and the docs): generated, never edited.
SHOWCASE_PROMPTS = (
    "import os\n\n\ndef find_python_files(root):\n"
    '    """Return the paths of the Python files under root, sorted."""\n'
    "    paths = []\n    for dirpath, dirnames, filenames in os.walk(root):\n"
    '        for name in filenames:\n            if name.endswith(".py"):\n'
    "                paths.append(",
    "class Stack:\n    def __init__(self):\n        self.items = []\n\n"
    "    def push(self, item):\n        self.items.append(item)\n\n    def pop(self):\n",
    'def read_lines(path):\n    with open(path, encoding="utf-8") as f:\n',
)


@dataclass(frozen=True)
class BootstrapConfig:
    """Everything that determines acepilot-tiny. `preset("small")` is the test-sized one."""

    seed: int = 0
    # sources
    python_train_bytes: int = 8_000_000
    python_held_out_bytes: int = 700_000
    js_train_bytes: int = 1_500_000
    js_held_out_bytes: int = 150_000
    include_js: bool = True
    held_out_every: int = 12
    validation_every: int = 40  # of the training files, 1 in N feeds the loop's val loss
    max_file_bytes: int = 120_000
    # tokenizer
    vocab_size: int = 4096
    # model
    n_embd: int = 192
    n_layer: int = 4
    n_head: int = 4
    rotary_dim: int = 16
    # The context the engine serves (its max_length) is n_positions: keep it at the
    # trained length. Positions the model never saw in training ruin its predictions
    # (held-out exact match 4.0% with 512 positions, 6.75% with 256: docs/acepilot-tiny.md).
    n_positions: int = 256
    seq_len: int = 256
    # training (acepilot/training/finetune/train.py)
    steps: int = 450
    micro_batch: int = 16
    learning_rate: float = 4e-3
    min_lr: float = 4e-4
    warmup_steps: int = 40
    weight_decay: float = 0.01
    checkpoint_interval: int = 100
    # build and evaluation
    precision: str = "int8"
    parity: str = "enforce"
    eval_positions: int = 400
    eval_context_chars: int = 3000
    eval_max_tokens: int = 48
    perplexity_tokens: int = 32_768
    onnx_perplexity_tokens: int = 2048
    require_better: bool = True  # refuse to publish a model that loses to a baseline

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> BootstrapConfig:
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}: expected one of {', '.join(PRESETS)}")
        return dataclasses.replace(cls(**PRESETS[name]), **overrides)

    def check(self) -> None:
        tiny.check_shape(self.n_embd, self.n_head, self.rotary_dim, self.n_positions)
        if self.seq_len > self.n_positions:
            raise ValueError(f"seq_len {self.seq_len} exceeds n_positions {self.n_positions}")
        if min(self.steps, self.micro_batch, self.eval_positions, self.checkpoint_interval) < 1:
            raise ValueError("steps, micro_batch, eval_positions, checkpoint_interval must be >= 1")
        if self.precision not in ("fp32", "int8", "int4"):
            raise ValueError(f"precision must be fp32, int8 or int4, got {self.precision!r}")
        if self.eval_max_tokens >= self.n_positions:
            raise ValueError("eval_max_tokens must be below n_positions")

    def model_size(self) -> int:
        """Parameters of the model this config trains (padded vocabulary, untied head)."""
        vocab = tiny.padded_vocab(self.vocab_size)
        per_layer = 12 * self.n_embd * self.n_embd + 7 * self.n_embd
        return 2 * vocab * self.n_embd + vocab + self.n_layer * per_layer + 2 * self.n_embd


PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    # End to end in about a minute on 2 cores: what the tests run.
    "small": {
        "python_train_bytes": 300_000,
        "python_held_out_bytes": 60_000,
        "js_train_bytes": 0,
        "js_held_out_bytes": 0,
        "include_js": False,
        "vocab_size": 512,
        "n_embd": 64,
        "n_layer": 2,
        "n_head": 4,
        "rotary_dim": 16,
        "n_positions": 128,
        "seq_len": 64,
        "steps": 40,
        "micro_batch": 8,
        "learning_rate": 5e-3,
        "min_lr": 5e-4,
        "warmup_steps": 5,
        "checkpoint_interval": 10,
        "eval_positions": 40,
        "eval_context_chars": 400,
        "eval_max_tokens": 16,
        "perplexity_tokens": 2048,
        "onnx_perplexity_tokens": 256,
        "require_better": False,
    },
}


# ---------------------------------------------------------------------------
# Sources


@dataclass(frozen=True)
class SourceFile:
    path: Path
    relative: str  # "python/json/decoder.py", "js/npm/lib/cli.js"
    language: str
    licence: str


@dataclass(frozen=True)
class Sources:
    train: tuple[SourceFile, ...]
    validation: tuple[SourceFile, ...]
    held_out: tuple[SourceFile, ...]
    licences: dict[str, Any]

    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        for label, files in (
            ("train", self.train),
            ("validation", self.validation),
            ("held_out", self.held_out),
        ):
            digest.update(label.encode() + b"\0")
            for file in files:
                digest.update(file.relative.encode() + b"\0")
                digest.update(hashlib.sha256(file.path.read_bytes()).digest())
        return digest.hexdigest()


def package_licence(directory: Path, root: Path, cache: dict[Path, str | None]) -> str | None:
    """The licence of the nearest package.json at or above `directory` (below `root`)."""
    current = directory
    while True:
        if current in cache:
            return cache[current]
        manifest = current / "package.json"
        licence: str | None = None
        found = False
        if manifest.is_file():
            try:
                data = json.loads(manifest.read_text("utf-8"))
                if isinstance(data, dict) and "name" in data:
                    found = True
                    value = data.get("license")
                    licence = value if isinstance(value, str) else None
            except (OSError, ValueError):
                pass
        if found or current == root or current.parent == current:
            cache[current] = licence
            return licence
        current = current.parent


def javascript_files(max_file_bytes: int) -> list[tuple[str, Path, str]]:
    """(relative name, path, licence) of the permissively licensed JS that npm/corepack ship."""
    found: list[tuple[str, Path, str]] = []
    cache: dict[Path, str | None] = {}
    for root in NODE_MODULE_ROOTS:
        if not root.is_dir():
            continue
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if d not in JS_EXCLUDED_DIRS and d[0] != ".")
            for filename in sorted(filenames):
                if not filename.endswith((".js", ".mjs", ".cjs")) or ".min." in filename:
                    continue
                path = Path(dirpath, filename)
                if not path.is_file() or path.is_symlink():
                    continue
                size = path.stat().st_size
                if size == 0 or size > max_file_bytes:
                    continue
                licence = package_licence(path.parent, root, cache)
                if licence not in PERMISSIVE:
                    continue
                assert licence is not None
                found.append((f"js/{path.relative_to(root).as_posix()}", path, licence))
    return found


def select_sources(config: BootstrapConfig, python_root: Path | None = None) -> Sources:
    """The deterministic train / validation / held-out split of the local code.

    Python: acepilot/training/tiny.py's split (a file is held out when the hash of
    its path is divisible by `held_out_every`), within the byte budgets.
    JavaScript: the same rule on its own files. Validation files (the
    training loop's loss) are taken from the training side by another hash
    rule, never from the held-out files, which only the final evaluation reads.
    """
    sample = tiny.code_sample_files(
        root=python_root,
        held_out_every=config.held_out_every,
        max_file_bytes=config.max_file_bytes,
        max_train_bytes=config.python_train_bytes,
        max_held_out_bytes=config.python_held_out_bytes,
    )
    train: list[SourceFile] = []
    validation: list[SourceFile] = []
    held_out: list[SourceFile] = []

    def python_file(path: Path) -> SourceFile:
        relative = path.relative_to(sample.root).as_posix()
        return SourceFile(path, f"python/{relative}", "python", PYTHON_LICENCE)

    for path in sample.train:
        file = python_file(path)
        (
            validation
            if tiny.name_hash("v" + file.relative) % config.validation_every == 0
            else train
        ).append(file)
    held_out.extend(python_file(path) for path in sample.held_out)
    licences: dict[str, Any] = {
        "python": {
            "root": str(sample.root),
            "licence": PYTHON_LICENCE,
            "note": "CPython standard library, Python Software Foundation License 2.0",
        }
    }
    if config.include_js:
        candidates = sorted(
            (tiny.name_hash(name), name, path, licence)
            for name, path, licence in javascript_files(config.max_file_bytes)
        )
        budgets = {"train": config.js_train_bytes, "held_out": config.js_held_out_bytes}
        used: dict[str, int] = {}
        for number, name, path, licence in candidates:
            side = "held_out" if number % config.held_out_every == 0 else "train"
            size = path.stat().st_size
            if size > budgets[side] or tiny.read_code(path) is None:
                continue
            budgets[side] -= size
            file = SourceFile(path, name, "javascript", licence)
            if side == "held_out":
                held_out.append(file)
            elif tiny.name_hash("v" + name) % config.validation_every == 0:
                validation.append(file)
            else:
                train.append(file)
            used[licence] = used.get(licence, 0) + 1
        if used:
            licences["javascript"] = {
                "roots": [str(root) for root in NODE_MODULE_ROOTS if root.is_dir()],
                "files_per_licence": dict(sorted(used.items())),
                "note": "npm's and corepack's bundled packages, only those whose "
                "package.json licence is permissive",
            }
    if not train or not held_out:
        raise RuntimeError("too little local code to train on")
    if not validation:
        validation.append(train.pop())
    return Sources(tuple(train), tuple(validation), tuple(held_out), licences)


# ---------------------------------------------------------------------------
# Stages: records, atomic outputs


# Which config fields each stage depends on (with everything before it).
SOURCE_FIELDS = (
    "python_train_bytes",
    "python_held_out_bytes",
    "js_train_bytes",
    "js_held_out_bytes",
    "include_js",
    "held_out_every",
    "validation_every",
    "max_file_bytes",
)
SHAPE_FIELDS = ("n_embd", "n_layer", "n_head", "rotary_dim", "n_positions")
TRAIN_FIELDS = (
    "steps",
    "micro_batch",
    "learning_rate",
    "min_lr",
    "warmup_steps",
    "weight_decay",
    "checkpoint_interval",
)
EVAL_FIELDS = (
    "eval_positions",
    "eval_context_chars",
    "eval_max_tokens",
    "perplexity_tokens",
    "onnx_perplexity_tokens",
)


def stable_hash(value: object) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


class Stage:
    """One stage's directory in the work dir, done when its record has the expected key."""

    def __init__(self, work: Path, name: str, key: str) -> None:
        self.name, self.key = name, key
        self.path = work / name

    def record(self) -> dict[str, Any] | None:
        try:
            data: dict[str, Any] = json.loads((self.path / STAGE_RECORD).read_text("utf-8"))
        except (OSError, ValueError):
            return None
        return data if data.get("key") == self.key else None

    def done(self) -> bool:
        return self.record() is not None

    def finish(self, info: dict[str, Any]) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        text = json.dumps({"key": self.key, **info}, indent=2, default=str) + "\n"
        tmp = self.path / f".{STAGE_RECORD}.tmp"
        tmp.write_text(text, "utf-8")
        os.replace(tmp, self.path / STAGE_RECORD)

    def build_atomically(self, build: Callable[[Path], dict[str, Any]]) -> dict[str, Any]:
        """Fill a fresh temp dir with `build`, record it, swap it into place."""
        info: dict[str, Any] = {}

        def run(tmp: Path) -> None:
            info.update(build(tmp))
            (tmp / STAGE_RECORD).write_text(
                json.dumps({"key": self.key, **info}, indent=2, default=str) + "\n", "utf-8"
            )

        tiny.replace_atomically(self.path, run)
        return info


def free_port() -> int:
    """A free local TCP port for the one-rank process group (no clash with other runs)."""
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def torch_threads() -> Iterator[None]:
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(tiny.cpu_threads())
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def say(message: str, quiet: bool) -> None:
    if not quiet:
        print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# The pipeline


@dataclass
class BootstrapResult:
    entry: ModelEntry
    record: dict[str, Any]
    cached: bool


def bootstrap(
    config: BootstrapConfig,
    work: Path,
    registry: Registry,
    *,
    progress: bool = True,
    quiet: bool = False,
    python_root: Path | None = None,
    stop_after: str | None = None,
) -> BootstrapResult | None:
    """Run (or finish, or reuse) every stage; returns the published entry.

    `stop_after` ends the run after that stage (None when stopping early):
    the CLI's --stop-after, for inspecting the data or the tokenizer.
    """
    config.check()
    if stop_after is not None and stop_after not in STAGES:
        raise ValueError(f"unknown stage {stop_after!r}: expected one of {', '.join(STAGES)}")
    work.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    seconds: dict[str, float] = {}
    with tiny.file_lock(work / "bootstrap"):
        sources = select_sources(config, python_root)
        fields = dataclasses.asdict(config)
        base = {"recipe": RECIPE_VERSION, "sources": sources.fingerprint(), "seed": config.seed}

        def key(*names: str) -> str:
            return stable_hash({**base, **{name: fields[name] for name in names}})

        tokenizer_key = key(*SOURCE_FIELDS, "vocab_size")
        data_key = stable_hash([tokenizer_key, config.seq_len])
        init_key = stable_hash([tokenizer_key, key(*SHAPE_FIELDS)])
        train_key = stable_hash([data_key, init_key, key(*TRAIN_FIELDS)])
        build_key = stable_hash([train_key, config.precision, config.parity])
        eval_key = stable_hash([build_key, key(*EVAL_FIELDS), EVAL_RECIPE])

        record_path = work / RECORD
        previous = read_json(record_path)
        if previous is not None and previous.get("key") == eval_key:
            entry = published_entry(registry, previous)
            if entry is not None:
                return BootstrapResult(entry, previous, cached=True)

        def timed(name: str, run: Callable[[], Any]) -> Any:
            began = time.monotonic()
            value = run()
            seconds[name] = round(time.monotonic() - began, 1)
            return value

        def ensure(stage: Stage, make: Callable[[Path], Any]) -> None:
            """Build `stage` (atomically, timed) unless a finished one is there."""
            if not stage.done():
                timed(stage.path.name, lambda: stage.build_atomically(make))

        say(
            f"[1/7] sources: {len(sources.train)} training files, "
            f"{len(sources.held_out)} held-out files",
            quiet,
        )
        (work / "sources.json").write_text(json.dumps(sources_record(sources), indent=2) + "\n")
        if stop_after == "sources":
            return None

        tokenizer_stage = Stage(work, "tokenizer", tokenizer_key)
        say(f"[2/7] tokenizer: byte-level BPE, {config.vocab_size} tokens", quiet)
        ensure(tokenizer_stage, lambda tmp: make_tokenizer(sources, config, tmp))
        if stop_after == "tokenizer":
            return None

        data_stage = Stage(work, "data", data_key)
        say(f"[3/7] data: packed rows of {config.seq_len} tokens", quiet)
        ensure(data_stage, lambda tmp: make_data(sources, config, tokenizer_stage.path, tmp))
        if stop_after == "data":
            return None

        init_stage = Stage(work, "init", init_key)
        ensure(init_stage, lambda tmp: make_init(config, tokenizer_stage.path, tmp))
        if stop_after == "init":
            return None

        train_stage = Stage(work, "train", train_key)
        say(
            f"[4/7] training {config.model_size():,} parameters for {config.steps} steps "
            "(DeepSpeed on this machine; resumable)",
            quiet,
        )
        if not train_stage.done():
            timed(
                "train",
                lambda: train(config, data_stage.path, init_stage.path, train_stage, progress),
            )
        checkpoint = train_stage.path / "hf"
        if stop_after == "train":
            return None

        build_stage = Stage(work, "build", build_key)
        say(f"[5/7] build: fused ONNX graph, {config.precision}, parity gate", quiet)
        ensure(build_stage, lambda tmp: make_build(config, checkpoint, tmp, progress))
        entry = private_entry(build_stage.path)
        if stop_after == "build":
            return None

        eval_stage = Stage(work, "evaluate", eval_key)
        say(
            f"[6/7] evaluation on held-out files: {config.eval_positions} lines, "
            "perplexity; baselines: bigram, repeat previous line",
            quiet,
        )
        ensure(
            eval_stage,
            lambda tmp: evaluate(
                config, sources, data_stage.path, checkpoint, entry, tmp, progress
            ),
        )
        evaluation = read_json(eval_stage.path / "results.json") or {}
        verdict = beats_baselines(evaluation)
        if config.require_better and verdict:
            raise RuntimeError(
                f"acepilot-tiny does not beat its baselines ({'; '.join(verdict)}): "
                f"not published (results: {eval_stage.path / 'results.json'})"
            )
        if stop_after == "evaluate":
            return None

        say(f"[7/7] publish: production of {MODEL_NAME} in {registry.root}", quiet)
        published = timed("publish", lambda: publish(entry, registry))
        record = {
            "key": eval_key,
            "name": MODEL_NAME,
            "registry": str(registry.root),
            "version": published.version,
            "files": published.files,
            "config": fields,
            "parameters": read_json(train_stage.path / STAGE_RECORD, {}).get("parameters"),
            "artifact_bytes": sum(
                published.file_path(name).stat().st_size for name in published.files
            ),
            "parity": published.manifest.get("parity", {}),
            "evaluation": evaluation,
            "sources": sources_record(sources)["summary"],
            "licences": sources.licences,
            "seconds_this_run": {**seconds, "total": round(time.monotonic() - started, 1)},
            "stage_seconds": stage_seconds(work),
        }
        record_path.write_text(json.dumps(record, indent=2, default=str) + "\n", "utf-8")
        return BootstrapResult(published, record, cached=False)


def read_json(path: Path, default: Any = None) -> Any:
    try:
        return json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return default


def stage_seconds(work: Path) -> dict[str, float]:
    """How long each stage took when it was built (summed over resumed pieces)."""
    out = {}
    for name in STAGES:
        info = read_json(work / name / STAGE_RECORD, {})
        if "seconds" in info:
            out[name] = info["seconds"]
    return out


def sources_record(sources: Sources) -> dict[str, Any]:
    def summary(files: Sequence[SourceFile]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for file in files:
            item = out.setdefault(file.language, {"files": 0, "bytes": 0})
            item["files"] += 1
            item["bytes"] += file.path.stat().st_size
        return out

    return {
        "summary": {
            "train": summary(sources.train),
            "validation": summary(sources.validation),
            "held_out": summary(sources.held_out),
        },
        "licences": sources.licences,
        "held_out_files": [f.relative for f in sources.held_out],
        "files": {
            split: [[f.relative, f.licence] for f in files]
            for split, files in (
                ("train", sources.train),
                ("validation", sources.validation),
                ("held_out", sources.held_out),
            )
        },
    }


def make_tokenizer(sources: Sources, config: BootstrapConfig, out: Path) -> dict[str, Any]:
    began = time.monotonic()
    tiny.train_tokenizer([f.path for f in sources.train], config.vocab_size, out)
    tokenizer = tiny.load_tokenizer(out)
    tokenizer.model_max_length = config.n_positions
    tokenizer.save_pretrained(str(out))
    digest = hashlib.sha256((out / "tokenizer.json").read_bytes()).hexdigest()
    return {
        "tokens": len(tokenizer),
        "sha256": digest,
        "seconds": round(time.monotonic() - began, 1),
    }


def encode_files(tokenizer: Any, files: Sequence[SourceFile]) -> list[list[int]]:
    texts = [tiny.read_code(f.path) or "" for f in files]
    ids: list[list[int]] = tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]
    return ids


def make_data(
    sources: Sources, config: BootstrapConfig, tokenizer_dir: Path, out: Path
) -> dict[str, Any]:
    """train.npy / validation.npy / manifest.json as `acepilot train corpus` lays them out."""
    from acepilot.training.corpus import pack

    began = time.monotonic()
    tokenizer = tiny.load_tokenizer(tokenizer_dir)
    eos = tokenizer.eos_token_id
    dtype = pack.token_dtype(len(tokenizer))
    counts = {}
    for split, files in (("train", sources.train), ("validation", sources.validation)):
        packer = pack.Packer(out / f"{split}.npy", config.seq_len, eos, dtype)
        for ids in encode_files(tokenizer, files):
            packer.add(ids)
        counts[split] = packer.finish()
        packer.raw_path.unlink(missing_ok=True)
    manifest = {
        "name": "acepilot-tiny-bootstrap",
        "version": 1,
        "seq_len": config.seq_len,
        "tokenizer": {"path": str(tokenizer_dir), "vocab_size": len(tokenizer)},
        "counts": counts,
        "licences": sources.licences,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str) + "\n")
    return {"counts": counts, "seconds": round(time.monotonic() - began, 1)}


def make_init(config: BootstrapConfig, tokenizer_dir: Path, out: Path) -> dict[str, Any]:
    """The untrained CodeGen (transformers' initialisation, seeded) with its tokenizer."""
    import torch
    from transformers import CodeGenForCausalLM

    tokenizer = tiny.load_tokenizer(tokenizer_dir)
    eos = tokenizer.eos_token_id
    assert isinstance(eos, int)
    model_config = tiny.codegen_config(
        vocab_size=tiny.padded_vocab(len(tokenizer)),
        n_embd=config.n_embd,
        n_layer=config.n_layer,
        n_head=config.n_head,
        rotary_dim=config.rotary_dim,
        n_positions=config.n_positions,
        eos_token_id=eos,
    )
    torch.manual_seed(config.seed)
    model = CodeGenForCausalLM(model_config)
    model.save_pretrained(str(out), safe_serialization=True)
    tokenizer.save_pretrained(str(out))
    return {"parameters": sum(p.numel() for p in model.parameters())}


def train(
    config: BootstrapConfig, data_dir: Path, init_dir: Path, stage: Stage, progress: bool
) -> None:
    """acepilot/training/finetune/train.py in this process, one rank: it resumes from its checkpoints.

    A run for other settings left in the stage directory is cleared first
    (its checkpoints would not fit).
    """
    from acepilot.training.finetune.launch import launch
    from acepilot.training.finetune.train import FinetuneConfig

    settings = stage.path / "settings.json"
    if read_json(settings, {}).get("key") != stage.key:
        shutil.rmtree(stage.path, ignore_errors=True)
        stage.path.mkdir(parents=True)
        settings.write_text(json.dumps({"key": stage.key}) + "\n")
    finetune = FinetuneConfig(
        init_from=str(init_dir),
        data_dir=str(data_dir),
        out_dir=str(stage.path),
        eval_interval=max(1, config.steps // 4),
        eval_iters=4,
        log_interval=10,
        checkpoint_interval=config.checkpoint_interval,
        keep_checkpoints=1,
        resume=True,
        export_hf=True,
        micro_batch=config.micro_batch,
        grad_accum=1,
        learning_rate=config.learning_rate,
        min_lr=config.min_lr,
        warmup_steps=config.warmup_steps,
        max_steps=config.steps,
        weight_decay=config.weight_decay,
        zero_stage=0,
        precision="fp32",
        launcher="none",
        nproc=1,
        master_port=free_port(),
        seed=config.seed,
        progress=progress,
    )
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        # the loop only fills in a missing MASTER_PORT: one inherited from a parent
        # that holds a process group (e.g. a test runner) would be taken already
        os.environ["MASTER_PORT"] = str(finetune.master_port)
    began = time.monotonic()
    with torch_threads():
        status = launch(finetune)
    if status != 0 or not (stage.path / "hf" / "config.json").is_file():
        raise RuntimeError(f"training failed (status {status}); see {stage.path / 'log.jsonl'}")
    spent = read_json(stage.path / STAGE_RECORD, {}).get("seconds", 0.0)
    init_info = read_json(init_dir / STAGE_RECORD, {})
    log = [json.loads(line) for line in (stage.path / "log.jsonl").read_text().splitlines() if line]
    stage.finish(
        {
            "parameters": init_info.get("parameters"),
            "seconds": round(spent + time.monotonic() - began, 1),
            "final_loss": log[-1].get("loss") if log else None,
            "val_loss": [r["val_loss"] for r in log if "val_loss" in r],
            "weights_sha256": hashlib.sha256(
                (stage.path / "hf" / "model.safetensors").read_bytes()
            ).hexdigest(),
        }
    )


def private_entry(build_dir: Path) -> ModelEntry:
    from acepilot.server.registry import Registry

    registry = Registry(build_dir / "registry")
    return registry.resolve(MODEL_NAME)


def make_build(
    config: BootstrapConfig, checkpoint: Path, out: Path, progress: bool
) -> dict[str, Any]:
    """`model build` into a registry private to the work dir (published only after evaluation)."""
    from acepilot.server.build.pipeline import build_model
    from acepilot.server.registry import Registry

    began = time.monotonic()
    entry = build_model(
        str(checkpoint),
        precision=config.precision,
        registry=Registry(out / "registry"),
        name=MODEL_NAME,
        parity=config.parity,
        progress=progress,
    )
    return {
        "version": entry.version,
        "parity": entry.manifest.get("parity"),
        "seconds": round(time.monotonic() - began, 1),
    }


def evaluate(
    config: BootstrapConfig,
    sources: Sources,
    data_dir: Path,
    checkpoint: Path,
    entry: ModelEntry,
    out: Path,
    progress: bool,
) -> dict[str, Any]:
    """Held-out line completion and perplexity: the model against both baselines."""
    import numpy as np

    from acepilot.server.engine import Engine, GenerationParams
    from acepilot.training.eval import line_completion as lc

    began = time.monotonic()
    tokenizer = tiny.load_tokenizer(checkpoint)
    vocab = tiny.padded_vocab(len(tokenizer))
    train_ids = np.load(data_dir / "train.npy", mmap_mode="r").reshape(-1)
    bigram = lc.BigramModel(np.asarray(train_ids, dtype=np.int64), vocab)
    engine = Engine.load(entry)

    # perplexity: the same held-out windows for the model and the bigram
    eos = tokenizer.eos_token_id
    held_ids: list[int] = []
    by_language: dict[str, list[int]] = {}
    for file, ids in zip(sources.held_out, encode_files(tokenizer, sources.held_out), strict=True):
        held_ids.extend([*ids, eos])
        by_language.setdefault(file.language, []).extend([*ids, eos])
    windows = lc.token_windows(held_ids, config.seq_len, config.perplexity_tokens)
    with torch_threads():
        model = tiny.load_model(checkpoint)
        model_loss = tiny.model_loss(model, windows)
        per_language_ppl = {}
        for language, ids in sorted(by_language.items()):
            lang_windows = lc.token_windows(ids, config.seq_len, config.perplexity_tokens // 2)
            per_language_ppl[language] = {
                "model": math.exp(tiny.model_loss(model, lang_windows)),
                "bigram": math.exp(bigram.cross_entropy(lang_windows)),
                "tokens": sum(len(w) - 1 for w in lang_windows),
            }
    bigram_loss = bigram.cross_entropy(windows)
    onnx_windows = lc.token_windows(held_ids, config.seq_len, config.onnx_perplexity_tokens)
    onnx_total, onnx_count = lc.onnx_token_losses(entry, onnx_windows, progress=progress)
    torch_onnx_loss = tiny.model_loss(model, onnx_windows)
    predicted = sum(len(w) - 1 for w in windows)
    chars = len(tokenizer.decode([t for w in windows for t in w[1:]]))

    # line completion through the built artifact
    files = [(Path("/"), f.path) for f in sources.held_out]
    tasks = lc.sample_tasks(
        files, config.eval_positions, config.seed, context_chars=config.eval_context_chars
    )
    relabel = {f.path.as_posix().lstrip("/"): f for f in sources.held_out}
    tasks = [
        dataclasses.replace(
            task,
            path=relabel[task.path].relative,
            domain=source_domain(relabel[task.path].relative),
        )
        for task in tasks
    ]
    predictors: dict[str, lc.Predictor] = {
        "acepilot-tiny": lc.engine_predictor(engine, config.eval_max_tokens),
        "bigram": lc.bigram_predictor(bigram, engine.tokenizer, config.eval_max_tokens),
        "repeat previous line": lc.repeat_previous_line,
    }
    reports = lc.evaluate(tasks, predictors, progress=progress, keep_examples=12)
    completion = {name: report.to_dict() for name, report in reports.items()}
    examples = {name: report.examples for name, report in reports.items()}

    showcase = []
    params = GenerationParams(max_new_tokens=48, stop=("\n\n",))
    for prompt in SHOWCASE_PROMPTS:
        prompt = prompt.rstrip()  # see line_completion.split_trailing_whitespace
        result = engine.generate(prompt, params)
        showcase.append({"prompt": prompt, "completion": result.text})

    results = {
        "held_out": sources_record(sources)["summary"]["held_out"],
        "perplexity": {
            "tokens": predicted,
            "model": math.exp(model_loss),
            "bigram": math.exp(bigram_loss),
            "unigram": math.exp(unigram_loss(bigram, windows)),
            "model_bits_per_char": model_loss * predicted / chars / math.log(2),
            "bigram_bits_per_char": bigram_loss * predicted / chars / math.log(2),
            "per_language": per_language_ppl,
            "onnx_check": {
                "tokens": onnx_count,
                "built_artifact": math.exp(onnx_total / onnx_count),
                "pytorch": math.exp(torch_onnx_loss),
            },
        },
        "line_completion": completion,
        "showcase": showcase,
    }
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n", "utf-8")
    (out / "examples.json").write_text(json.dumps(examples, indent=2) + "\n", "utf-8")
    return {"seconds": round(time.monotonic() - began, 1)}


def unigram_loss(bigram: Any, windows: Sequence[Sequence[int]]) -> float:
    import numpy as np

    targets = np.concatenate([np.asarray(w[1:], dtype=np.int64) for w in windows])
    return float(-np.log(bigram.unigram[targets]).mean())


def source_domain(relative: str) -> str:
    """ "python:json" for python/json/decoder.py, "python:(modules)" for python/os.py."""
    parts = relative.split("/")
    return f"{parts[0]}:{parts[1] if len(parts) > 2 else '(modules)'}"


def beats_baselines(results: dict[str, Any]) -> list[str]:
    """What the model fails to beat (empty: it beats both baselines on every measure)."""
    failures = []
    lines = results.get("line_completion", {})
    model = lines.get("acepilot-tiny", {})
    for baseline in ("bigram", "repeat previous line"):
        other = lines.get(baseline, {})
        for measure in ("exact_match", "edit_similarity"):
            if not model.get(measure, 0.0) > other.get(measure, 1.0):
                failures.append(
                    f"{measure} {model.get(measure)} vs {baseline} {other.get(measure)}"
                )
    perplexity = results.get("perplexity", {})
    if not perplexity.get("model", math.inf) < perplexity.get("bigram", 0.0):
        failures.append(
            f"perplexity {perplexity.get('model')} vs bigram {perplexity.get('bigram')}"
        )
    return failures


def publish(entry: ModelEntry, registry: Registry) -> ModelEntry:
    """Copy the evaluated entry into `registry` (reusing an identical one) and make it production."""
    from acepilot.server.errors import RegistryError

    source = entry.manifest.get("source", {}).get("sha256")
    published = None
    for version in reversed(registry.versions(MODEL_NAME)):
        try:
            candidate = registry.entry(MODEL_NAME, version)
        except RegistryError:
            continue
        if (
            candidate.files == entry.files
            and candidate.manifest.get("source", {}).get("sha256") == source
        ):
            published = candidate
            break
    if published is None:
        with registry.stage(MODEL_NAME) as staging:
            for name in entry.files:
                target = staging / name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(entry.file_path(name), target)
            manifest = {
                key: value
                for key, value in entry.manifest.items()
                if key not in ("files", "name", "version", "created", "format")
            }
            published = registry.commit(staging, MODEL_NAME, manifest)
    if registry.production(MODEL_NAME) != published.version:
        registry.set_production(MODEL_NAME, published.version)
    return published


def published_entry(registry: Registry, record: dict[str, Any]) -> ModelEntry | None:
    """The registry's production acepilot-tiny if it is what `record` published, else None."""
    from acepilot.server.errors import RegistryError

    try:
        if registry.production(MODEL_NAME) != record.get("version"):
            return None
        entry = registry.entry(MODEL_NAME, str(record["version"]))
    except (RegistryError, KeyError):
        return None
    return entry if entry.files == record.get("files") else None


__all__ = [
    "MODEL_NAME",
    "PRESETS",
    "BootstrapConfig",
    "BootstrapResult",
    "beats_baselines",
    "bootstrap",
    "select_sources",
]
