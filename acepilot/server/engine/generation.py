"""What a caller asks of the engine and what it gets back."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

FINISH_REASONS = ("stop", "length", "eos", "deadline", "cancelled")


@dataclass(frozen=True)
class GenerationParams:
    """How to generate one completion.

    temperature 0 is greedy decoding; `top_p` applies only when sampling.
    `stop` sequences are matched on the decoded text and are not part of the
    result. `deadline` is a wall-clock budget in seconds from the call
    (waiting for the engine included): generation stops between tokens when
    the next token would not be done in time. `seed` makes sampling
    reproducible; None draws fresh entropy. `ignore_eos` keeps generating
    past the end-of-text token (benchmarks that need a fixed token count).
    """

    max_new_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    stop: Sequence[str] = field(default_factory=tuple)
    deadline: float | None = None
    seed: int | None = None
    ignore_eos: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.max_new_tokens, bool) or not isinstance(self.max_new_tokens, int):
            raise ValueError(f"max_new_tokens must be an integer, got {self.max_new_tokens!r}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1, got {self.max_new_tokens}")
        if not self.temperature >= 0.0:  # also rejects NaN
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if isinstance(self.stop, str):
            raise ValueError("stop must be a sequence of strings, not one string")
        if not all(isinstance(stop, str) for stop in self.stop):
            raise ValueError(f"stop sequences must be strings, got {self.stop!r}")
        if self.deadline is not None and not self.deadline >= 0.0:
            raise ValueError(f"deadline must be a number of seconds >= 0, got {self.deadline}")


@dataclass(frozen=True)
class Generation:
    """One completion and how it was made.

    `token_ids` are the sampled tokens (without EOS); when a stop sequence
    ended generation, the last of them may reach past the cut `text`.
    `prompt_tokens` counts the prompt as fed to the model (after a too-long
    prompt lost its head: `truncated_tokens`); `reused_tokens` of it came
    from the session's KV cache and were not prefilled again.
    """

    text: str
    token_ids: tuple[int, ...]
    finish_reason: str
    prompt_tokens: int
    reused_tokens: int
    prefill_ms: float
    decode_ms: float
    truncated_tokens: int = 0
