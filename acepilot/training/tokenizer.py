"""Byte-level BPE tokenizers: trained here (test fixtures, acepilot-tiny) and loaded.

One trainer for every tokenizer Acepilot makes, so the test models and the
shipped model tokenize code the same way: byte-level (like GPT-2 and CodeGen)
so any text, any Unicode, round-trips exactly; the first special token
(`<|endoftext|>`) is BOS, EOS and UNK, as in CodeGen; the others (FIM and
repository tokens for acepilot-tiny) are added as special tokens.

tokenizers and transformers are imported inside the functions, so that
importing this module (e.g. by the `acepilot` command line) stays cheap.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

EOS_TOKEN = "<|endoftext|>"


def train_tokenizer(
    texts: Iterable[str],
    vocab_size: int,
    out: Path,
    *,
    special_tokens: Sequence[str] = (EOS_TOKEN,),
) -> Path:
    """Train a byte-level BPE on `texts` and save it where transformers finds it.

    `special_tokens[0]` is BOS = EOS = UNK (id 0). Writes tokenizer.json (all
    the server needs) plus the transformers files
    (`AutoTokenizer.from_pretrained(out)` works).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    if vocab_size < 300:
        raise ValueError(f"vocab_size must be at least 300 (256 bytes + merges), got {vocab_size}")
    if not special_tokens:
        raise ValueError("special_tokens needs at least the end-of-text token")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=list(special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    eos, *others = special_tokens
    # only when there are some: the saved tokenizer_config.json stays as it was without
    extra = {"additional_special_tokens": others} if others else {}
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=eos,
        eos_token=eos,
        unk_token=eos,
        **extra,
        clean_up_tokenization_spaces=False,  # would rewrite " ." etc.: code must round-trip
    )
    out.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(out))
    return out


def load_tokenizer(directory: str | Path) -> PreTrainedTokenizerFast:
    """AutoTokenizer from a local checkpoint or tokenizer directory; it must have an EOS,
    which separates documents in training data and ends generations."""
    from transformers import AutoTokenizer

    tokenizer: PreTrainedTokenizerFast = AutoTokenizer.from_pretrained(str(directory))
    if tokenizer.eos_token_id is None:
        raise ValueError(f"tokenizer in {directory} has no EOS token to separate documents")
    return tokenizer


__all__ = ["EOS_TOKEN", "load_tokenizer", "train_tokenizer"]
