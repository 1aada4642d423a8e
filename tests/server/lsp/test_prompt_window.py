"""The prompt fits the local model's window: the engine never cuts its head (the workspace context).

The engine keeps a too-long prompt's tail. The prompt's head is the workspace
context and the header, so a prompt budget (`contextTokens`) larger than the
model's window less `maxNewTokens` would silently drop exactly the context.
Real engine and tokenizer: the tiny test CodeGen, whose window is 256 tokens.
"""

from __future__ import annotations

from engine_fixtures import built_tiny_entry, built_tiny_registry  # noqa: F401

from acepilot.server.context import ContextChunk
from acepilot.server.engine import Engine
from acepilot.server.lsp.backends import LocalBackend
from acepilot.server.lsp.config import Config
from acepilot.server.lsp.languages import language
from acepilot.server.lsp.pipeline import prompt_budget, workspace_budget
from acepilot.server.lsp.prompt import PromptInput, TokenCounter, build_prompt
from acepilot.server.registry import ModelEntry


def test_a_long_document_keeps_its_context_within_the_models_window(
    built_tiny_entry: ModelEntry,  # noqa: F811
) -> None:
    engine = Engine.load(built_tiny_entry, threads=1, verify=False, warmup=False)
    backend = LocalBackend(engine)
    config = Config(snippet_tokens=0)  # contextTokens 1,024 + maxNewTokens 64 > the 256 window
    assert config.context_tokens + config.max_new_tokens > engine.max_length
    count = TokenCounter(backend.count_tokens)
    budget = prompt_budget(config, backend)
    definition = "def scale_vector(vector, factor):"
    chunk = ContextChunk(
        path="pkg/geometry.py",
        kind="imported_definition",
        text=definition,
        tokens=count(definition),
        score=1.0,
    )
    assert chunk.tokens + count("# Path: pkg/geometry.py\n") <= workspace_budget(config, budget)
    data = PromptInput(
        path="app.py",
        language=language("python"),
        before=[f"value_{i} = scale_vector(values, {i})" for i in range(400)],
        first_line=0,
        line_prefix="result = ",
        line_suffix="",
        context=(chunk,),
    )
    prompt = build_prompt(data, budget, count)
    assert prompt.text.startswith(f"# Path: pkg/geometry.py\n{definition}\n# Path: app.py\n")
    _, cut = engine._prompt_ids(prompt.text, engine.max_length - config.max_new_tokens)
    assert cut == 0  # fed whole: the context is what the model sees first

    asked = Config(context_tokens=128, snippet_tokens=0)  # a smaller setting is kept
    assert prompt_budget(asked, backend) == 128


def test_the_stable_head_is_the_prompt_up_to_the_cursor_line() -> None:
    """What an idle prefill feeds: all of the prompt before the cursor line, FIM or not."""
    from acepilot.server.fim import FimFormat
    from acepilot.server.lsp.prompt import estimate_tokens, stable_head

    data = PromptInput(
        path="app.py",
        language=language("python"),
        before=["import os", "", "def main():"],
        first_line=0,
        line_prefix="    return os.",
        line_suffix="",
        after=["", "main()"],
    )
    plain = build_prompt(data, 256, estimate_tokens)
    assert stable_head(plain) == plain.text.removesuffix("    return os.")
    assert stable_head(plain).endswith("def main():\n")
    fim = FimFormat(prefix="<pre>", suffix="<suf>", middle="<mid>")
    infill = build_prompt(data, 256, estimate_tokens, fim)
    head = stable_head(infill)
    assert "<pre>" in head and head.endswith("def main():\n") and "<suf>" not in head
    assert infill.text.startswith(head)
