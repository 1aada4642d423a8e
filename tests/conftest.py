"""Shared, session-scoped fixtures: tiny CodeGen checkpoints built once into a cache.

No pretrained model can be downloaded here, so the suite makes its own (see
acepilot/training/tiny/). They are cached OUTSIDE the repository, in
`$ACEPILOT_TEST_CACHE` or `~/.cache/acepilot-tests`, under a folder keyed by a
hash of every module that determines them (`tiny.source_hash`: the sample,
tokenizer, model and training code) and the library versions: changing the
fixture code rebuilds them, re-running the suite does not. Every build goes into a
temporary directory that is renamed into place under a file lock, so parallel
pytest workers wait for one another and an interrupted build leaves nothing
half-written.

Fixtures (all session-scoped, all return a directory):
- `fixture_cache`: the cache folder for this version of the fixture code.
- `tiny_tokenizer_dir`: byte-level BPE, 1000 tokens, trained on the stdlib sample.
- `random_codegen_dir`: random CodeGen (n_embd 128, 2 layers, 4 heads, head_dim 32,
  rotary_dim 16, n_positions 256, 1024 embedding rows), random biases and LayerNorm
  affines.
- `random_codegen_dir_wide`: the real CodeGen head shape (n_embd 256, 4 heads,
  head_dim 64, rotary_dim 32, n_positions 512), 2 layers.
- `trained_codegen_dir`: the tiny CodeGen trained on the standard library
  (acepilot/training/tiny/train.py defaults; a few CPU-minutes the first time), with
  training.json.
"""

from __future__ import annotations

import hashlib
import os
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest

from acepilot.training import tiny
from acepilot.training.atomic import build_once
from acepilot.training.codegen import make_random_codegen
from acepilot.training.tiny.sample import code_sample_files, read_texts
from acepilot.training.tiny.train import train_tiny_codegen
from acepilot.training.tokenizer import train_tokenizer

RANDOM_SHAPE = {"n_embd": 128, "n_layer": 2, "n_head": 4, "rotary_dim": 16, "n_positions": 256}
RANDOM_WIDE_SHAPE = {"n_embd": 256, "n_layer": 2, "n_head": 4, "rotary_dim": 32, "n_positions": 512}
# Not a multiple of 64: the random models pad their embedding rows to 1024, like
# the real CodeGen (51200 rows for ~50295 tokens), so servers meet rows no token maps to.
TOKENIZER_VOCAB = 1000


def cache_key() -> str:
    """The fixture code and the libraries that shape what it writes."""
    digest = hashlib.sha256(tiny.source_hash().encode())
    digest.update(f"python {sys.version_info[:3]}".encode())
    for package in ("torch", "transformers", "tokenizers", "safetensors"):
        try:
            digest.update(f"{package} {version(package)}".encode())
        except PackageNotFoundError:
            digest.update(f"{package} missing".encode())
    return digest.hexdigest()[:16]


def settings_tag(*settings: object) -> str:
    """A short hash of a fixture's settings for its folder name: changed settings rebuild."""
    return hashlib.sha256(repr(settings).encode()).hexdigest()[:8]


@pytest.fixture(scope="session")
def fixture_cache() -> Path:
    root = os.environ.get("ACEPILOT_TEST_CACHE")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "acepilot-tests"
    path = base / cache_key()
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(fixture_cache: Path) -> Path:
    def build(out: Path) -> None:
        train_tokenizer(read_texts(code_sample_files().train), TOKENIZER_VOCAB, out)

    return build_once(fixture_cache / f"tokenizer-{TOKENIZER_VOCAB}", build)


@pytest.fixture(scope="session")
def random_codegen_dir(fixture_cache: Path, tiny_tokenizer_dir: Path) -> Path:
    def build(out: Path) -> None:
        make_random_codegen(out, tokenizer_dir=tiny_tokenizer_dir, seed=0, **RANDOM_SHAPE)

    tag = settings_tag(RANDOM_SHAPE, 0, tiny_tokenizer_dir.name)
    return build_once(fixture_cache / f"random-codegen-{tag}", build)


@pytest.fixture(scope="session")
def random_codegen_dir_wide(fixture_cache: Path, tiny_tokenizer_dir: Path) -> Path:
    def build(out: Path) -> None:
        make_random_codegen(out, tokenizer_dir=tiny_tokenizer_dir, seed=1, **RANDOM_WIDE_SHAPE)

    tag = settings_tag(RANDOM_WIDE_SHAPE, 1, tiny_tokenizer_dir.name)
    return build_once(fixture_cache / f"random-codegen-wide-{tag}", build)


@pytest.fixture(scope="session")
def trained_codegen_dir(fixture_cache: Path) -> Path:
    return train_tiny_codegen(fixture_cache / "trained-codegen", progress=False)
