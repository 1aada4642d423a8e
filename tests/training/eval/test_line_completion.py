"""Line-completion metrics, positions and baselines on constructed inputs with known answers.

The end-to-end run through a built model (`acepilot eval completion` and the
bootstrap's evaluation) is in tests/training/test_bootstrap.py, on the small acepilot-tiny.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from tokenizers import Tokenizer

from acepilot.training import tiny
from acepilot.training.eval import line_completion as lc


def test_levenshtein_and_edit_similarity_known_values() -> None:
    assert lc.levenshtein("kitten", "sitting") == 3
    assert lc.levenshtein("", "abc") == 3
    assert lc.levenshtein("abc", "") == 3
    assert lc.levenshtein("flaw", "lawn") == 2
    assert lc.levenshtein("same", "same") == 0
    assert lc.edit_similarity("kitten", "sitting") == pytest.approx(1 - 3 / 7)
    assert lc.edit_similarity("", "") == 1.0
    assert lc.edit_similarity("", "abcd") == 0.0
    assert lc.edit_similarity("abcd", "abcd") == 1.0
    assert lc.edit_similarity("ab", "abcd") == pytest.approx(0.5)
    # only the first line counts, and trailing whitespace does not
    assert lc.edit_similarity("foo(x)  \nmore lines", "foo(x)") == 1.0


def test_exact_match_ignores_only_trailing_whitespace() -> None:
    assert lc.exact_match("foo(x)  ", "foo(x)")
    assert lc.exact_match("return a\nb = 2", "return a")
    assert not lc.exact_match(" 1", "1")  # after `x =` the space is part of the answer
    assert not lc.exact_match("foo(x", "foo(x)")
    assert lc.exact_match("", "   ")


def test_repeat_previous_line_baseline() -> None:
    prefix = "def f():\n    x = compute(1)\n\n    x"
    assert lc.repeat_previous_line(prefix) == " = compute(1)"
    assert lc.repeat_previous_line("    items.append(a)\n    ") == "items.append(a)"
    assert lc.repeat_previous_line("first line") == ""  # no previous line
    assert lc.repeat_previous_line("ab\nlonger than ab") == ""  # cursor past its end


def test_cursor_positions_stay_out_of_words() -> None:
    text = "    foo.bar(x1, y)"
    positions = lc.cursor_positions(text, 4, len(text))
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


def test_whitespace_healing() -> None:
    """A prompt ending in whitespace is cut back; the model must write the cut part first."""
    assert lc.split_trailing_whitespace("if x:\n        ") == ("if x:", "\n        ")
    assert lc.split_trailing_whitespace("y = f(a, ") == ("y = f(a,", " ")
    assert lc.split_trailing_whitespace("y = f(a") == ("y = f(a", "")
    state = lc.HealedLine("\n    ")
    assert not state.add("\n  ")  # still writing the indentation
    assert not state.add("  return")
    assert state.add(" x\n    y")  # the line is complete
    assert state.line() == "return x"
    wrong = lc.HealedLine("\n    ")
    assert wrong.add("\n\n")  # another indentation: decided, and no prediction
    assert wrong.line() == ""
    plain = lc.HealedLine("")
    assert not plain.add("foo(") and plain.add("x)\n") and plain.line() == "foo(x)"


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
    files = lc.collect_files([tmp_path])
    assert [p.relative_to(tmp_path).as_posix() for _, p in files] == [
        "top.py",
        "pkg/mod.py",
        "web/app.js",
    ]
    tasks = lc.sample_tasks(files, 100, seed=3)
    again = lc.sample_tasks(files, 100, seed=3)
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
    assert len(lc.sample_tasks(files, 2, seed=3)) == 2

    long = write(tmp_path / "long" / "big.py", "".join(f"x{i} = {i}\n" for i in range(400)))
    for task in lc.sample_tasks([(tmp_path, long)], 20, seed=0, context_chars=50):
        assert len(task.prefix) <= 50 + len(f"x{task.line} = ")
        assert task.prefix.startswith("x")  # cut at a line start, not mid-line

    with pytest.raises(ValueError, match="no eligible lines"):
        lc.sample_tasks([(tmp_path, write(tmp_path / "e.py", "a\n\n"))], 5, seed=0)
    with pytest.raises(FileNotFoundError):
        lc.collect_files([tmp_path / "missing"])


def test_bigram_model_successors_and_perplexity() -> None:
    train = [1, 2, 1, 2, 1, 3, 4, 4, 4, 4]
    model = lc.BigramModel(train, vocab=6)
    assert model.successor[1] == 2  # 1->2 twice, 1->3 once
    assert model.successor[3] == 4 and model.successor[4] == 4
    assert model.successor[5] == 4  # never seen as a context: the commonest token
    assert model.greedy(1, 3) == [2, 1, 2]
    seen = model.cross_entropy([[1, 2, 1, 2]])
    unseen = model.cross_entropy([[5, 0, 5, 0]])
    assert seen < unseen
    with pytest.raises(ValueError):
        lc.BigramModel([1, 9], vocab=4)


def test_bigram_predictor_continues_the_line(tmp_path: Path) -> None:
    corpus = write(tmp_path / "c.py", "total = 0\nfor item in items:\n    total += item\n" * 60)
    tiny.train_tokenizer([corpus], 300, tmp_path / "tok")
    tokenizer = Tokenizer.from_file(str(tmp_path / "tok" / "tokenizer.json"))
    ids = tokenizer.encode(corpus.read_text()).ids
    predict = lc.bigram_predictor(lc.BigramModel(ids, tokenizer.get_vocab_size()), tokenizer)
    prediction = predict("total = 0\nfor item in")
    assert "\n" not in prediction
    assert lc.edit_similarity(prediction, " items:") >= 0.5, prediction


def test_evaluate_groups_by_language_and_domain() -> None:
    tasks = [
        lc.LineTask("a/x.py", "python", "a", 1, 1, "", "return 1"),
        lc.LineTask("a/y.py", "python", "a", 2, 5, "", "foo(bar)"),
        lc.LineTask("b/z.js", "javascript", "b", 3, 3, "", "x + 1;"),
    ]
    by_prefix = iter(["return 1", "foo(baz)", ""])
    reports = lc.evaluate(
        tasks,
        {"scripted": lambda prefix: next(by_prefix), "empty": lambda prefix: ""},
        progress=False,
        keep_examples=2,
    )
    scripted = reports["scripted"].to_dict()
    assert scripted["n"] == 3
    assert scripted["exact_match"] == pytest.approx(1 / 3)
    assert scripted["edit_similarity"] == pytest.approx((1 + 7 / 8 + 0) / 3)
    assert scripted["languages"]["python"]["exact_match"] == 0.5
    assert scripted["languages"]["javascript"]["edit_similarity"] == 0.0
    assert scripted["domains"]["a"]["n"] == 2
    assert reports["empty"].to_dict()["exact_match"] == 0.0
    assert len(reports["scripted"].examples) == 2
    table = lc.format_table({k: v.to_dict() for k, v in reports.items()}, "languages")
    assert "javascript" in table and "scripted" in table and "33.3%" not in table
    assert "33.3%" in lc.format_table({"scripted": scripted})


def test_eval_completion_parser() -> None:
    parser = argparse.ArgumentParser()
    lc.add_parser(parser.add_subparsers())
    args = parser.parse_args(["completion", "acepilot-tiny", "src", "-n", "50", "--seed", "7"])
    assert args.model == "acepilot-tiny" and args.paths == [Path("src")]
    assert args.positions == 50 and args.seed == 7 and args.func is lc.run_completion_eval
