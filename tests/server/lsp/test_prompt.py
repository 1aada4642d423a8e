"""Prompt: header in the file's comment syntax, neighbouring-tab snippets, budgeted prefix, FIM."""

from __future__ import annotations

from dataclasses import replace

from acepilot.server.context import ContextChunk
from acepilot.server.fim import FimFormat, RepoFormat
from acepilot.server.lsp.languages import language
from acepilot.server.lsp.prompt import (
    CUT_STEP,
    Neighbour,
    PromptInput,
    TokenCounter,
    build_prompt,
    jaccard,
    select_snippets,
)

count = TokenCounter(lambda text: len(text.split()) + 1)


def test_header_uses_comment_syntax() -> None:
    for lang, start in (
        ("python", "# Path: a/b.py"),
        ("rust", "// Path: a/b.py"),
        ("html", "<!-- Path: a/b.py -->"),
    ):
        data = PromptInput("a/b.py", language(lang), [], 0, "x = ", "")
        prompt = build_prompt(data, 1000, count)
        assert prompt.text.startswith(start)
        assert prompt.text.endswith("x = ")
    assert (
        "Language: rust"
        in build_prompt(PromptInput("m.rs", language("rust"), [], 0, "", ""), 100, count).text
    )


def test_prefix_cut_at_line_boundary_within_budget() -> None:
    before = [f"line_{i} = {i}" for i in range(200)]
    data = PromptInput("a.py", language("python"), before, 0, "x = ", "")
    prompt = build_prompt(data, 120, count)
    body = prompt.text.split("# Language: python\n", 1)[1]
    assert body.endswith("line_199 = 199\nx = ")
    first = body.split("\n", 1)[0]
    assert first.startswith("line_") and first == before[prompt.prefix_start]
    assert prompt.prefix_start % CUT_STEP == 0  # the head moves in steps
    assert prompt.tokens <= 120


def test_prefix_head_stable_while_typing() -> None:
    before = [f"v{i} = {i}" for i in range(300)]
    starts = set()
    for extra in range(10):
        data = PromptInput("a.py", language("python"), before + ["w"] * extra, 0, "x", "")
        starts.add(build_prompt(data, 200, count).prefix_start)
    assert len(starts) <= 2


def test_huge_single_line_keeps_its_tail() -> None:
    data = PromptInput("a.py", language("python"), [], 0, "y" * 100_000, "")
    prompt = build_prompt(data, 50, TokenCounter())
    assert prompt.text.endswith("y" * 10) and len(prompt.text) < 1000


def test_snippets_by_jaccard_never_current_document() -> None:
    util = [
        "def parse_config(path):",
        "    with open(path) as f:",
        "        return json.load(f)",
    ] + ["pass"] * 30
    other = ["class Unrelated:", "    colour = 'red'"] * 10
    neighbours = [
        Neighbour.from_lines("file:///util.py", "util.py", util),
        Neighbour.from_lines("file:///other.py", "other.py", other),
        Neighbour.from_lines("file:///a.py", "a.py", util),  # the current document
    ]
    query = ["import json", "config = parse_config(path)"]
    chosen = select_snippets(query, neighbours, 200, count, language("python"), "file:///a.py")
    assert [s.path for s in chosen] == ["util.py"]
    data = PromptInput("a.py", language("python"), query, 0, "x", "", snippets=chosen)
    text = build_prompt(data, 500, count).text
    assert "# Compare this snippet from util.py:\n# def parse_config(path):" in text
    assert select_snippets(query, neighbours, 0, count, language("python"), "file:///a.py") == []
    assert jaccard(frozenset("ab"), frozenset("bc")) == 1 / 3


def test_fim_only_when_declared() -> None:
    data = PromptInput(
        "a.py", language("python"), ["def f(x):"], 0, "    return ", "", after=["", "print(f(1))"]
    )
    plain = build_prompt(data, 200, count)
    assert not plain.fim and "<fim" not in plain.text
    fim = FimFormat.from_manifest(
        {"prefix": "<fim_prefix>", "suffix": "<fim_suffix>", "middle": "<fim_middle>"}
    )
    assert (
        fim is not None
        and FimFormat.from_manifest(None) is None
        and FimFormat.from_manifest({"prefix": "x"}) is None
    )
    prompt = build_prompt(data, 200, count, fim)
    assert prompt.fim
    # the header (like any context) before the FIM tokens, only the file's code between
    # them: the training documents' layout and llama.cpp's /infill
    assert prompt.text == (
        "# Path: a.py\n# Language: python\n"
        "<fim_prefix>def f(x):\n    return <fim_suffix>\n\nprint(f(1))<fim_middle>"
    )


def test_separate_suffix_for_the_api_field() -> None:
    data = PromptInput(
        "a.py", language("python"), ["def f(x):"], 0, "    return ", ")", after=["print(f(1))"]
    )
    prompt = build_prompt(data, 200, count, separate_suffix=True)
    assert prompt.text == "# Path: a.py\n# Language: python\ndef f(x):\n    return "
    assert prompt.suffix == ")\nprint(f(1))"
    assert build_prompt(data, 200, count).suffix is None


def test_fim_in_spm_order() -> None:
    data = PromptInput(
        "a.py", language("python"), ["def f(x):"], 0, "    return ", "", after=["", "print(f(1))"]
    )
    fim = FimFormat.from_manifest(
        {
            "prefix": "<fim_prefix>",
            "suffix": "<fim_suffix>",
            "middle": "<fim_middle>",
            "orders": ["psm", "spm"],
            "order": "spm",
            "stop": ["<|endoftext|>"],
        }
    )
    assert fim is not None and fim.stop == ("<|endoftext|>",)
    prompt = build_prompt(data, 200, count, fim)
    assert prompt.text == (
        "# Path: a.py\n# Language: python\n"
        "<fim_prefix><fim_suffix>\n\nprint(f(1))<fim_middle>def f(x):\n    return "
    )


def context_chunks() -> list[ContextChunk]:
    """Two chunks of one file and one of another, as the collector returns them: by (path, line)."""

    def chunk(path: str, start: int, text: str) -> ContextChunk:
        lines = text.count("\n")
        return ContextChunk(
            path=path,
            kind="imported_definition",
            text=text,
            tokens=count(text),
            score=1.0,
            start_line=start,
            end_line=start + lines,
        )

    return [
        chunk("pkg/a.py", 0, "def alpha(x):"),
        chunk("pkg/a.py", 10, "def beta(y):"),
        chunk("pkg/b.py", 3, "class Gamma:"),
    ]


def test_workspace_context_as_path_comments_before_the_header() -> None:
    data = PromptInput("app.py", language("python"), [], 0, "x = ", "", context=context_chunks())
    prompt = build_prompt(data, 1000, count)
    assert prompt.text.startswith(
        "# Path: pkg/a.py\ndef alpha(x):\ndef beta(y):\n# Path: pkg/b.py\nclass Gamma:\n"
        "# Path: app.py\n# Language: python\n"
    )
    kinds = [(part.kind, part.source, part.path) for part in prompt.parts]
    assert kinds == [
        ("context", "imported_definition", "pkg/a.py"),
        ("context", "imported_definition", "pkg/a.py"),
        ("context", "imported_definition", "pkg/b.py"),
        ("header", "header", "app.py"),
        ("prefix", "prefix", "app.py"),
    ]


def test_workspace_context_in_the_models_repository_format() -> None:
    repo = RepoFormat.from_manifest({"file_sep": "<file_sep>"})
    assert repo is not None
    data = PromptInput("app.py", language("python"), [], 0, "x = ", "", context=context_chunks())
    prompt = build_prompt(data, 1000, count, repo=repo)
    assert prompt.text == (
        "<file_sep>pkg/a.py\ndef alpha(x):\ndef beta(y):\n"
        "<file_sep>pkg/b.py\nclass Gamma:\n"
        "<file_sep>app.py\nx = "
    )


def test_repository_prompt_is_laid_out_as_the_training_documents() -> None:
    """Repo name, context files, the current file's separator, then the FIM template: the
    bytes acepilot bootstrap trains on (training/corpus/fim.py) and llama.cpp's /infill."""
    from acepilot.training.corpus.fim import FimTokens, repo_header

    tokens = FimTokens()
    repo = RepoFormat.from_manifest({"repo_name": tokens.repo_name, "file_sep": tokens.file_sep})
    fim = FimFormat.from_manifest(
        {"prefix": tokens.prefix, "suffix": tokens.suffix, "middle": tokens.middle}
    )
    assert repo is not None and fim is not None
    data = PromptInput(
        "app.py",
        language("python"),
        [],
        0,
        "x = ",
        "",
        after=["print(x)"],
        context=context_chunks(),
        repo_name="proj",
    )
    prompt = build_prompt(data, 1000, count, fim, repo=repo)
    context = [("pkg/a.py", "def alpha(x):\ndef beta(y):\n"), ("pkg/b.py", "class Gamma:\n")]
    trained = repo_header(tokens, "proj", context, "app.py")
    assert prompt.text == trained + fim.render("x = ", "\nprint(x)")
    # without the folder's name (a file outside any workspace folder): no repo_name line
    unnamed = build_prompt(replace(data, repo_name=""), 1000, count, fim, repo=repo)
    assert unnamed.text == prompt.text.removeprefix(f"{tokens.repo_name}proj\n")


def test_workspace_context_that_would_crowd_out_the_code_is_dropped() -> None:
    big = [
        ContextChunk(
            path="pkg/big.py",
            kind="bm25",
            text="word " * 400,
            tokens=401,
            score=1.0,
            start_line=0,
            end_line=0,
        )
    ]
    data = PromptInput("app.py", language("python"), ["a = 1"], 0, "x = ", "", context=big)
    prompt = build_prompt(data, 200, count)
    assert "pkg/big.py" not in prompt.text and prompt.text.endswith("a = 1\nx = ")
    assert not any(part.kind == "context" for part in prompt.parts)
