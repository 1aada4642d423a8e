"""bench/infill_replay.py's llama.vscode client logic: the /infill body, its LRU, the document.

Model-free: what llama.vscode (ggml-org/llama.vscode src/completion.ts and
src/llama-server.ts) would post at a cursor position, checked on small documents
where the answer is known by hand. The benchmark itself runs llama-server.
"""

from __future__ import annotations

import asyncio
import random
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository's `bench`

from bench.infill_replay import (
    DocumentMirror,
    Infill,
    ResultCache,
    VscodeSettings,
    apply_edit,
    infill_request,
    suggestion,
)
from bench.typing_replay import Measures, Task, keystrokes, type_session

DOC = ["import os", "", "def f(x):", "    y = x + 1", "    return y", ""]


def test_prefix_lines_above_suffix_rest_of_line_and_lines_below() -> None:
    request = infill_request(DOC, 3, 9, VscodeSettings())
    assert request is not None
    assert request.input_prefix == "import os\n\ndef f(x):\n"
    assert request.prompt == "    y = x"
    assert request.input_suffix == " + 1\n    return y\n\n"
    body = request.body
    assert body["input_prefix"] == request.input_prefix
    assert body["input_suffix"] == request.input_suffix
    assert body["prompt"] == "    y = x"
    assert body["input_extra"] == []
    assert body["id_slot"] == 0
    assert body["cache_prompt"] is True
    assert body["stream"] is False
    assert body["samplers"] == ["top_k", "top_p", "infill"]
    assert (body["n_predict"], body["n_cmpl"], body["top_k"], body["top_p"]) == (128, 3, 40, 0.99)
    assert (body["t_max_prompt_ms"], body["t_max_predict_ms"]) == (500, 500)
    assert body["n_indent"] == 4


def test_windows_are_counted_in_lines() -> None:
    lines = [f"line {i}" for i in range(10)]
    request = infill_request(lines, 5, 6, VscodeSettings(n_prefix=2, n_suffix=3))
    assert request is not None
    assert request.input_prefix == "line 3\nline 4\n"
    assert request.input_suffix == "\nline 6\nline 7\nline 8\n"
    near_end = infill_request(lines, 8, 6, VscodeSettings(n_prefix=2, n_suffix=3))
    assert near_end is not None
    assert near_end.input_suffix == "\nline 9\n"  # clipped at the last line


def test_indentation_only_sends_an_empty_prompt_and_no_indent_field_at_column_zero() -> None:
    lines = ["def f():", "        ", "    pass"]
    request = infill_request(lines, 1, 8, VscodeSettings())
    assert request is not None
    assert request.prompt == ""
    assert request.body["n_indent"] == 8
    top = infill_request(["x = 1", ""], 1, 0, VscodeSettings())
    assert top is not None
    assert "n_indent" not in top.body


def test_no_request_with_a_long_line_suffix() -> None:
    lines = ["call(first_argument, second)"]
    assert infill_request(lines, 0, 5, VscodeSettings()) is None  # 23 characters after
    assert infill_request(lines, 0, 20, VscodeSettings()) is not None  # 8: still asks


def test_settings_reach_the_body() -> None:
    settings = VscodeSettings(n_predict=16, n_cmpl=1, top_k=1)
    request = infill_request(DOC, 4, 12, settings, chunks=[{"text": "a", "filename": "b.py"}])
    assert request is not None
    assert (request.body["n_predict"], request.body["n_cmpl"], request.body["top_k"]) == (16, 1, 1)
    assert request.body["input_extra"] == [{"text": "a", "filename": "b.py"}]


def infill(prefix: str, suffix: str, prompt: str) -> Infill:
    return Infill(prefix, suffix, prompt, {})


def test_result_cache_answers_the_same_state_and_typing_ahead() -> None:
    cache = ResultCache()
    cache.put(infill("p", "s", "    y = ").key, ["x + 1", "z"])
    assert cache.lookup(infill("p", "s", "    y = ")) == ["x + 1", "z"]
    # The user typed "x " of the first completion: its rest answers.
    assert cache.lookup(infill("p", "s", "    y = x ")) == ["+ 1"]
    # Typed something no cached completion starts with: a miss.
    assert cache.lookup(infill("p", "s", "    y = q")) is None
    # Another prefix (a line was added above): a miss.
    assert cache.lookup(infill("p2", "s", "    y = x")) is None


def test_result_cache_evicts_the_least_recently_used() -> None:
    cache = ResultCache(capacity=2)
    cache.put("a", ["1"])
    cache.put("b", ["2"])
    assert cache.get("a") == ["1"]  # a is now the most recent
    cache.put("c", ["3"])
    assert cache.get("b") is None
    assert cache.get("a") == ["1"] and cache.get("c") == ["3"]


def test_suggestion_keeps_what_llama_vscode_shows() -> None:
    assert suggestion("foo(x)\n\n", "") == "foo(x)"
    assert suggestion("a\nb\n", "") == "a\nb"
    assert suggestion("\n  \n", "") is None
    assert suggestion("", "") is None
    assert suggestion(")", ")") is None  # only repeats the line's suffix
    assert suggestion("x + 1)", ")") == "x + 1"  # the suffix is not repeated
    assert suggestion("x\ny", ")") == "x"  # a suffix on the line: first line only


def test_apply_edit_inserts_replaces_and_joins_lines() -> None:
    lines = ["def f():", "    pass", ""]
    apply_edit(lines, (1, 4), (1, 8), "")
    assert lines == ["def f():", "    ", ""]
    apply_edit(lines, (1, 4), (1, 4), "return 1\n    ")
    assert lines == ["def f():", "    return 1", "    ", ""]
    apply_edit(lines, (0, 8), (2, 4), "")
    assert lines == ["def f():", ""]


# ---- the typist (bench/typing_replay.py's type_session) against a recording editor ----


class RecordingEditor(DocumentMirror):
    """Keeps the documents as the llama.vscode client does; answers after `answer_s`
    (None: never), so the typist's cancel-at-next-keystroke logic can be counted."""

    def __init__(self, answer_s: float | None) -> None:
        super().__init__()
        self.measures = Measures()
        self.answer_s = answer_s
        self.requests: list[tuple[str, int, int, str]] = []
        self.cancelled: list[str] = []

    def request(self, uri: str, line: int, column: int) -> tuple[str, asyncio.Future[Any], float]:
        msg_id = f"r{len(self.requests)}"
        self.requests.append((uri, line, column, self.documents[uri][line][:column]))
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.answer_s is not None:
            asyncio.get_running_loop().call_later(self.answer_s, future.set_result, [])
        self.measures.sent += 1
        return msg_id, future, 0.0

    def cancel(self, msg_id: str) -> None:
        self.cancelled.append(msg_id)


def small_task(tmp_path: Path) -> tuple[Task, str]:
    text = "def f(x):\n    y = x\n    return y\n"
    path = tmp_path / "m.py"
    path.write_text(text)
    return Task(path, "f", (0, 9), (2, 12), "\n    y = x\n    return y"), text


def expected_requests(task: Task, seed: int, debounce_s: float) -> int:
    keys = keystrokes(task, random.Random(seed))
    following = [key.gap for key in keys[1:]] + [2.0]
    return sum(gap > debounce_s for gap in following)


def test_typist_retypes_the_body_and_cancels_every_unanswered_request(tmp_path: Path) -> None:
    task, text = small_task(tmp_path)
    editor = RecordingEditor(answer_s=None)
    asyncio.run(type_session(editor, [task], seed=3, duration=600, debounce_ms=50))
    assert "\n".join(editor.documents[task.path.as_uri()]) == text
    assert editor.measures.typed == len(keystrokes(task, random.Random(3)))
    assert len(editor.requests) == expected_requests(task, 3, 0.05)
    assert len(editor.cancelled) == len(editor.requests)  # none answered: all cancelled
    # Each request asks at the cursor, after the key typed: its line ends there.
    for uri, line, column, before in editor.requests:
        assert before == editor.documents[uri][line][:column]


def test_patient_typist_waits_for_the_answer_at_long_pauses(tmp_path: Path) -> None:
    task, _ = small_task(tmp_path)
    keys = keystrokes(task, random.Random(3))
    long_pauses = sum(gap >= 0.4 for gap in [key.gap for key in keys[1:]] + [2.0])
    assert long_pauses > 0
    editor = RecordingEditor(answer_s=1.3)  # slower than every pause but the last look (1.5 s)
    asyncio.run(type_session(editor, [task], seed=3, duration=600, debounce_ms=50, patient_s=0.4))
    answered = len(editor.requests) - len(editor.cancelled)
    assert answered == long_pauses
