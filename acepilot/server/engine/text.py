"""Token ids -> text, one token at a time: incremental decoding and stop sequences.

Byte-level BPE (CodeGen's GPT-2 tokenizer) splits a multi-byte UTF-8
character across tokens, so decoding token by token would show U+FFFD halves.
`IncrementalDecoder` releases text only once it ends on a whole character,
and decodes with a few tokens of context so decoders that depend on the
neighbouring token (SentencePiece-style leading spaces) stay right too.

`StopScanner` finds stop sequences in the decoded text, including ones that
span several tokens, and holds back a tail that could still become a stop
sequence, so that streamed deltas never show text that the final result cuts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

REPLACEMENT = "\ufffd"
CONTEXT_TOKENS = 4


class Decoder(Protocol):
    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str: ...


class IncrementalDecoder:
    """Feeds ids in, gets text deltas out; the deltas concatenate to the decoded text."""

    def __init__(self, tokenizer: Decoder, context: Sequence[int] = ()) -> None:
        self.tokenizer = tokenizer
        self.ids = list(context[-CONTEXT_TOKENS:]) if context else []
        self.prefix = 0  # ids[prefix:read] were already released (they are context now)
        self.read = len(self.ids)

    def push(self, token: int) -> str:
        """The text that `token` completes ('' while a character is still partial)."""
        self.ids.append(token)
        before = self.tokenizer.decode(self.ids[self.prefix : self.read])
        after = self.tokenizer.decode(self.ids[self.prefix :])
        if len(after) > len(before) and not after.endswith(REPLACEMENT):
            self.prefix, self.read = self.read, len(self.ids)
            return after[len(before) :]
        return ""

    def flush(self) -> str:
        """Whatever is pending at the end, minus a trailing partial character.

        A completion cut by max_new_tokens or a deadline inside a multi-byte
        character drops that half character instead of inserting U+FFFD.
        """
        if self.read == len(self.ids):
            return ""
        before = self.tokenizer.decode(self.ids[self.prefix : self.read])
        after = self.tokenizer.decode(self.ids[self.prefix :])
        self.prefix = self.read = len(self.ids)
        return after[len(before) :].rstrip(REPLACEMENT)


class StopScanner:
    """Accumulates text, cuts it at the first stop sequence, says what is safe to stream."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = tuple(stop for stop in stops if stop)
        self.text = ""
        self.released = 0  # text[:released] was handed to the caller
        self.stopped = False

    def add(self, delta: str) -> str:
        """Append decoded text; return the new text that can be streamed now."""
        if self.stopped or not delta:
            return ""
        self.text += delta
        cut = self._first_stop()
        if cut is not None:
            self.text = self.text[:cut]
            self.stopped = True
            return self._release(cut)
        return self._release(len(self.text) - self._held_back())

    def finish(self) -> str:
        """Release everything that was held back (generation ended without a stop)."""
        return self._release(len(self.text))

    def _release(self, upto: int) -> str:
        if upto <= self.released:
            return ""
        out = self.text[self.released : upto]
        self.released = upto
        return out

    def _first_stop(self) -> int | None:
        # A stop cannot start inside released text: that text never ended in a stop's prefix.
        found = [self.text.find(stop, self.released) for stop in self.stops]
        hits = [index for index in found if index >= 0]
        return min(hits) if hits else None

    def _held_back(self) -> int:
        """Length of the longest tail of the text that is a proper prefix of a stop."""
        pending = len(self.text) - self.released
        best = 0
        for stop in self.stops:
            for size in range(min(len(stop) - 1, pending), best, -1):
                if self.text.endswith(stop[:size]):
                    best = size
                    break
        return best
