"""Line-completion predictors: the served model (prefix only, or FIM) and two baselines.

A predictor takes the text before the cursor and returns the rest of the line
(`FimPredictor` takes the text after the line too). Every predictor gets the
prompt cut back to its last non-blank character and must first write the
whitespace that was cut (`split_trailing_whitespace`: BPE tokenizers glue
whitespace to the next word, so a prompt ending in indentation ends in a token
the model rarely saw there).

Two reference predictors make the numbers meaningful: "repeat the previous
line" (code is repetitive; an editor-free heuristic) and a token bigram model
(acepilot/training/perplexity.py) trained on the training side with the
model's own tokenizer.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from acepilot.training.perplexity import BigramModel

if TYPE_CHECKING:
    from acepilot.server.engine import Engine

# A predictor takes the text before the cursor and returns the rest of the line.
Predictor = Callable[[str], str]


def repeat_previous_line(prefix: str) -> str:
    """Baseline: the current line will be the previous non-blank line again.

    Returns the previous non-blank line from the cursor's column on (the
    part of it "under and after" the cursor); empty when there is none.
    """
    lines = prefix.split("\n")
    typed = lines[-1]
    for previous in reversed(lines[:-1]):
        if previous.strip():
            return previous[len(typed) :]
    return ""


def split_trailing_whitespace(prefix: str) -> tuple[str, str]:
    """(prompt, heal): the prefix cut back to its last non-blank character, and the cut.

    Why: byte-level BPE tokenizers (GPT-2, CodeGen, acepilot-tiny) glue a
    run of whitespace to the word after it (`"\\n       "` + `" return"`),
    so a prompt that ends in whitespace ends in a token the model has almost
    never seen at that place, and it writes nonsense. Cutting the prompt back
    and requiring the model to write the cut whitespace first ("token
    healing" for whitespace) asks the question the model was trained on.
    """
    cut = len(prefix.rstrip())
    return prefix[:cut], prefix[cut:]


class HealedLine:
    """Accumulates generated text; decides when the rest of the line is known.

    The text must begin with `heal` (the whitespace cut from the prompt); the
    line ends at the first newline after it. A model that writes other
    whitespace first (a wrong indentation) predicts nothing.
    """

    def __init__(self, heal: str) -> None:
        self.heal = heal
        self.text = ""

    def add(self, delta: str) -> bool:
        """Add generated text; True when no more is needed."""
        self.text += delta
        if len(self.text) < len(self.heal):
            return not self.heal.startswith(self.text)
        return not self.text.startswith(self.heal) or "\n" in self.text[len(self.heal) :]

    def line(self) -> str:
        if not self.text.startswith(self.heal):
            return ""
        return self.text[len(self.heal) :].split("\n", 1)[0]


def bigram_predictor(
    model: BigramModel, tokenizer: Any, max_tokens: int = 32, *, heal_whitespace: bool = True
) -> Predictor:
    """Greedy bigram continuation of the prompt's last token, to the end of the line.

    `tokenizer` is a `tokenizers.Tokenizer` (encode(...).ids, decode(ids)).
    The same whitespace healing as the model's predictor, so both answer the
    same question.
    """

    def predict(prefix: str) -> str:
        prompt, heal = split_trailing_whitespace(prefix) if heal_whitespace else (prefix, "")
        ids = tokenizer.encode(prompt[-200:]).ids if prompt else []
        if not ids:
            return ""
        # the prompt's last token may be half a word: decode it with its continuation
        head = tokenizer.decode([ids[-1]])
        state = HealedLine(heal)
        generated: list[int] = []
        token = ids[-1]
        shown = 0
        for _ in range(max_tokens + 4):
            token = int(model.successor[token])
            generated.append(token)
            text: str = tokenizer.decode([ids[-1], *generated])
            text = text[len(head) :] if text.startswith(head) else text
            if state.add(text[shown:]):
                break
            shown = len(text)
        return state.line()

    return predict


def generate_line(engine: Engine, prompt: str | Sequence[int], heal: str, max_tokens: int) -> str:
    """The model's greedy continuation of `prompt` (text or token ids), stopped as soon
    as the line (after the healed whitespace) is known."""
    from acepilot.server.engine import GenerationParams

    state = HealedLine(heal)
    done = threading.Event()

    def on_token(delta: str) -> None:
        if state.add(delta):
            done.set()

    params = GenerationParams(max_new_tokens=max_tokens + 4)
    engine.generate(prompt, params, cancel=done, on_token=on_token)
    return state.line()


def engine_predictor(
    engine: Engine, max_tokens: int = 48, *, heal_whitespace: bool = True
) -> Predictor:
    """The served model, greedy, stopped at the end of the line (whitespace healed)."""

    def predict(prefix: str) -> str:
        prompt, heal = split_trailing_whitespace(prefix) if heal_whitespace else (prefix, "")
        return generate_line(engine, prompt, heal, max_tokens)

    return predict


class FimPredictor:
    """The served model with the text after the line in its prompt (fill-in-the-middle).

    The prompt is the model's FIM layout (`order` psm or spm) in token ids:
    each side tokenized on its own, as in training, the prefix cut from the
    left and the suffix from the right so that the three sentinels always
    fit. The middle ends at the model's end-of-text token or the newline.
    """

    def __init__(
        self,
        engine: Engine,
        sentinels: tuple[int, int, int],
        *,
        order: str = "psm",
        max_tokens: int = 48,
        suffix_tokens: int = 256,
    ) -> None:
        if order not in ("psm", "spm"):
            raise ValueError(f"order must be psm or spm, got {order!r}")
        self.engine, self.sentinels, self.order = engine, sentinels, order
        self.max_tokens, self.suffix_tokens = max_tokens, suffix_tokens

    def __call__(self, prefix: str, suffix: str) -> str:
        prompt, heal = split_trailing_whitespace(prefix)
        pre, suf, mid = self.sentinels
        suffix_ids = self.engine.encode(suffix)[: self.suffix_tokens] if suffix else []
        budget = self.engine.max_length - self.max_tokens - 8 - len(suffix_ids) - 3
        prefix_ids = self.engine.encode(prompt)[-budget:] if prompt and budget > 0 else []
        if self.order == "spm":
            ids = [pre, suf, *suffix_ids, mid, *prefix_ids]
        else:
            ids = [pre, *prefix_ids, suf, *suffix_ids, mid]
        return generate_line(self.engine, ids, heal, self.max_tokens)


__all__ = [
    "FimPredictor",
    "HealedLine",
    "Predictor",
    "bigram_predictor",
    "engine_predictor",
    "generate_line",
    "repeat_previous_line",
    "split_trailing_whitespace",
]
