"""Line-completion predictors: the baselines and whitespace healing.

The model predictors run end to end through a built model in
tests/training/test_bootstrap.py, on the small acepilot-tiny.
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer

from acepilot.training.eval import line_predictors as lp
from acepilot.training.eval.line_metrics import edit_similarity
from acepilot.training.perplexity import BigramModel
from acepilot.training.tokenizer import train_tokenizer


def test_repeat_previous_line_baseline() -> None:
    prefix = "def f():\n    x = compute(1)\n\n    x"
    assert lp.repeat_previous_line(prefix) == " = compute(1)"
    assert lp.repeat_previous_line("    items.append(a)\n    ") == "items.append(a)"
    assert lp.repeat_previous_line("first line") == ""  # no previous line
    assert lp.repeat_previous_line("ab\nlonger than ab") == ""  # cursor past its end


def test_whitespace_healing() -> None:
    """A prompt ending in whitespace is cut back; the model must write the cut part first."""
    assert lp.split_trailing_whitespace("if x:\n        ") == ("if x:", "\n        ")
    assert lp.split_trailing_whitespace("y = f(a, ") == ("y = f(a,", " ")
    assert lp.split_trailing_whitespace("y = f(a") == ("y = f(a", "")
    state = lp.HealedLine("\n    ")
    assert not state.add("\n  ")  # still writing the indentation
    assert not state.add("  return")
    assert state.add(" x\n    y")  # the line is complete
    assert state.line() == "return x"
    wrong = lp.HealedLine("\n    ")
    assert wrong.add("\n\n")  # another indentation: decided, and no prediction
    assert wrong.line() == ""
    plain = lp.HealedLine("")
    assert not plain.add("foo(") and plain.add("x)\n") and plain.line() == "foo(x)"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, "utf-8")
    return path


def test_bigram_predictor_continues_the_line(tmp_path: Path) -> None:
    corpus = write(tmp_path / "c.py", "total = 0\nfor item in items:\n    total += item\n" * 60)
    train_tokenizer([corpus.read_text()], 300, tmp_path / "tok")
    tokenizer = Tokenizer.from_file(str(tmp_path / "tok" / "tokenizer.json"))
    ids = tokenizer.encode(corpus.read_text()).ids
    predict = lp.bigram_predictor(BigramModel(ids, tokenizer.get_vocab_size()), tokenizer)
    prediction = predict("total = 0\nfor item in")
    assert "\n" not in prediction
    assert edit_similarity(prediction, " items:") >= 0.5, prediction
