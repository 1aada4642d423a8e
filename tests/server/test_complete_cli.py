"""`acepilot complete PATH --line L --column C` end to end on a built model.

The completion itself is the editor's (tests/server/lsp/test_lsp_headless.py
checks CLI == language server); here: the command line, positions, errors.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from engine_fixtures import TINY_NAME, built_tiny_entry, built_tiny_registry  # noqa: F401

from acepilot.server.cli import main
from acepilot.server.engine import Engine
from acepilot.server.errors import AcepilotError
from acepilot.server.lsp.headless import cursor_position
from acepilot.server.registry import Registry

HEADER = "# Path: sample.py\n# Language: python\n"  # the editor's prompt header

SOURCE = '''import os


def read_lines(path):
    """Return the lines of a file."""
    with open(path) as handle:
        return handle.read().splitlines()


def count_words(text):
    total = 0
    for line in text.splitlines():
        '''


def write_source(tmp_path: Path, text: str = SOURCE) -> Path:
    path = tmp_path / "sample.py"
    path.write_text(text, encoding="utf-8")
    return path


def end_of_file(text: str) -> tuple[int, int]:
    lines = text.split("\n")
    return len(lines), len(lines[-1]) + 1


def test_complete_prints_the_completion_of_its_json(
    built_tiny_registry,  # noqa: F811
    tmp_path,
    capsys,
) -> None:
    path = write_source(tmp_path)
    line, column = end_of_file(SOURCE)
    args = ["complete", str(path), "--line", str(line), "--column", str(column)]
    args += ["--registry", str(built_tiny_registry), "--model", TINY_NAME, "--max-tokens", "24"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert main([*args, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert printed == result["completion"] + "\n"
    assert result["generated_tokens"] >= 1


def test_complete_in_the_middle_of_a_line_prompts_like_the_editor(
    built_tiny_registry,  # noqa: F811
    tmp_path,
    capsys,
) -> None:
    path = write_source(tmp_path)
    # Line 7, after "        return handle.": a model without FIM gets the text before it.
    args = ["complete", str(path), "--line", "7", "--column", "23", "--json"]
    args += ["--registry", str(built_tiny_registry), "--max-tokens", "8", "--root", str(tmp_path)]
    assert main(args) == 0  # the registry's only model is the default
    result = json.loads(capsys.readouterr().out)
    assert result["model"] == f"{TINY_NAME} v1"
    assert result["finish_reason"] in ("length", "eos", "stop")
    engine = Engine.load(Registry(built_tiny_registry).resolve(TINY_NAME), verify=False)
    line, column = cursor_position(SOURCE, 7, 23, path)
    prefix = "".join(SOURCE.splitlines(keepends=True)[:line]) + SOURCE.splitlines()[line][:column]
    assert prefix.endswith("        return handle.")
    assert result["prompt_tokens"] == len(engine.encode(HEADER + prefix))


GEOMETRY = '''def scale_vector(vector, factor):
    """Multiply each component of `vector` by `factor`."""
    return [component * factor for component in vector]
'''
APP = """from pkg.geometry import scale_vector
from hidden import leaked_secret_helper


def main(values):
    doubled = scale_vector(values, 2)
    shifted = leaked_secret_helper(doubled)
    result = """


def write_workspace(root: Path) -> Path:
    """app.py imports pkg/geometry.py and hidden.py, which .gitignore excludes."""
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "geometry.py").write_text(GEOMETRY, encoding="utf-8")
    (root / "hidden.py").write_text("def leaked_secret_helper(v):\n    return v\n", "utf-8")
    (root / ".gitignore").write_text("hidden.py\n", encoding="utf-8")
    app = root / "app.py"
    app.write_text(APP, encoding="utf-8")
    return app


def test_workspace_context_and_explain(
    built_tiny_registry,  # noqa: F811
    tmp_path,
    capsys,
) -> None:
    app = write_workspace(tmp_path / "ws")
    line, column = end_of_file(APP)
    args = ["complete", str(app), "--line", str(line), "--column", str(column)]
    args += ["--registry", str(built_tiny_registry), "--max-tokens", "4"]
    args += ["--workspace", str(tmp_path / "ws"), "--explain"]
    assert main([*args, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    parts = result["parts"]
    kinds = [part["kind"] for part in parts]
    assert kinds[-1] == "prefix" and "header" in kinds
    assert kinds.index("context") < kinds.index("header")  # other files first, stable head
    context = [part for part in parts if part["kind"] == "context"]
    definition = [part for part in context if "def scale_vector(vector, factor):" in part["text"]]
    assert definition and definition[0]["path"] == "pkg/geometry.py"
    assert definition[0]["source"] in ("imported_definition", "near_cursor_symbol")
    assert all(part["tokens"] > 0 for part in parts)
    assert not any(part["path"] == "hidden.py" for part in parts)  # .gitignore'd: never indexed
    assert parts[-1]["text"].endswith("    result = ")

    assert main(args) == 0  # the plain --explain: a line per part, then the completion
    printed = capsys.readouterr().out
    assert f"=== context {definition[0]['source']} pkg/geometry.py:1-" in printed
    assert "=== prefix app.py (" in printed and "=== completion\n" in printed
    assert "leaked_secret_helper(v):" not in printed

    # Without --workspace: no index, today's prompt (header first).
    plain_args = [a for a in args if a not in ("--workspace", str(tmp_path / "ws"))]
    assert main([*plain_args, "--json"]) == 0
    parts = json.loads(capsys.readouterr().out)["parts"]
    assert [part["kind"] for part in parts] == ["header", "prefix"]


def test_workspace_must_be_a_directory(built_tiny_registry, tmp_path, capsys) -> None:  # noqa: F811
    path = write_source(tmp_path)
    args = ["complete", str(path), "--line", "1", "--column", "1"]
    args += ["--registry", str(built_tiny_registry), "--workspace", str(tmp_path / "nope")]
    assert main(args) != 0
    assert "not a directory (--workspace)" in capsys.readouterr().err


def test_the_console_script_runs_end_to_end(built_tiny_registry, tmp_path) -> None:  # noqa: F811
    path = write_source(tmp_path)
    line, column = end_of_file(SOURCE)
    acepilot = shutil.which("acepilot", path=str(Path(sys.executable).parent)) or "acepilot"
    env = dict(os.environ, ACEPILOT_REGISTRY=str(built_tiny_registry), ACEPILOT_MODEL=TINY_NAME)
    result = subprocess.run(
        [acepilot, "complete", str(path), "--line", str(line), "--column", str(column)]
        + ["--max-tokens", "8", "--threads", "1", "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["prompt_tokens"] > 10


@pytest.mark.parametrize(
    ("line", "column", "message"),
    [
        (99, 1, "line 99 is out of range (the file has 13 lines)"),
        (1, 11, "column 11 is out of range on line 1 (it has 9 characters; "),
        (2, 2, "column 2 is out of range on line 2 (it has 0 characters; "),
    ],
)
def test_out_of_range_positions_are_clear_errors(tmp_path, capsys, line, column, message) -> None:
    path = write_source(tmp_path)
    args = ["complete", str(path), "--line", str(line), "--column", str(column)]
    assert main(args + ["--registry", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


@pytest.mark.parametrize("value", ["0", "-3", "x"])
def test_positions_must_be_positive_integers(tmp_path, capsys, value) -> None:
    path = write_source(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["complete", str(path), "--line", value, "--column", "1"])
    assert exit_info.value.code == 2
    assert "expected a positive integer" in capsys.readouterr().err


def test_unreadable_files_are_clear_errors(tmp_path, capsys) -> None:
    binary = tmp_path / "binary.py"
    binary.write_bytes(b"x = '\xff\xfe'\n")
    cases = [
        (tmp_path / "missing.py", "no such file"),
        (tmp_path, "is a directory"),
        (binary, "not UTF-8 text"),
    ]
    for path, message in cases:
        assert main(["complete", str(path), "--line", "1", "--column", "1"]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err


def test_model_choice_errors(tmp_path, capsys, built_tiny_registry) -> None:  # noqa: F811
    path = write_source(tmp_path)
    base = ["complete", str(path), "--line", "1", "--column", "1"]
    assert main(base + ["--registry", str(tmp_path / "empty")]) == 2
    assert "no models in" in capsys.readouterr().err
    assert main(base + ["--registry", str(built_tiny_registry), "--model", "nope"]) == 2
    assert "unknown model 'nope'" in capsys.readouterr().err
    two = tmp_path / "two"
    for name in ("a", "b"):
        shutil.copytree(built_tiny_registry / TINY_NAME, two / name)
    assert main(base + ["--registry", str(two)]) == 2
    assert "several models" in capsys.readouterr().err


def test_help_says_positions_are_one_based(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["complete", "--help"])
    assert "1-based" in capsys.readouterr().out


# ---- positions and cutting, without a model -------------------------------------


def test_cursor_positions_count_characters_and_follow_the_editors_line_breaks() -> None:
    text = "é = 1\r\nxy\n"
    where = Path("t.py")
    assert cursor_position(text, 1, 1, where) == (0, 0)
    assert cursor_position(text, 1, 6, where) == (0, 5)  # end of line 1, before "\r"
    assert cursor_position(text, 2, 3, where) == (1, 2)
    assert cursor_position(text, 3, 1, where) == (2, 0)  # the empty line after the last "\n"
    with pytest.raises(AcepilotError, match="column 7 is out of range"):
        cursor_position(text, 1, 7, where)
