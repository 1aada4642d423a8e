"""Stage 2 of the pipeline: what kind of completion, and when generation may stop.

Single- or multi-line comes from the cursor's surroundings
(`postprocess.decide_mode`: text after the cursor, a line that opens a
block). A single line stops at the first line break; a multi-line completion
stops as soon as the generated text holds a line past the end of the
cursor's block (`block_watch`), which post-processing would cut anyway:
the tokens after it are never shown, so they are never generated.

(Typing-ahead, the other answer of this stage, lives with the session's state:
acepilot/server/lsp/cache.py.)
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


def decide(context: Context) -> Trigger:
    if context.mode == SINGLE:
        return Trigger(mode=SINGLE, stop=("\n",), watch=None)
    return Trigger(mode=context.mode, stop=(), watch=block_watch(context))


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
