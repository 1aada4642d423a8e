"""`acepilot pipeline CONFIG`: corpus -> fine-tune -> build -> evaluate -> gate -> promote.

One config file (plain assignments, like the training configs; see
`PipelineConfig` and docs/evaluation.md) drives the whole path; each stage
is the same code as its own command. The work directory holds:

    pipeline.json          the resolved config of the run (a resume must match it)
    stages/<stage>.json    a stage's marker: written (atomically) when it finished,
                           with its outputs; a rerun skips finished stages
    corpora/               the corpus (acepilot/training/corpus)
    finetune/              the DeepSpeed run; hf/ is the fine-tuned checkpoint
    candidates/            a scratch registry: the candidate built with the parity
                           gate (and the base model, when there is no production)
    evaluations/           HumanEval results of the candidate and the baseline
    gate/                  gate.json, report.md, report.html, charts

A stage interrupted midway is run again from its start, except the
fine-tune, which resumes from its last checkpoint, and promotion, which is
resumable by design (acepilot/training/eval/promotion.py). `--restart-from STAGE`
forgets that stage's marker and those after it.

The baseline is the production version of `name`; when the registry has
none yet, the base checkpoint (`init_from`), built and evaluated the same
way, so a fine-tune is never promoted without beating what it started from.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from acepilot.server.errors import AcepilotError

log = logging.getLogger(__name__)

STAGES = ("corpus", "finetune", "build", "evaluate", "gate", "promote")
CONFIG_RECORD = "pipeline.json"


class PipelineError(AcepilotError):
    """A stage failed or the run cannot resume as configured."""


def _all_languages() -> list[str]:
    from acepilot.training.eval.toolchains import LANGUAGES

    return list(LANGUAGES)


@dataclass(frozen=True)
class PipelineConfig:
    name: str = ""  # registry model name the candidate is promoted into
    registry: str = ""  # registry directory ("" = $ACEPILOT_REGISTRY, else the default)
    work_dir: str = "pipeline-run"  # markers and every stage's output
    init_from: str = ""  # base checkpoint (Hugging Face directory) to fine-tune
    corpus: list = field(default_factory=list)  # `train corpus` settings: files, --key=value
    finetune: list = field(default_factory=list)  # `train finetune` settings (no init_from...)
    precision: str = "int4"  # build precision of the candidate (what is evaluated and served)
    device: str = "cpu"  # build target device
    eval_data: str = ""  # HumanEval-X source ("" = $ACEPILOT_HUMANEVAL_X, else THUDM/humaneval-x)
    eval_languages: list = field(default_factory=_all_languages)  # HumanEval-X languages
    eval_samples: int = 1  # samples per problem
    eval_temperature: float = 0.0  # 0 = greedy
    eval_max_new_tokens: int = 512  # per completion
    eval_limit: int = 0  # problems per language (0 = all 164)
    eval_workers: int = 2  # parallel sandboxed executions
    eval_timeout: float = 10.0  # seconds per test run
    completion_positions: int = 0  # line completion on held-out repos (0 = off)
    completion_paths: list = field(default_factory=list)  # more held-out code for it (dirs)
    gate: list = field(default_factory=list)  # gate policy: config files and key=value overrides
    progress: bool = True  # progress bars


def config_hash(config: PipelineConfig) -> str:
    record = dataclasses.asdict(config)
    record.pop("progress")
    if not record["completion_paths"]:
        del record["completion_paths"]  # added later: runs made before it keep their hash
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:16]


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_suffix(path.suffix + ".tmp")
    with temp.open("w", encoding="utf-8") as handle:
        handle.write(json.dumps(data, indent=2) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, path)


class Pipeline:
    """Runs the stages in order, skipping those with a marker (see the module docstring)."""

    def __init__(self, config: PipelineConfig) -> None:
        if not config.name:
            raise PipelineError("set name (the registry model to promote into)")
        if not config.init_from:
            raise PipelineError("set init_from (the base checkpoint to fine-tune)")
        self.config = config
        self.work = Path(config.work_dir).expanduser().resolve()
        self.markers = self.work / "stages"

    def registry(self) -> Any:
        from acepilot.server.registry import Registry

        return Registry(self.config.registry or None)

    def marker(self, stage: str) -> dict[str, Any] | None:
        path = self.markers / f"{stage}.json"
        if not path.is_file():
            return None
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        return data

    def outputs(self, stage: str) -> dict[str, Any]:
        marker = self.marker(stage)
        if marker is None:
            raise PipelineError(f"stage {stage} has not run")
        return dict(marker["outputs"])

    def prepare(self, restart_from: str | None) -> None:
        self.work.mkdir(parents=True, exist_ok=True)
        record = self.work / CONFIG_RECORD
        key = config_hash(self.config)
        if restart_from is not None:
            if restart_from not in STAGES:
                raise PipelineError(f"--restart-from must be one of {', '.join(STAGES)}")
            for stage in STAGES[STAGES.index(restart_from) :]:
                (self.markers / f"{stage}.json").unlink(missing_ok=True)
        if record.is_file():
            previous = json.loads(record.read_text(encoding="utf-8"))
            done = [s for s in STAGES if self.marker(s) is not None]
            if previous.get("hash") != key and done:
                raise PipelineError(
                    f"{self.work}: the config changed since stages {', '.join(done)} ran; use "
                    "another work_dir, or --restart-from the first stage the change affects"
                )
        write_json(record, {"hash": key, "config": dataclasses.asdict(self.config)})

    def run(self, restart_from: str | None = None) -> dict[str, Any]:
        self.prepare(restart_from)
        actions: dict[str, Callable[[], dict[str, Any]]] = {
            "corpus": self.corpus,
            "finetune": self.finetune,
            "build": self.build,
            "evaluate": self.evaluate,
            "gate": self.gate,
            "promote": self.promote,
        }
        for stage in STAGES:
            if self.marker(stage) is not None:
                print(f"pipeline: {stage}: done earlier, skipped")
                continue
            print(f"pipeline: {stage} ...")
            started = time.monotonic()
            outputs = actions[stage]()
            write_json(
                self.markers / f"{stage}.json",
                {
                    "stage": stage,
                    "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "seconds": round(time.monotonic() - started, 1),
                    "outputs": outputs,
                },
            )
            print(f"pipeline: {stage}: done ({json.dumps(outputs)[:300]})")
            if stage == "gate" and not outputs["promote"]:
                raise PipelineError(
                    "the gate rejected the candidate: "
                    + "; ".join(outputs["reasons"])
                    + f" (report: {outputs['report']})"
                )
        return {stage: self.outputs(stage) for stage in STAGES}

    # ---- stages ----------------------------------------------------------

    def corpus(self) -> dict[str, Any]:
        from acepilot.training.config import configure
        from acepilot.training.corpus.build import CorpusConfig, build_corpus

        settings = [*self.config.corpus, f"--out_dir={self.work / 'corpora'}"]
        if not any(str(s).startswith("--tokenizer") for s in settings):
            settings.append(f"--tokenizer={self.config.init_from}")
        if not any(str(s).startswith("--progress") for s in settings):
            settings.append(f"--progress={self.config.progress}")
        corpus = build_corpus(configure(CorpusConfig(), settings))
        return {"corpus": str(corpus)}

    def finetune(self) -> dict[str, Any]:
        from acepilot.training.config import configure
        from acepilot.training.finetune.launch import launch
        from acepilot.training.finetune.train import FinetuneConfig, check

        out = self.work / "finetune"
        settings = [
            *self.config.finetune,
            f"--init_from={self.config.init_from}",
            f"--data_dir={self.outputs('corpus')['corpus']}",
            f"--out_dir={out}",
        ]
        config = configure(FinetuneConfig(), settings)
        check(config)
        status = launch(config)
        if status != 0 or not (out / "hf").is_dir():
            raise PipelineError(f"fine-tuning failed (exit {status}); see {out}")
        return {"checkpoint": str(out / "hf")}

    def scratch(self) -> Any:
        from acepilot.server.registry import Registry

        return Registry(self.work / "candidates")

    def build(self) -> dict[str, Any]:
        from acepilot.server.build.pipeline import build_model

        entry = build_model(
            self.outputs("finetune")["checkpoint"],
            precision=self.config.precision,
            device=self.config.device,
            registry=self.scratch(),
            name=self.config.name,
            parity="enforce",
            progress=self.config.progress,
        )
        return {"entry": str(entry.path), "version": entry.version}

    def eval_config(self) -> Any:
        from acepilot.training.eval.generate import Sampling
        from acepilot.training.eval.humaneval import HumanEvalConfig

        config = HumanEvalConfig(
            languages=tuple(self.config.eval_languages),
            sampling=Sampling(
                n=self.config.eval_samples,
                temperature=self.config.eval_temperature,
                max_new_tokens=self.config.eval_max_new_tokens,
            ),
            ks=(1, 10, 100),
            limit=self.config.eval_limit or None,
            workers=self.config.eval_workers,
            timeout_s=self.config.eval_timeout,
            progress=self.config.progress,
        )
        if self.config.eval_data:
            config = dataclasses.replace(config, data=self.config.eval_data)
        return config

    def baseline_ref(self) -> str:
        registry = self.registry()
        version = registry.production(self.config.name)
        if version is not None:
            return str(registry.entry(self.config.name, version).path)
        from acepilot.server.build.pipeline import build_model

        scratch = self.scratch()
        base_name = f"{self.config.name}-base"
        if scratch.versions(base_name):
            return str(scratch.resolve(base_name).path)
        entry = build_model(
            self.config.init_from,
            precision=self.config.precision,
            device=self.config.device,
            registry=scratch,
            name=base_name,
            parity="enforce",
            progress=self.config.progress,
        )
        return str(entry.path)

    def evaluate(self) -> dict[str, Any]:
        candidate = self.results(self.outputs("build")["entry"], "candidate")
        base_ref = self.baseline_ref()
        baseline = self.results(base_ref, "baseline")
        return {
            "candidate": candidate.source,
            "baseline": baseline.source,
            "baseline_model": base_ref,
        }

    def results(self, ref: str, label: str) -> Any:
        from acepilot.training.eval.workflow import results_for

        return results_for(
            ref,
            label,
            self.registry(),
            self.eval_config(),
            self.work / "evaluations",
            completion=self.completion_settings(),
        )

    def completion_settings(self) -> Any:
        """The held-out repositories' files (the corpus's validation split), written out
        as a tree, and `completion_paths` (code of other languages, e.g. HumanEval-X's
        reference programs, to see what the fine-tune did to them), for line completion;
        None when switched off."""
        if self.config.completion_positions <= 0:
            return None
        import gzip

        from acepilot.training.eval.indomain import CompletionSettings

        corpus = Path(self.outputs("corpus")["corpus"])
        held_out = self.work / "heldout"
        if not held_out.is_dir():
            temp = self.work / "heldout.partial"
            shutil.rmtree(temp, ignore_errors=True)
            temp.mkdir(parents=True)
            with gzip.open(corpus / "validation_files.jsonl.gz", "rt", encoding="utf-8") as f:
                for line in f:
                    doc = json.loads(line)
                    repo = Path(str(doc["repo"])).name or "repo"
                    target = (temp / repo / str(doc["path"])).resolve()
                    if not target.is_relative_to(temp.resolve()):
                        continue  # a path that would leave the tree
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_text(doc["text"], encoding="utf-8")
            os.replace(temp, held_out)
        extra = tuple(str(Path(p).expanduser()) for p in self.config.completion_paths)
        return CompletionSettings((str(held_out), *extra), self.config.completion_positions)

    def gate(self) -> dict[str, Any]:
        from acepilot.training.eval.gate import decide, production_record, write_report
        from acepilot.training.eval.workflow import load_policy

        # Promotion refuses this gate if production is no longer this (or is not the
        # model the baseline was evaluated with): `--restart-from evaluate` then.
        production = production_record(self.registry(), self.config.name)
        outputs = self.outputs("evaluate")
        files = [s for s in self.config.gate if "=" not in str(s)]
        overrides = [s for s in self.config.gate if "=" in str(s)]
        policy = load_policy(files, overrides)
        candidate = self.results(outputs["candidate"], "candidate")
        base = Path(outputs["baseline_model"])
        baseline = self.results(outputs["baseline"], f"{base.parent.name}@{base.name}")
        decision = decide(candidate, baseline, policy, production=production)
        write_report(decision, self.work / "gate")
        return {
            "promote": decision.promote,
            "reasons": decision.reasons,
            "report": str(self.work / "gate" / "report.html"),
        }

    def promote(self) -> dict[str, Any]:
        from acepilot.training.eval.promotion import promote

        result = promote(
            self.work / "gate",
            self.registry(),
            self.config.name,
            precision=self.config.precision,
            device=self.config.device,
            progress=self.config.progress,
        )
        return {"name": result.name, "version": result.version, "previous": result.previous}
