"""Session fixtures: random-weight and briefly trained checkpoints of every family.

Cached like the other test models (tests/conftest.py): under the fixture cache,
keyed by the settings and this folder's family_models.py, built once and renamed
into place, never in the repository.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from family_models import make_checkpoint, train_checkpoint

from acepilot.training.atomic import build_once
from acepilot.training.tiny.sample import code_sample_files, read_texts

HERE = Path(__file__).resolve().parent
# Random-weight checkpoints: (real config, scaling). StarCoder2 gets a 24-token window so
# that the parity sequences (up to ~290 tokens) run far past it.
RANDOM_FAMILIES = {
    "codegen2-1B": {},
    "qwen2.5-coder-0.5b": {},
    "qwen2.5-coder-1.5b": {},
    "starcoder2-3b": {"sliding_window": 24},
    "deepseek-coder-1.3b-base": {},
    "codegen25-7b-multi": {},
}
TRAINED_FAMILIES = {
    "qwen2.5-coder-0.5b": {},
    # 8 query heads to 1 KV head (the real 24:2 is 12:1): a third less training time.
    "starcoder2-3b": {
        "sliding_window": 4096,
        "num_attention_heads": 8,
        "hidden_size": 256,
        "intermediate_size": 1024,
    },
    "deepseek-coder-1.3b-base": {},
}
TRAIN_STEPS = 300


def tag(*settings: object) -> str:
    digest = hashlib.sha256(repr(settings).encode())
    digest.update((HERE / "family_models.py").read_bytes())
    return digest.hexdigest()[:10]


@pytest.fixture(scope="session")
def family_checkpoints(fixture_cache: Path, tiny_tokenizer_dir: Path) -> dict[str, Path]:
    """name -> random-weight checkpoint directory, for every entry of RANDOM_FAMILIES."""
    out = {}
    for name, scale in RANDOM_FAMILIES.items():
        target = fixture_cache / f"family-{name}-{tag(name, scale, tiny_tokenizer_dir.name)}"
        out[name] = build_once(
            target,
            lambda d, name=name, scale=scale: make_checkpoint(d, name, tiny_tokenizer_dir, **scale),
        )
    return out


@pytest.fixture(scope="session")
def trained_family_checkpoints(fixture_cache: Path, tiny_tokenizer_dir: Path) -> dict[str, Path]:
    """name -> a checkpoint of that family trained TRAIN_STEPS steps on the stdlib sample."""
    texts = read_texts(code_sample_files().train)
    out = {}
    for name, scale in TRAINED_FAMILIES.items():
        settings = (name, scale, TRAIN_STEPS, tiny_tokenizer_dir.name, len(texts))
        target = fixture_cache / f"trained-{name}-{tag(*settings)}"
        out[name] = build_once(
            target,
            lambda d, name=name, scale=scale: train_checkpoint(
                d, name, tiny_tokenizer_dir, texts, steps=TRAIN_STEPS, **scale
            ),
        )
    return out
