"""The bootstrap recipe: every setting that determines Acepilot's default model.

`BootstrapConfig()` is the shipped model's recipe (models/acepilot-tiny/,
docs/default-model.md); `BootstrapConfig.preset("small")` is the one-minute
miniature the tests run. Each stage's cache key is built from the fields it
depends on (the `*_FIELDS` tuples), so changing an evaluation setting re-runs
only the evaluation.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from acepilot.training import codegen

MODEL_NAME = "acepilot-tiny"
# Bumped by hand when the recipe changes in a way the config does not show.
RECIPE_VERSION = 2
# Bumped when the evaluation changes (only the evaluation re-runs).
EVAL_RECIPE = 4
STAGES = ("sources", "tokenizer", "data", "init", "train", "build", "evaluate", "publish")


def repository_root() -> Path:
    """The checkout this package runs from (its node_modules is a source when present)."""
    return Path(__file__).resolve().parents[3]


@dataclass(frozen=True)
class BootstrapConfig:
    """Everything that determines the default model. `preset("small")` is the test-sized one."""

    seed: int = 0
    # sources: training bytes per kind (0 leaves a kind out), held-out bytes per kind
    python_bytes: int = 14_000_000  # the standard library
    pypi_bytes: int = 14_000_000  # permissively licensed site-packages
    javascript_bytes: int = 9_000_000
    typescript_bytes: int = 6_000_000
    go_bytes: int = 10_000_000
    rust_bytes: int = 8_000_000
    held_out_bytes: int = 400_000
    node_roots: tuple[str, ...] = (
        "/usr/lib/node_modules",
        "/usr/local/lib/node_modules",
        "node_modules",  # the repository's (`npm ci`, as `make extension-lint` runs it)
    )
    held_out_every: int = 12  # 1 package in N is held out
    validation_every: int = 50  # of the training files, 1 in N feeds the loop's val loss
    max_file_bytes: int = 150_000
    # tokenizer
    vocab_size: int = 8192
    tokenizer_sample_bytes: int = 16_000_000
    # training documents (acepilot/training/corpus/fim.py)
    fim_rate: float = 0.5
    fim_spm_rate: float = 0.5
    fim_line_rate: float = 0.5
    repo_rate: float = 0.3  # documents with neighbouring files of the same package before them
    repo_context_chars: int = 1000
    chars_per_chunk: int = 2400  # a file is cut into pieces that fit one row (~3.5 chars/token)
    # model
    n_embd: int = 128
    n_layer: int = 6
    n_head: int = 4
    rotary_dim: int = 16
    # The context the engine serves (its max_length) is n_positions: keep it at the
    # trained length. Positions the model never saw in training ruin its predictions
    # (held-out exact match 4.0% with 512 positions, 6.75% with 256: docs/acepilot-tiny.md).
    n_positions: int = 1024
    seq_len: int = 1024
    # training (acepilot/training/finetune/train.py)
    steps: int = 5000  # 10.2M tokens: the shipped run (docs/acepilot-tiny.md)
    micro_batch: int = 2  # rows of seq_len per step: small batches, more steps, at this budget
    learning_rate: float = 3e-3
    min_lr: float = 3e-4
    warmup_steps: int = 30
    lr_schedule: str = "wsd"  # warmup-stable-decay: see finetune/train.py get_lr
    decay_fraction: float = 0.2
    weight_decay: float = 0.01
    checkpoint_interval: int = 25
    # build and evaluation
    precision: str = "int8"
    parity: str = "enforce"
    eval_positions: int = 500
    eval_context_chars: int = 3000
    eval_max_tokens: int = 48
    perplexity_tokens: int = 32_768
    onnx_perplexity_tokens: int = 2048
    require_better: bool = True  # refuse to publish a model that loses to a baseline
    compare_shipped: bool = True  # also evaluate the shipped model it would replace

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> BootstrapConfig:
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}: expected one of {', '.join(PRESETS)}")
        return dataclasses.replace(cls(**PRESETS[name]), **overrides)

    def check(self) -> None:
        codegen.check_shape(self.n_embd, self.n_head, self.rotary_dim, self.n_positions)
        if self.seq_len > self.n_positions:
            raise ValueError(f"seq_len {self.seq_len} exceeds n_positions {self.n_positions}")
        if min(self.steps, self.micro_batch, self.eval_positions, self.checkpoint_interval) < 1:
            raise ValueError("steps, micro_batch, eval_positions, checkpoint_interval must be >= 1")
        if self.precision not in ("fp32", "int8", "int4"):
            raise ValueError(f"precision must be fp32, int8 or int4, got {self.precision!r}")
        if self.eval_max_tokens >= self.n_positions:
            raise ValueError("eval_max_tokens must be below n_positions")
        for name in ("fim_rate", "fim_spm_rate", "fim_line_rate", "repo_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1]")

    def model_size(self) -> int:
        """Parameters of the model this config trains (padded vocabulary, untied head)."""
        vocab = codegen.padded_vocab(self.vocab_size)
        per_layer = 12 * self.n_embd * self.n_embd + 7 * self.n_embd
        return 2 * vocab * self.n_embd + vocab + self.n_layer * per_layer + 2 * self.n_embd


PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    # End to end in about a minute on 2 cores: what the tests run.
    "small": {
        "python_bytes": 250_000,
        "pypi_bytes": 0,
        "javascript_bytes": 60_000,
        "typescript_bytes": 0,
        "go_bytes": 0,
        "rust_bytes": 0,
        "held_out_bytes": 50_000,
        "node_roots": ("/usr/lib/node_modules",),
        "vocab_size": 512,
        "tokenizer_sample_bytes": 300_000,
        "chars_per_chunk": 400,
        "repo_context_chars": 150,
        "n_embd": 64,
        "n_layer": 2,
        "n_head": 4,
        "rotary_dim": 16,
        "n_positions": 128,
        "seq_len": 128,
        "steps": 30,
        "micro_batch": 8,
        "learning_rate": 5e-3,
        "min_lr": 5e-4,
        "warmup_steps": 5,
        "checkpoint_interval": 10,
        "eval_positions": 40,
        "eval_context_chars": 400,
        "eval_max_tokens": 16,
        "perplexity_tokens": 2048,
        "onnx_perplexity_tokens": 256,
        "require_better": False,
        "compare_shipped": False,
    },
}

# Which config fields each stage depends on (with everything before it).
SOURCE_FIELDS = (
    "python_bytes",
    "pypi_bytes",
    "javascript_bytes",
    "typescript_bytes",
    "go_bytes",
    "rust_bytes",
    "held_out_bytes",
    "node_roots",
    "held_out_every",
    "validation_every",
    "max_file_bytes",
)
TOKENIZER_FIELDS = ("vocab_size", "tokenizer_sample_bytes")
DATA_FIELDS = (
    "seq_len",
    "fim_rate",
    "fim_spm_rate",
    "fim_line_rate",
    "repo_rate",
    "repo_context_chars",
    "chars_per_chunk",
)
SHAPE_FIELDS = ("n_embd", "n_layer", "n_head", "rotary_dim", "n_positions")
TRAIN_FIELDS = (
    "steps",
    "micro_batch",
    "learning_rate",
    "min_lr",
    "warmup_steps",
    "lr_schedule",
    "decay_fraction",
    "weight_decay",
    "checkpoint_interval",
)
EVAL_FIELDS = (
    "eval_positions",
    "eval_context_chars",
    "eval_max_tokens",
    "perplexity_tokens",
    "onnx_perplexity_tokens",
    "compare_shipped",
)

__all__ = [
    "EVAL_RECIPE",
    "MODEL_NAME",
    "PRESETS",
    "RECIPE_VERSION",
    "STAGES",
    "BootstrapConfig",
    "repository_root",
]
