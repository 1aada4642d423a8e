"""Line-completion scoring on constructed inputs with known answers."""

from __future__ import annotations

import pytest

from acepilot.training.eval import line_metrics as lm
from acepilot.training.eval.line_tasks import LineTask


def test_levenshtein_and_edit_similarity_known_values() -> None:
    assert lm.levenshtein("kitten", "sitting") == 3
    assert lm.levenshtein("", "abc") == 3
    assert lm.levenshtein("abc", "") == 3
    assert lm.levenshtein("flaw", "lawn") == 2
    assert lm.levenshtein("same", "same") == 0
    assert lm.edit_similarity("kitten", "sitting") == pytest.approx(1 - 3 / 7)
    assert lm.edit_similarity("", "") == 1.0
    assert lm.edit_similarity("", "abcd") == 0.0
    assert lm.edit_similarity("abcd", "abcd") == 1.0
    assert lm.edit_similarity("ab", "abcd") == pytest.approx(0.5)
    # only the first line counts, and trailing whitespace does not
    assert lm.edit_similarity("foo(x)  \nmore lines", "foo(x)") == 1.0


def test_exact_match_ignores_only_trailing_whitespace() -> None:
    assert lm.exact_match("foo(x)  ", "foo(x)")
    assert lm.exact_match("return a\nb = 2", "return a")
    assert not lm.exact_match(" 1", "1")  # after `x =` the space is part of the answer
    assert not lm.exact_match("foo(x", "foo(x)")
    assert lm.exact_match("", "   ")


def test_evaluate_groups_by_language_and_domain() -> None:
    tasks = [
        LineTask("a/x.py", "python", "a", 1, 1, "", "return 1"),
        LineTask("a/y.py", "python", "a", 2, 5, "", "foo(bar)"),
        LineTask("b/z.js", "javascript", "b", 3, 3, "", "x + 1;"),
    ]
    by_prefix = iter(["return 1", "foo(baz)", ""])
    reports = lm.evaluate(
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
    table = lm.format_table({k: v.to_dict() for k, v in reports.items()}, "languages")
    assert "javascript" in table and "scripted" in table and "33.3%" not in table
    assert "33.3%" in lm.format_table({"scripted": scripted})
