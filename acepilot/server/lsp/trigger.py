"""Stage 2 of the pipeline: answer at once (typing-ahead), or what kind of completion.

Typing-ahead: when the user typed the start of the completion shown last at
this place (acepilot/server/lsp/cache.py keeps it), the rest of it is the
answer, without the model.

Single- or multi-line comes from the cursor's surroundings
(`postprocess.decide_mode`: text after the cursor, a line that opens a
block). A single line stops at the first line break; a multi-line completion
stops as soon as the generated text holds a line past the end of the
cursor's block (`block_watch`), which post-processing would cut anyway:
the tokens after it are never shown, so they are never generated.

"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from acepilot.server.lsp.postprocess import SINGLE, Context, cut_block


@dataclass(frozen=True, kw_only=True)
class Trigger:
    """How to generate for this position."""

    mode: str  # postprocess.SINGLE or MULTI
    stop: tuple[str, ...]  # stop sequences for the backend
    watch: Callable[[str], bool] | None  # True: the generated text is complete, stop
    typed_ahead: str | None = None  # the answer without a model (typing-ahead), if any


def decide(context: Context, typed_ahead: str | None = None) -> Trigger:
    """What to do for this position; `typed_ahead`: TypingAhead.answer's rest, if any."""
    if context.mode == SINGLE:
        return Trigger(mode=SINGLE, stop=("\n",), watch=None, typed_ahead=typed_ahead)
    return Trigger(mode=context.mode, stop=(), watch=block_watch(context), typed_ahead=typed_ahead)


def block_watch(context: Context) -> Callable[[str], bool]:
    """True once the generated text holds a line past the end of the block: stop early."""

    def watch(text: str) -> bool:
        lines = text.split("\n")[:-1]  # complete lines only
        if len(lines) < 2:
            return False
        if len(lines) > context.max_lines:
            return True
        while len(lines) > 1 and not lines[-1].strip():
            lines.pop()
        return len(cut_block(lines, context)) < len(lines)

    return watch
