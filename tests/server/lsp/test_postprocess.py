"""Post-processing: single vs multi-line, block ends, suffix overlap, junk dropped."""

from __future__ import annotations

from acepilot.server.lsp.languages import language
from acepilot.server.lsp.postprocess import MULTI, SINGLE, Context, decide_mode, postprocess

PY = language("python")
JS = language("javascript")


def test_decide_mode() -> None:
    assert decide_mode("foo(", ")", PY) == SINGLE
    assert decide_mode("def f(x):", "", PY) == MULTI
    assert decide_mode("    ", "", PY) == MULTI
    assert decide_mode("x = 1 +", "", PY) == SINGLE
    assert decide_mode("function f() {", "  ", JS) == MULTI


def test_single_line_to_end_of_line() -> None:
    ctx = Context(PY, "x = compute(", ")")
    assert postprocess("a, b)\nprint(x)", ctx) == "a, b"
    assert postprocess("f(a)) + 1", ctx) == "f(a)"
    assert postprocess(")", ctx) is None  # only re-types the suffix
    assert postprocess("   \n", Context(PY, "x = ", "")) is None


def test_python_block_ends_on_dedent() -> None:
    ctx = Context(PY, "def add(a, b):", "", before=["import os"])
    raw = "\n    total = a + b\n\n    return total\n\nprint(add(1, 2))\n"
    assert postprocess(raw, ctx) == "\n    total = a + b\n\n    return total"


def test_python_call_arguments_keep_closing_paren() -> None:
    ctx = Context(PY, "result = call(", "")
    assert postprocess("\n    1,\n    2,\n)\nmore()", ctx) == "\n    1,\n    2,\n)"


def test_empty_line_in_body_stops_at_dedent() -> None:
    ctx = Context(PY, "    ", "", before=["def f(x):", "    y = x"])
    assert postprocess("return y * 2\n\ndef g():\n    pass", ctx) == "return y * 2"


def test_top_level_one_definition_at_a_time() -> None:
    ctx = Context(PY, "", "")
    raw = "def f():\n    return 1\n\ndef g():\n    return 2\n"
    assert postprocess(raw, ctx) == "def f():\n    return 1"


def test_braces_balance_and_suffix_brace_dropped() -> None:
    ctx = Context(JS, "function f(a) {", "")
    raw = "\n  if (a) {\n    return 1;\n  }\n  return 2;\n}\nfunction g() {}"
    assert postprocess(raw, ctx) == "\n  if (a) {\n    return 1;\n  }\n  return 2;\n}"
    with_brace = Context(JS, "function f(a) {", "", after=["}", ""])
    assert postprocess(raw, with_brace) == "\n  if (a) {\n    return 1;\n  }\n  return 2;"


def test_max_lines_and_repetition() -> None:
    ctx = Context(PY, "def f():", "", max_lines=3)
    assert (
        postprocess("\n    a = 1\n    b = 2\n    c = 3\n    d = 4", ctx) == "\n    a = 1\n    b = 2"
    )
    loop = Context(PY, "def f():", "")
    assert (
        postprocess("\n    x.append(1)\n    x.append(1)\n    x.append(1)\n    x.append(1)", loop)
        == "\n    x.append(1)"
    )


def test_repeating_previous_line_dropped() -> None:
    ctx = Context(PY, "x = ", "", before=["x = compute(1)"])
    assert postprocess("compute(1)", ctx) is None
    assert postprocess("compute(2)", ctx) == "compute(2)"


def test_crlf_written_back() -> None:
    ctx = Context(PY, "def f():", "", eol="\r\n")
    assert postprocess("\r\n    return 1\r\n", ctx) == "\r\n    return 1"


def test_fim_stop_tokens_end_the_text() -> None:
    ctx = Context(PY, "x = ", "")
    stop = ("<|endoftext|>", "<file_sep>")
    assert postprocess("compute()<|endoftext|>junk", ctx, stop=stop) == "compute()"
    assert postprocess("compute()<file_sep>other.py", ctx, stop=stop) == "compute()"
    assert postprocess("<|endoftext|>", ctx, stop=stop) is None


def test_a_fim_middle_that_goes_on_into_the_suffix_stops_before_it() -> None:
    # The model wrote the middle and then the suffix again: the suffix is not repeated.
    ctx = Context(PY, "def f(x):", "", after=["    return y", "", "print(f(1))"])
    assert postprocess("\n    y = x + 1\n    return y\n", ctx) == "\n    y = x + 1"
