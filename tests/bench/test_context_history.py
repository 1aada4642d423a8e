"""bench/context_history.py on a real two-commit git repository: the hunks it reads, the
positions it finds, and a recent edit that holds the definition the next line needs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository's `bench`

from bench.context_history import BUDGETS, hunks, measure


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


def commit_files(repo: Path, files: dict[str, str], message: str) -> None:
    for name, text in files.items():
        (repo / name).write_text(text)
    git(repo, "add", "-A")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@e", "commit", "-qm", message)


def test_a_definition_edited_just_before_is_found_in_the_recent_edits(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    filler = "".join(f"def helper_{i}(x):\n    return x + {i}\n\n\n" for i in range(30))
    commit_files(repo, {"util.py": filler, "main.py": "import util\n"}, "start")
    commit_files(
        repo,
        {"util.py": filler + "def compute_total(items):\n    return sum(items)\n"},
        "define compute_total",
    )
    commit_files(
        repo,
        {"main.py": "from util import compute_total\n\nresult = compute_total([1, 2])\n"},
        "use it",
    )
    last = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "HEAD"], check=True, capture_output=True, text=True
    ).stdout.strip()
    added = hunks(repo, last)
    assert [(h.path, h.line, h.count) for h in added] == [("main.py", 0, 3)]

    hits, total = measure(repo, count=1, previous=1)
    assert total == 1  # `result = compute_total(...)`: the import line is not a use
    for budget in BUDGETS:
        assert hits[("recent edits alone: history", budget)] == 1
        assert hits[("all: history", budget)] == 1
