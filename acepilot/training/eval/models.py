"""From what a user names on the command line to a completion generator.

- a registry entry directory (has manifest.json), `NAME` (its production
  version) or `NAME@vN`: the ONNX engine, what editors are served;
- a Hugging Face checkpoint directory (config.json, no manifest.json):
  PyTorch, e.g. a fine-tune's `hf/` before it is built;
- `canonical`: the dataset's solutions (the harness self-check).

Every model's description (kept in the evaluation summary, and from there in
gate.json) carries the sha256 `digest` of what was evaluated: a registry
entry's `files_digest`, or a checkpoint directory's `checkpoint_digest`.
Promotion registers only a model with that digest.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path

from acepilot.server.errors import AcepilotError
from acepilot.server.registry import ModelEntry, Registry, files_digest, sha256_file
from acepilot.training.eval.generate import CanonicalGenerator, Generator, Sampling
from acepilot.training.eval.humaneval import HumanEvalConfig
from acepilot.training.eval.toolchains import LANGUAGES, canonical_language


def resolve_entry(model: str, registry: Registry) -> ModelEntry | None:
    """The registry entry `model` names, or None when it is a checkpoint directory."""
    path = Path(model).expanduser()
    if path.is_dir():
        if (path / "manifest.json").is_file():
            return ModelEntry.load(path)
        if (path / "config.json").is_file():
            return None
        raise AcepilotError(f"{path}: neither a registry entry nor a checkpoint directory")
    name, _, version = model.partition("@")
    return registry.resolve(name, version or None)


MAX_CHECKPOINT_FILES = 10_000


def checkpoint_files(directory: Path) -> list[tuple[str, Path]]:
    """The files a checkpoint directory is made of: (relative POSIX name, path), sorted.

    Subdirectories are included, dot-directories (.git, .cache) are not, symbolic
    links to files count with their content (a Hugging Face cache snapshot is made
    of them). This is what `checkpoint_digest` covers and what promotion copies.
    """
    if not directory.is_dir():
        raise AcepilotError(f"{directory}: not a checkpoint directory")
    found: list[tuple[str, Path]] = []
    for current, subdirs, names in os.walk(directory):  # does not follow linked dirs
        subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
        for name in names:
            file = Path(current) / name
            if file.is_file():  # not a broken link, FIFO or socket
                found.append((file.relative_to(directory).as_posix(), file))
        if len(found) > MAX_CHECKPOINT_FILES:
            raise AcepilotError(
                f"{directory}: more than {MAX_CHECKPOINT_FILES} files; not a checkpoint directory"
            )
    if not found:
        raise AcepilotError(f"{directory}: an empty checkpoint directory")
    return sorted(found)


def checkpoint_digest(directory: Path) -> str:
    """One sha256 over a checkpoint's sorted relative paths and their files' sha256."""
    return files_digest({name: sha256_file(file) for name, file in checkpoint_files(directory)})


def make_generator(model: str, registry: Registry, threads: int | None = None) -> Generator:
    """The generator for `model`; its description records the digest of what it runs."""
    if model == "canonical":
        return CanonicalGenerator()
    entry = resolve_entry(model, registry)
    if entry is not None:
        from acepilot.training.eval.generate import EngineGenerator

        engine = EngineGenerator(entry, threads)  # verifies the files' sha256 as it loads
        engine.description["digest"] = entry.digest
        return engine
    from acepilot.training.eval.generate import TorchGenerator

    path = Path(model).expanduser()
    digest = checkpoint_digest(path)
    torch_model = TorchGenerator(path)
    if checkpoint_digest(path) != digest:
        raise AcepilotError(
            f"{path}: the checkpoint changed while it was being loaded; evaluate it again "
            "when nothing writes to it"
        )
    torch_model.description["digest"] = digest
    return torch_model


def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    """The HumanEval settings, shared by `eval humaneval`, `gate` and `pipeline`."""
    group = parser.add_argument_group("HumanEval settings")
    group.add_argument(
        "--data",
        help="HumanEval-X directory or .jsonl[.gz], THUDM/humaneval-x, or openai_humaneval "
        "(Python); default $ACEPILOT_HUMANEVAL_X, else THUDM/humaneval-x",
    )
    group.add_argument(
        "--languages",
        default=",".join(LANGUAGES),
        help=f"comma-separated (default {','.join(LANGUAGES)})",
    )
    group.add_argument(
        "-n", "--num-samples", dest="samples", type=int, default=1, help="samples per problem (1)"
    )
    group.add_argument(
        "--temperature", type=float, default=0.0, help="0 = greedy (default); 0.2/0.8 for pass@k"
    )
    group.add_argument("--top-p", type=float, default=0.95, help="nucleus sampling (0.95)")
    group.add_argument("--max-new-tokens", type=int, default=512, help="per completion (512)")
    group.add_argument("--k", default="1,10,100", help="pass@k values (those <= n are reported)")
    group.add_argument("--limit", type=int, help="only the first N problems per language")
    group.add_argument(
        "--tasks", default="", help="only these problem numbers, e.g. 0,1,2 (every language)"
    )
    group.add_argument(
        "--workers",
        type=int,
        default=max(1, (os.cpu_count() or 2) // 2),
        help="parallel sandboxed executions (default: half the cores)",
    )
    group.add_argument(
        "--timeout", type=float, default=10.0, help="seconds per test run (10; CPU seconds too)"
    )
    group.add_argument("--seed", type=int, default=0, help="sampling and bootstrap seed (0)")
    group.add_argument("--threads", type=int, help="onnxruntime threads (default: all cores)")
    group.add_argument("--no-progress", action="store_true", help="no progress bars")


def eval_config(args: argparse.Namespace) -> HumanEvalConfig:
    def ints(text: str, what: str) -> tuple[int, ...]:
        try:
            return tuple(int(part) for part in text.split(",") if part.strip())
        except ValueError:
            raise AcepilotError(f"{what} must be comma-separated integers, got {text!r}") from None

    try:
        languages = tuple(canonical_language(lang) for lang in args.languages.split(",") if lang)
        sampling = Sampling(
            n=args.samples,
            temperature=args.temperature,
            top_p=args.top_p,
            max_new_tokens=args.max_new_tokens,
            seed=args.seed,
        )
    except ValueError as exc:
        raise AcepilotError(str(exc)) from None
    if args.samples < 1 or args.workers < 1 or args.timeout <= 0:
        raise AcepilotError("-n and --workers must be >= 1 and --timeout > 0")
    if args.temperature == 0.0 and args.samples > 1:
        raise AcepilotError("greedy decoding (--temperature 0) gives n identical samples: use -n 1")
    config = HumanEvalConfig(
        languages=languages,
        sampling=sampling,
        ks=ints(args.k, "--k"),
        limit=args.limit,
        tasks=ints(args.tasks, "--tasks"),
        workers=args.workers,
        timeout_s=args.timeout,
        progress=not args.no_progress,
        seed=args.seed,
    )
    return dataclasses.replace(config, data=args.data) if args.data else config
