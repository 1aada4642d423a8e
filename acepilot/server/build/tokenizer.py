"""The checkpoint's tokenizer, as one tokenizer.json for serving, and its FIM tokens.

Checkpoints ship a `tokenizers` tokenizer.json (Qwen2.5-Coder, StarCoder2,
DeepSeek-Coder, CodeGen 1/2) or a sentencepiece `tokenizer.model` (CodeLlama
and other LLaMA checkpoints). transformers converts the latter to a fast
tokenizer at build time (needs `sentencepiece`), and the artifact always
carries tokenizer.json: serving reads it with `tokenizers` and never imports
transformers. A tokenizer that is the checkpoint's own Python code
(tokenizer_config.json's auto_map, e.g. CodeGen2.5's tiktoken wrapper) is
never run: such a checkpoint needs a tokenizer.json placed beside it.

Fill-in-the-middle: the manifest's "fim" and "repo" (schema: docs/model-format.md)
come from the special tokens the tokenizer actually has, never from the
repository's name. Each known token set must be present whole, one token per
string, to count.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from acepilot.server.errors import BuildError, ModelSourceError

# The order serving uses, per token set: prefix-suffix-middle everywhere until the
# language server's measurement of cache reuse and quality says otherwise.
DEFAULT_ORDER = "psm"


@dataclass(frozen=True)
class FimTokens:
    """One family's FIM template: the strings, which must be tokens, and what ends a middle."""

    name: str
    prefix: str
    suffix: str
    middle: str
    required: tuple[str, ...]
    orders: tuple[str, ...]
    stop: tuple[str, ...]  # candidates: those the tokenizer has are recorded
    repo: tuple[str, str] | None = None  # (repo_name, file_sep) tokens


KNOWN_FIM = (
    FimTokens(
        "qwen2.5-coder",
        "<|fim_prefix|>",
        "<|fim_suffix|>",
        "<|fim_middle|>",
        ("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"),
        ("psm",),
        ("<|endoftext|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>", "<|im_end|>"),
        ("<|repo_name|>", "<|file_sep|>"),
    ),
    FimTokens(
        "starcoder",
        "<fim_prefix>",
        "<fim_suffix>",
        "<fim_middle>",
        ("<fim_prefix>", "<fim_suffix>", "<fim_middle>"),
        ("psm", "spm"),  # StarCoder/SantaCoder trained both; SPM in their variant
        ("<|endoftext|>", "<file_sep>"),
        ("<repo_name>", "<file_sep>"),
    ),
    FimTokens(
        "deepseek-coder",
        "<｜fim▁begin｜>",
        "<｜fim▁hole｜>",
        "<｜fim▁end｜>",
        ("<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>"),
        ("psm",),
        ("<｜end▁of▁sentence｜>", "<|EOT|>"),
    ),
    FimTokens(
        "codegen2",
        "",
        "<mask_1>",
        "<|endoftext|><sep><mask_1>",
        ("<mask_1>", "<sep>", "<eom>", "<|endoftext|>"),
        ("psm",),
        ("<eom>", "<|endoftext|>"),
    ),
)


def fim_from_vocab(vocab: Mapping[str, int]) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The manifest's tokenizer.fim and tokenizer.repo for a vocabulary (with added tokens)."""
    for known in KNOWN_FIM:
        if not all(token in vocab for token in known.required):
            continue
        order = DEFAULT_ORDER if DEFAULT_ORDER in known.orders else known.orders[0]
        fim = {
            "prefix": known.prefix,
            "suffix": known.suffix,
            "middle": known.middle,
            "orders": list(known.orders),
            "order": order,
            "stop": [token for token in known.stop if token in vocab],
        }
        repo = None
        if known.repo is not None and all(token in vocab for token in known.repo):
            repo = {"repo_name": known.repo[0], "file_sep": known.repo[1]}
        return fim, repo
    return None, None


def load_tokenizer(directory: Path) -> Any:
    """The checkpoint's fast tokenizer (a sentencepiece model is converted here)."""
    try:
        from transformers import AutoTokenizer, PreTrainedTokenizerFast
    except ImportError as exc:  # pragma: no cover - part of the build extra
        raise BuildError(
            "model build needs the build extra: pip install 'acepilot[build]'"
        ) from exc
    try:
        tokenizer = AutoTokenizer.from_pretrained(directory, use_fast=True)
    except (OSError, ValueError, KeyError, ImportError) as exc:
        file = directory / "tokenizer.json"
        if not file.is_file():
            raise ModelSourceError(
                f"{directory}: cannot load the tokenizer ({str(exc).strip()[:300]}). A tokenizer "
                "that is the checkpoint's own Python code is never run: put a tokenizer.json "
                "(the `tokenizers` format) in the checkpoint directory"
            ) from None
        tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(file))
    if not getattr(tokenizer, "is_fast", False):
        raise ModelSourceError(f"{directory}: no fast (tokenizers) tokenizer available")
    return tokenizer


def check_vocab(tokenizer: Any, vocab_size: int) -> None:
    """Every token id the tokenizer can produce must have an embedding row."""
    size = len(tokenizer)
    if size > vocab_size:
        raise BuildError(
            f"the tokenizer has {size} tokens but the model only {vocab_size} embedding rows"
        )
