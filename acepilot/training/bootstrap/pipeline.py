"""`bootstrap()`: the stages in order, each cached in the work dir, the record at the end.

    sources -> tokenizer -> data -> init -> train -> build -> evaluate -> publish
    selection.py  data.py   data.py  train.py train.py publish.py evaluate.py publish.py

A rerun skips finished stages (stages.py); an interrupted run resumes, the
training from its last DeepSpeed checkpoint. Everything is seeded: the same
config and sources give the same tokenizer and the same weights.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from acepilot.training.atomic import file_lock
from acepilot.training.bootstrap import data, evaluate, publish, train
from acepilot.training.bootstrap.config import (
    DATA_FIELDS,
    EVAL_FIELDS,
    EVAL_RECIPE,
    MODEL_NAME,
    RECIPE_VERSION,
    SHAPE_FIELDS,
    SOURCE_FIELDS,
    STAGES,
    TOKENIZER_FIELDS,
    TRAIN_FIELDS,
    BootstrapConfig,
)
from acepilot.training.bootstrap.selection import select_sources
from acepilot.training.bootstrap.sources import SourceFile, Sources
from acepilot.training.bootstrap.stages import STAGE_RECORD, Stage, read_json, say, stable_hash

if TYPE_CHECKING:
    from acepilot.server.registry import ModelEntry, Registry

RECORD = "bootstrap.json"


@dataclass
class BootstrapResult:
    entry: ModelEntry
    record: dict[str, Any]
    cached: bool


def snapshot_held_out(sources: Sources, work: Path) -> Sources:
    """Copy the held-out files into the work dir and point at the copies: the
    evaluation then reads what the split chose even if a root changes meanwhile
    (`npm ci` rewrites node_modules)."""
    root = work / "held_out"
    copies = []
    for file in sources.held_out:
        target = root / file.relative
        if not target.is_file() or target.read_bytes() != file.path.read_bytes():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(file.path, target)
        copies.append(dataclasses.replace(file, path=target))
    return dataclasses.replace(sources, held_out=tuple(copies))


def bootstrap(
    config: BootstrapConfig,
    work: Path,
    registry: Registry,
    *,
    progress: bool = True,
    quiet: bool = False,
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
    with file_lock(work / "bootstrap"):
        sources = select_sources(config)
        fields = dataclasses.asdict(config)
        base = {"recipe": RECIPE_VERSION, "sources": sources.fingerprint(), "seed": config.seed}

        def key(*names: str) -> str:
            return stable_hash({**base, **{name: fields[name] for name in names}})

        tokenizer_key = key(*SOURCE_FIELDS, *TOKENIZER_FIELDS)
        data_key = stable_hash([tokenizer_key, key(*DATA_FIELDS)])
        init_key = stable_hash([tokenizer_key, key(*SHAPE_FIELDS)])
        train_key = stable_hash([data_key, init_key, key(*TRAIN_FIELDS)])
        # wsd: a checkpoint resumes under another `steps` (see train.train)
        resume_fields = [f for f in TRAIN_FIELDS if f != "steps" or config.lr_schedule != "wsd"]
        resume_key = stable_hash([data_key, init_key, key(*resume_fields)])
        build_key = stable_hash([train_key, config.precision, config.parity])
        eval_key = stable_hash([build_key, key(*EVAL_FIELDS), EVAL_RECIPE])

        record_path = work / RECORD
        previous = read_json(record_path)
        if previous is not None and previous.get("key") == eval_key:
            entry = publish.published_entry(registry, previous)
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
        sources = snapshot_held_out(sources, work)
        if stop_after == "sources":
            return None

        tokenizer_stage = Stage(work, "tokenizer", tokenizer_key)
        say(f"[2/7] tokenizer: byte-level BPE, {config.vocab_size} tokens, FIM tokens", quiet)
        ensure(tokenizer_stage, lambda tmp: data.make_tokenizer(sources, config, tmp))
        if stop_after == "tokenizer":
            return None

        data_stage = Stage(work, "data", data_key)
        say(f"[3/7] data: rows of {config.seq_len} tokens, FIM rate {config.fim_rate}", quiet)
        ensure(data_stage, lambda tmp: data.make_data(sources, config, tokenizer_stage.path, tmp))
        if stop_after == "data":
            return None

        init_stage = Stage(work, "init", init_key)
        ensure(init_stage, lambda tmp: train.make_init(config, tokenizer_stage.path, tmp))
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
                lambda: train.train(
                    config, data_stage.path, init_stage.path, train_stage, progress, resume_key
                ),
            )
        checkpoint = train_stage.path / "hf"
        if stop_after == "train":
            return None

        build_stage = Stage(work, "build", build_key)
        say(f"[5/7] build: fused ONNX graph, {config.precision}, parity gate", quiet)
        ensure(build_stage, lambda tmp: publish.make_build(config, checkpoint, tmp, progress))
        entry = publish.private_entry(build_stage.path)
        if stop_after == "build":
            return None

        eval_stage = Stage(work, "evaluate", eval_key)
        say(
            f"[6/7] evaluation on held-out packages: {config.eval_positions} lines, "
            "perplexity; baselines: bigram, repeat previous line",
            quiet,
        )
        ensure(
            eval_stage,
            lambda tmp: evaluate.evaluate(
                config, sources, data_stage.path, checkpoint, entry, tmp, progress
            ),
        )
        evaluation = read_json(eval_stage.path / "results.json") or {}
        verdict = evaluate.beats_baselines(evaluation)
        if config.require_better and verdict:
            raise RuntimeError(
                f"{MODEL_NAME} does not beat its baselines ({'; '.join(verdict)}): "
                f"not published (results: {eval_stage.path / 'results.json'})"
            )
        if stop_after == "evaluate":
            return None

        say(f"[7/7] publish: production of {MODEL_NAME} in {registry.root}", quiet)
        published = timed("publish", lambda: publish.publish(entry, registry))
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


def stage_seconds(work: Path) -> dict[str, float]:
    """How long each stage took when it was built (summed over resumed pieces)."""
    out = {}
    for name in STAGES:
        info = read_json(work / name / STAGE_RECORD, {})
        if "seconds" in info:
            out[name] = info["seconds"]
    return out


def sources_record(sources: Sources) -> dict[str, Any]:
    """Counts per split and language, the licences, and every file with its licence."""

    def summary(files: Sequence[SourceFile]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for file in files:
            item = out.setdefault(file.language, {"files": 0, "bytes": 0, "packages": set()})
            item["files"] += 1
            item["bytes"] += file.path.stat().st_size
            item["packages"].add(file.package)
        for item in out.values():
            item["packages"] = len(item["packages"])
        return dict(sorted(out.items()))

    return {
        "summary": {
            "train": summary(sources.train),
            "validation": summary(sources.validation),
            "held_out": summary(sources.held_out),
            "dropped": dict(sorted(sources.dropped.items())),
        },
        "licences": sources.licences,
        "files": {
            split: [[f.relative, f.licence, f.package] for f in files]
            for split, files in (
                ("train", sources.train),
                ("validation", sources.validation),
                ("held_out", sources.held_out),
            )
        },
    }


__all__ = ["RECORD", "BootstrapResult", "bootstrap", "sources_record"]
