"""`acepilot eval humaneval`: multi-language functional correctness, the harness.

    problems (HumanEval-X, per language) -> n completions each (engine / PyTorch /
    canonical) -> program = prompt + completion + tests -> sandbox (parallel)
    -> samples.jsonl (one line per sample) + summary.json (pass@k, intervals)

A language whose toolchain is missing is reported as skipped with the reason
(in the summary and on stderr), never scored as zero. The sandbox failing
(not the code in it) stops the run. Output directory layout:

    samples.jsonl   task_id, language, sample, completion, finish_reason,
                    status (passed / failed / timeout / build_failed), output
                    (bounded), build_s, run_s
    summary.json    model, settings, isolation, toolchains, per-language and
                    overall pass@k with 95% bootstrap intervals, skipped
                    languages, per-problem pass counts (what the gate pairs)
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import queue
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from acepilot.training.eval.data import DataError, default_source, load_problems, task_number
from acepilot.training.eval.generate import Generator, Sample, Sampling
from acepilot.training.eval.languages import (
    LANGUAGES,
    Outcome,
    canonical_language,
    execute,
    find_toolchain,
    finish_completion,
    generation_prompt,
    stop_sequences,
)
from acepilot.training.eval.metrics import summarize
from acepilot.training.eval.sandbox import Limits, Sandbox

log = logging.getLogger(__name__)

SUMMARY = "summary.json"
SAMPLES = "samples.jsonl"
FORMAT = 1


@dataclass(frozen=True)
class HumanEvalConfig:
    """What to evaluate and how; recorded in summary.json."""

    languages: tuple[str, ...] = LANGUAGES
    data: str = field(default_factory=default_source)
    sampling: Sampling = field(default_factory=Sampling)
    ks: tuple[int, ...] = (1, 10, 100)
    limit: int | None = None  # first N problems per language (after `tasks`)
    tasks: tuple[int, ...] = ()  # problem numbers, same in every language
    workers: int = max(1, (os.cpu_count() or 2) // 2)
    timeout_s: float = 10.0  # per test run (wall); CPU seconds the same
    progress: bool = True
    seed: int = 0  # bootstrap seed


def select(problems: list[dict[str, Any]], config: HumanEvalConfig) -> list[dict[str, Any]]:
    if config.tasks:
        wanted = set(config.tasks)
        problems = [p for p in problems if task_number(p["task_id"]) in wanted]
    if config.limit is not None:
        problems = problems[: config.limit]
    return problems


def settings_key(config: HumanEvalConfig) -> str:
    """A hash of everything that changes the results except the model: the gate
    refuses to pair results made with different settings."""
    record = asdict(config)
    for key in ("workers", "progress", "data"):
        record.pop(key)
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:16]


def evaluate(
    generator: Generator,
    config: HumanEvalConfig,
    out_dir: Path,
    *,
    sandbox_root: Path | None = None,
) -> dict[str, Any]:
    """Generate, execute and score; writes samples.jsonl and summary.json into out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    languages = [canonical_language(lang) for lang in config.languages]
    skipped: dict[str, str] = {}
    work: list[tuple[str, dict[str, Any]]] = []
    for language in languages:
        toolchain = find_toolchain(language)
        if toolchain.missing:
            skipped[language] = toolchain.missing
            print(f"acepilot eval: skipping {language}: {toolchain.missing}", file=sys.stderr)
            continue
        for problem in select(load_problems(config.data, language), config):
            work.append((language, problem))
    if not work:
        raise DataError("nothing to evaluate: every language was skipped or selected away")

    generated = generate_all(generator, work, config)
    outcomes = execute_all(work, generated, config, sandbox_root, out_dir)

    counts: dict[str, dict[str, tuple[int, int]]] = {}
    with (out_dir / SAMPLES).open("w", encoding="utf-8") as handle:
        for (language, problem), samples, results in zip(work, generated, outcomes, strict=True):
            task = str(problem["task_id"])
            passed = sum(result.passed for result in results)
            counts.setdefault(language, {})[task] = (len(results), passed)
            for index, (sample, result) in enumerate(zip(samples, results, strict=True)):
                record = {
                    "task_id": task,
                    "language": language,
                    "sample": index,
                    "completion": sample.text,
                    "finish_reason": sample.finish_reason,
                    "status": result.status,
                    "output": result.output,
                    "build_s": round(result.build_s, 3),
                    "run_s": round(result.run_s, 3),
                }
                handle.write(json.dumps(record) + "\n")
    summary = summarize(counts, config.ks, seed=config.seed)
    from acepilot.training.eval.sandbox import probe_isolation

    report = {
        "format": FORMAT,
        "kind": "humaneval",
        "model": generator.description,
        "settings": {
            **{k: v for k, v in asdict(config).items() if k != "sampling"},
            "sampling": asdict(config.sampling),
        },
        "settings_key": settings_key(config),
        "isolation": probe_isolation().describe(),
        "toolchains": {lang: find_toolchain(lang).describe() for lang in languages},
        "skipped": skipped,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **summary,
        "per_problem": {
            language: {task: list(pair) for task, pair in tasks.items()}
            for language, tasks in counts.items()
        },
    }
    temp = out_dir / (SUMMARY + ".tmp")
    temp.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    os.replace(temp, out_dir / SUMMARY)
    return report


def generate_all(
    generator: Generator, work: list[tuple[str, dict[str, Any]]], config: HumanEvalConfig
) -> list[list[Sample]]:
    from tqdm import tqdm

    generated = []
    for language, problem in tqdm(
        work, desc="generate", unit="problem", disable=not config.progress
    ):
        stop = stop_sequences(language)
        prompt = generation_prompt(language, problem)
        samples = generator.generate(prompt, stop, config.sampling, problem)
        generated.append(
            [
                Sample(finish_completion(language, s.text, s.finish_reason), s.finish_reason)
                for s in samples
            ]
        )
    return generated


def execute_all(
    work: list[tuple[str, dict[str, Any]]],
    generated: list[list[Sample]],
    config: HumanEvalConfig,
    sandbox_root: Path | None,
    out_dir: Path,
) -> list[list[Outcome]]:
    """Run every sample in the sandbox on `config.workers` threads (one slot each)."""
    from tqdm import tqdm

    limits = Limits(cpu_s=max(1, int(config.timeout_s)), wall_s=config.timeout_s + 5.0)
    jobs = [
        (i, j, language, problem, sample)
        for i, ((language, problem), samples) in enumerate(zip(work, generated, strict=True))
        for j, sample in enumerate(samples)
    ]
    results: list[list[Outcome | None]] = [[None] * len(s) for s in generated]
    slots: queue.Queue[int] = queue.Queue()
    for slot in range(config.workers):
        slots.put(slot)
    cache = out_dir / ".cache"
    cache.mkdir(exist_ok=True)

    with Sandbox(sandbox_root) as sandbox:

        def run(job: tuple[int, int, str, dict[str, Any], Sample]) -> tuple[int, int, Outcome]:
            i, j, language, problem, sample = job
            slot = slots.get()
            try:
                outcome = execute(
                    sandbox,
                    find_toolchain(language),
                    problem,
                    sample.text,
                    limits=limits,
                    slot=slot,
                    cache_dir=cache,
                )
            finally:
                slots.put(slot)
            return i, j, outcome

        with (
            ThreadPoolExecutor(max_workers=config.workers) as pool,
            tqdm(
                total=len(jobs), desc="execute", unit="sample", disable=not config.progress
            ) as bar,
        ):
            for i, j, outcome in pool.map(run, jobs):
                results[i][j] = outcome
                bar.update()
    return [[r for r in row if r is not None] for row in results]


def load_summary(path: Path) -> dict[str, Any]:
    """A results directory (or its summary.json) -> the summary."""
    file = path / SUMMARY if path.is_dir() else path
    try:
        summary: dict[str, Any] = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{file}: not an evaluation summary ({exc})") from None
    if summary.get("kind") != "humaneval" or "per_problem" not in summary:
        raise ValueError(f"{file}: not a HumanEval summary written by acepilot eval humaneval")
    return summary


def canonical_table(summary: dict[str, Any]) -> str:
    """Per-language canonical pass rate and the failing tasks (the self-check's report)."""
    lines = ["| language | passed | rate | failing tasks |", "|---|---|---|---|"]
    for language, tasks in summary["per_problem"].items():
        failing = sorted((t for t, (n, c) in tasks.items() if c < n), key=task_number)
        passed = sum(1 for n, c in tasks.values() if c == n)
        lines.append(
            f"| {language} | {passed}/{len(tasks)} | {passed / len(tasks):.1%} | "
            f"{', '.join(failing) or '-'} |"
        )
    for language, reason in summary.get("skipped", {}).items():
        lines.append(f"| {language} | skipped | - | {reason} |")
    return "\n".join(lines)


def failing_outputs(out_dir: Path, limit: int = 400) -> list[dict[str, Any]]:
    """The failing samples with their output (for investigating canonical failures)."""
    failed = []
    with (out_dir / SAMPLES).open(encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line)
            if record["status"] != "passed":
                failed.append(
                    {k: record[k] for k in ("task_id", "status")}
                    | {"output": record["output"][:limit]}
                )
    return failed
