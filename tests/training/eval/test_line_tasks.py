"""Held-out cursor positions: seeded, cut at the cursor, out of words."""

from __future__ import annotations

from pathlib import Path

import pytest

from acepilot.training.eval import line_tasks as lt


def test_cursor_positions_stay_out_of_words() -> None:
    text = "    foo.bar(x1, y)"
    positions = lt.cursor_positions(text, 4, len(text))
    assert [text[p:] for p in positions] == [
        "foo.bar(x1, y)",
        ".bar(x1, y)",
        "bar(x1, y)",
        "(x1, y)",
        "x1, y)",
        ", y)",
        " y)",
        "y)",
        ")",
    ]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, "utf-8")
    return path


def test_sample_tasks_are_seeded_and_cut_at_the_cursor(tmp_path: Path) -> None:
    python = "import os\n\n\ndef main():\n    print(os.getcwd())\n    return 0\n"
    js = "const a = require('a');\nfunction f(x) {\n  return x + 1;\n}\n"
    write(tmp_path / "pkg" / "mod.py", python)
    write(tmp_path / "web" / "app.js", js)
    write(tmp_path / "top.py", "value = 1\n")
    write(tmp_path / "notes.txt", "not code at all, ignored\n")
    write(tmp_path / "node_modules" / "dep.js", "ignored = 1;\n")
    files = lt.collect_files([tmp_path])
    assert [p.relative_to(tmp_path).as_posix() for _, p in files] == [
        "top.py",
        "pkg/mod.py",
        "web/app.js",
    ]
    tasks = lt.sample_tasks(files, 100, seed=3)
    again = lt.sample_tasks(files, 100, seed=3)
    assert tasks == again
    eligible = 8  # lines with at least 4 non-blank characters
    assert len(tasks) == eligible  # fewer candidates than asked: all of them
    for task in tasks:
        original = (tmp_path / task.path).read_text("utf-8")
        line = original.split("\n")[task.line - 1]
        assert line.endswith(task.target) and task.target
        assert line[: task.column - 1] + task.target == line
        assert original.startswith(task.prefix)  # the whole file before the cursor
        assert task.prefix.endswith(line[: task.column - 1])
        assert task.language == {"py": "python", "js": "javascript"}[task.path.rsplit(".", 1)[1]]
        assert task.domain == {"top.py": "(top level)"}.get(task.path, task.path.split("/")[0])
    assert len(lt.sample_tasks(files, 2, seed=3)) == 2

    long = write(tmp_path / "long" / "big.py", "".join(f"x{i} = {i}\n" for i in range(400)))
    for task in lt.sample_tasks([(tmp_path, long)], 20, seed=0, context_chars=50):
        assert len(task.prefix) <= 50 + len(f"x{task.line} = ")
        assert task.prefix.startswith("x")  # cut at a line start, not mid-line

    with pytest.raises(ValueError, match="no eligible lines"):
        lt.sample_tasks([(tmp_path, write(tmp_path / "e.py", "a\n\n"))], 5, seed=0)
    with pytest.raises(FileNotFoundError):
        lt.collect_files([tmp_path / "missing"])
