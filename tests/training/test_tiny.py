"""The tiny CodeGen fixtures are what the rest of the suite trusts: check them for real."""

from __future__ import annotations

import ast
import importlib.util
import math
import time
from pathlib import Path

import numpy as np
import torch
from transformers import AutoTokenizer

from acepilot.training import codegen, perplexity, tiny
from acepilot.training.bootstrap.sources import EXCLUDED_DIRS
from acepilot.training.tiny.sample import code_sample_files, held_out_text, read_texts
from acepilot.training.tiny.train import train_tiny_codegen, training_record


def test_code_sample_is_deterministic_and_held_out_by_name() -> None:
    first = code_sample_files()
    assert code_sample_files.__wrapped__() == first  # a fresh selection, not the cached one
    assert first.train and first.held_out
    assert not set(first.train) & set(first.held_out)
    for path in first.train + first.held_out:
        parts = path.relative_to(first.root).parts
        assert not set(parts[:-1]) & EXCLUDED_DIRS, path
        assert path.suffix == ".py"
    assert sum(p.stat().st_size for p in first.train) <= 4_000_000
    # The split depends on names only: a smaller budget never moves a file across it.
    small = code_sample_files(max_train_bytes=200_000, max_held_out_bytes=50_000)
    assert set(small.held_out) <= set(first.held_out)
    assert not set(small.train) & set(first.held_out)
    text = held_out_text(3000)
    assert 1500 < len(text) <= 3000
    assert text == held_out_text(3000)
    assert text.startswith(first.held_out[0].read_text("utf-8")[:100])


def unigram_entropy(targets: np.ndarray) -> float:
    """The best cross-entropy any unigram model can reach on these tokens (fit to them)."""
    _, counts = np.unique(targets, return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log(p)).sum())


def bigram_cross_entropy(train: np.ndarray, windows: list[list[int]], vocab: int) -> float:
    """Bigram from the training stream, interpolated with its unigram (weight fit on held-out)."""
    counts = np.zeros((vocab, vocab), dtype=np.float64)
    np.add.at(counts, (train[:-1], train[1:]), 1.0)
    unigram = (np.bincount(train, minlength=vocab) + 1.0) / (len(train) + vocab)
    rows = counts.sum(axis=1, keepdims=True)
    bigram = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
    prev = np.concatenate([w[:-1] for w in windows])
    nxt = np.concatenate([w[1:] for w in windows])
    return min(
        float(-np.log(lam * bigram[prev, nxt] + (1 - lam) * unigram[nxt]).mean())
        for lam in np.linspace(0.05, 0.95, 19)
    )


def test_trained_model_beats_count_baselines_on_held_out_code(trained_codegen_dir: Path) -> None:
    record = training_record(trained_codegen_dir)
    assert record is not None
    tokenizer = AutoTokenizer.from_pretrained(trained_codegen_dir)
    model = codegen.load_model(trained_codegen_dir)
    vocab = model.config.vocab_size
    assert model.config.rotary_dim == 16 and model.config.n_embd // model.config.n_head == 32

    windows = perplexity.text_windows(tokenizer, held_out_text(40_000), 256)
    loss = perplexity.model_loss(model, windows)
    targets = np.concatenate([w[1:] for w in windows])
    sample = code_sample_files()
    train = np.array(
        perplexity.token_stream(tokenizer, read_texts(sample.train), tokenizer.eos_token_id)
    )
    unigram = unigram_entropy(targets)
    bigram = bigram_cross_entropy(train, windows, vocab)
    print(f"held-out loss {loss:.3f}; unigram {unigram:.3f}; bigram {bigram:.3f}")

    assert loss < math.log(vocab) - 3.0
    assert loss < unigram - 1.5  # even a unigram fitted to the held-out tokens themselves
    assert loss < bigram - 0.2
    # training.json tells the same story on its own held-out tokens.
    held_out = record["held_out"]
    assert held_out["loss"] < held_out["baselines"]["bigram"] - 0.2
    assert abs(held_out["loss"] - loss) < 0.5
    assert record["final_train_loss"] < held_out["baselines"]["unigram"] - 1.5


def test_trained_model_is_cached(trained_codegen_dir: Path) -> None:
    weights = trained_codegen_dir / "model.safetensors"
    before = weights.stat().st_mtime_ns
    started = time.monotonic()
    assert train_tiny_codegen(trained_codegen_dir, progress=False) == trained_codegen_dir
    assert time.monotonic() - started < 30
    assert weights.stat().st_mtime_ns == before


def test_trained_model_writes_plausible_python(trained_codegen_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(trained_codegen_dir)
    model = codegen.load_model(trained_codegen_dir)
    prompt = "import os\n\n\ndef main(argv):\n    for arg in argv:\n        "
    ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        out = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=24,
            do_sample=False,
            pad_token_id=tokenizer.eos_token_id,
        )
    completion = tokenizer.decode(out[0, ids.shape[1] :])
    print(f"completion: {completion!r}")
    assert completion.strip(), completion
    assert completion.isascii(), completion
    # Teacher-forced next-token accuracy on held-out code: far above always-most-frequent.
    windows = perplexity.text_windows(tokenizer, held_out_text(8000), 256)
    right = total = 0
    with torch.no_grad():
        for window in windows:
            logits = model(input_ids=torch.tensor([window])).logits[0, :-1]
            right += int((logits.argmax(-1) == torch.tensor(window[1:])).sum())
            total += len(window) - 1
    most_frequent = np.bincount(np.concatenate([w[1:] for w in windows])).max() / total
    assert right / total > max(0.3, 2 * most_frequent)


def acepilot_imports(module: str) -> set[str]:
    """The acepilot modules `module` imports (at its top or inside functions)."""
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin is not None
    found = set()
    for node in ast.walk(ast.parse(Path(spec.origin).read_text("utf-8"))):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("acepilot"):
            for alias in node.names:  # `from package import module` names a module
                submodule = f"{node.module}.{alias.name}"
                is_module = (
                    importlib.util.find_spec(submodule) is not None
                    if (importlib.util.find_spec(node.module or "").submodule_search_locations)
                    else False
                )
                found.add(submodule if is_module else node.module or "")
    return found


def test_the_fixture_cache_key_covers_every_module_the_fixtures_are_made_by() -> None:
    """A fixture module's import that is neither hashed nor declared harmless would let
    a change to it reuse stale test models."""
    for module in tiny.FIXTURE_MODULES:
        unhashed = acepilot_imports(module) - set(tiny.FIXTURE_MODULES) - set(tiny.NOT_FIXTURE_CODE)
        assert not unhashed, f"{module} imports {unhashed}: add them to FIXTURE_MODULES"
    before = tiny.source_hash()
    assert before == tiny.source_hash() and len(before) == 64
