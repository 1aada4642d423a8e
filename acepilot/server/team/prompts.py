"""Prompt text to token ids, with the work bounded before it starts.

Tokenizing is the one step of a request whose cost grows with the text the
client sent (generation is bounded by max_tokens and the deadline). One
token sending 30 concurrent 920 KB prompts once held the event loop for
~25 s (the tokenizer's single-text `encode` keeps the GIL for the whole
text) and grew memory by ~2 GB. So, in this order:

1. A character limit, checked before anything else: `max_prompt_tokens` x
   the longest token of the model's vocabulary (in characters). A text over
   it has more tokens than allowed whatever it contains, so refusing it
   changes no answer the server would have given (byte-level BPE tokenizers,
   the families served here, cannot cover more characters per token than
   their longest vocabulary entry).
2. A per-token cap: at most `per_token` prompts of one token are tokenized at
   a time and `waiting` more wait their turn; past that, 429
   `too_many_prompts`. One developer's editor rarely has more than one or two
   requests in flight; an attacker gets a small, bounded share.
3. Tokenizing in a worker thread that releases the GIL (BatchEngine.encode),
   at most `total` at once across all tokens (the cores, and at least twice
   `per_token`, so one token never holds every slot), so /healthz and other
   tokens' requests go on while a long text is tokenized.
"""

from __future__ import annotations

import asyncio
import os
from typing import TYPE_CHECKING, Any

import anyio

from acepilot.server.team.errors import ApiError, bad

if TYPE_CHECKING:
    from acepilot.server.engine.batch import BatchEngine

PER_TOKEN = 2  # prompts of one token tokenized at once
WAITING = 6  # ... and waiting for their turn; past that 429


def longest_token_chars(tokenizer: Any) -> int:
    """The most characters one token of `tokenizer` can stand for (at least 1)."""
    vocab = tokenizer.get_vocab(with_added_tokens=True)
    return max((len(piece) for piece in vocab), default=1) or 1


def check_characters(chars: int, max_tokens: int, token_chars: int) -> None:
    """400 when a text of `chars` characters must have more than `max_tokens` tokens."""
    limit = max_tokens * token_chars
    if chars > limit:
        raise bad(
            f"the prompt (with its suffix) has {chars:,} characters; this server allows at "
            f"most {limit:,} ({max_tokens} tokens of at most {token_chars} characters each)",
            "prompt",
        )


class PromptGate:
    """Tokenizes prompts with the per-token and overall bounds of the module docstring."""

    def __init__(
        self, per_token: int = PER_TOKEN, waiting: int = WAITING, total: int | None = None
    ) -> None:
        self.per_token = per_token
        self.waiting = waiting
        # Never fewer slots than two tokens' worth: one token alone cannot take them all.
        self.total = total or max(2 * per_token, os.cpu_count() or 1)
        self._admitted: dict[str, int] = {}  # token name -> prompts tokenizing or waiting
        self._turns: dict[str, asyncio.Semaphore] = {}
        self._threads: anyio.CapacityLimiter | None = None  # made in the event loop

    def preparing(self) -> int:
        """Prompts being tokenized or waiting to be, over all tokens."""
        return sum(self._admitted.values())

    async def encode(self, name: str, batch: BatchEngine, text: str) -> list[int]:
        """The token ids of `text` for token `name`; ApiError 429 past the token's share."""
        admitted = self._admitted.get(name, 0)
        if admitted >= self.per_token + self.waiting:
            raise ApiError(
                429,
                f"this token already has {admitted} prompts being prepared; "
                "retry when they are answered",
                "rate_limit_error",
                code="too_many_prompts",
                headers={"Retry-After": "1"},
            )
        if self._threads is None:
            self._threads = anyio.CapacityLimiter(self.total)
        self._admitted[name] = admitted + 1
        turn = self._turns.setdefault(name, asyncio.Semaphore(self.per_token))
        try:
            async with turn:
                return await anyio.to_thread.run_sync(batch.encode, text, limiter=self._threads)
        finally:
            left = self._admitted[name] - 1
            if left:
                self._admitted[name] = left
            else:  # nobody of this token holds or waits for the semaphore
                del self._admitted[name]
                del self._turns[name]
