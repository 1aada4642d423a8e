"""The tiny CodeGen fixtures are what the rest of the suite trusts: check them for real."""

from __future__ import annotations

import json
import math
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer
from transformers import AutoTokenizer, CodeGenForCausalLM

from acepilot.training import tiny

TRICKY_TEXTS = (
    "def f(x):\n\treturn x  # tab-indented\n",
    "class A:\r\n    pass\r\n",  # CRLF
    "s = 'héllo wörld'  # ünïcödé\nπ = 3.14159\n",
    "print('🐍 emoji, 中文, عربي, ZWJ 👩\u200d💻')\n",
    "x = 1   \n\n\n        \n    y = [ 1 , 2 ]  . ,\n",  # trailing spaces, odd spacing
    "\x00\x01 control bytes \x7f and a lone surrogate-free \ufffd\n",
    "",
    "   leading spaces",
    "a <|endoftext|> b",
)


def test_code_sample_is_deterministic_and_held_out_by_name() -> None:
    first, second = tiny.code_sample_files(), tiny.code_sample_files()
    assert first == second
    assert first.train and first.held_out
    assert not set(first.train) & set(first.held_out)
    for path in first.train + first.held_out:
        parts = path.relative_to(first.root).parts
        assert not set(parts[:-1]) & tiny.EXCLUDED_DIRS, path
        assert path.suffix == ".py"
    assert sum(p.stat().st_size for p in first.train) <= 4_000_000
    # The split depends on names only: a smaller budget never moves a file across it.
    small = tiny.code_sample_files(max_train_bytes=200_000, max_held_out_bytes=50_000)
    assert set(small.held_out) <= set(first.held_out)
    assert not set(small.train) & set(first.held_out)
    text = tiny.held_out_text(3000)
    assert 1500 < len(text) <= 3000
    assert text == tiny.held_out_text(3000)
    assert text.startswith(first.held_out[0].read_text("utf-8")[:100])


def test_tokenizer_round_trips_code_exactly(tiny_tokenizer_dir: Path) -> None:
    hf = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    raw = Tokenizer.from_file(str(tiny_tokenizer_dir / "tokenizer.json"))  # what the server loads
    eos = raw.token_to_id(tiny.EOS_TOKEN)
    assert hf.eos_token_id == hf.bos_token_id == eos
    assert raw.get_vocab_size() == len(hf) == 1000
    for text in (*TRICKY_TEXTS, tiny.held_out_text(20_000)):
        ids = hf(text, add_special_tokens=False)["input_ids"]
        assert raw.encode(text).ids == ids
        assert hf.decode(ids) == text
        assert raw.decode(ids, skip_special_tokens=False) == text
    assert hf("a <|endoftext|> b")["input_ids"].count(eos) == 1
    # It learned code: held-out stdlib code compresses well beyond bytes.
    held_out = tiny.held_out_text(20_000)
    assert len(held_out) / len(raw.encode(held_out).ids) > 2.5


def parameter_stats(directory: Path) -> dict[str, torch.Tensor]:
    model = CodeGenForCausalLM.from_pretrained(directory)
    return {name: param.detach() for name, param in model.named_parameters()}


@pytest.mark.parametrize("fixture", ["random_codegen_dir", "random_codegen_dir_wide"])
def test_random_codegen_has_random_biases_and_norms(
    fixture: str, request: pytest.FixtureRequest
) -> None:
    directory: Path = request.getfixturevalue(fixture)
    config = json.loads((directory / "config.json").read_text())
    head_dim = config["n_embd"] // config["n_head"]
    assert config["model_type"] == "codegen"
    assert config["n_head"] % 4 == 0 and config["rotary_dim"] % 16 == 0
    assert config["rotary_dim"] <= head_dim
    assert (directory / "model.safetensors").is_file()
    tokenizer = AutoTokenizer.from_pretrained(directory)
    # Padded like the real CodeGen: more embedding rows than tokens.
    assert config["vocab_size"] % 64 == 0 and config["vocab_size"] > len(tokenizer)
    assert config["bos_token_id"] == config["eos_token_id"] == tokenizer.eos_token_id

    params = parameter_stats(directory)
    norms = [name for name in params if ".ln_" in name]
    biases = [name for name in params if name.endswith("bias") and ".ln_" not in name]
    assert {"transformer.ln_f.weight", "lm_head.bias"} <= set(norms) | set(biases)
    assert len(norms) == 2 * (config["n_layer"] + 1)  # one LayerNorm per block, then ln_f
    for name in norms + biases:
        value = params[name]
        centre = 1.0 if name.endswith("weight") else 0.0
        assert float((value - centre).abs().mean()) > 0.05, f"{name} looks untouched"
    for name, value in params.items():
        assert torch.isfinite(value).all(), name
        assert float(value.std()) > 0.01, name


def test_random_models_differ_and_are_reproducible(
    random_codegen_dir: Path, tiny_tokenizer_dir: Path, tmp_path: Path
) -> None:
    again = tiny.make_random_codegen(
        tmp_path / "again", tokenizer_dir=tiny_tokenizer_dir, seed=0, n_positions=256
    )
    other = tiny.make_random_codegen(
        tmp_path / "other", tokenizer_dir=tiny_tokenizer_dir, seed=7, n_positions=256
    )
    cached, same, different = (parameter_stats(d) for d in (random_codegen_dir, again, other))
    for name, value in cached.items():
        assert torch.equal(value, same[name]), name
    assert not torch.equal(cached["lm_head.bias"], different["lm_head.bias"])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"n_head": 6, "n_embd": 192}, "multiple of 4"),
        ({"rotary_dim": 24}, "multiple of 16"),
        ({"rotary_dim": 64}, "head_dim 32"),
        ({"n_embd": 130}, "not divisible"),
    ],
)
def test_impossible_shapes_are_refused(change: dict[str, int], message: str) -> None:
    shape = {"n_embd": 128, "n_head": 4, "rotary_dim": 16, "n_positions": 256} | change
    with pytest.raises(ValueError, match=message):
        tiny.check_shape(**shape)


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
    record = tiny.training_record(trained_codegen_dir)
    assert record is not None
    tokenizer = AutoTokenizer.from_pretrained(trained_codegen_dir)
    model = tiny.load_model(trained_codegen_dir)
    vocab = model.config.vocab_size
    assert model.config.rotary_dim == 16 and model.config.n_embd // model.config.n_head == 32

    windows = tiny.token_windows(tokenizer, tiny.held_out_text(40_000), 256)
    loss = tiny.model_loss(model, windows)
    targets = np.concatenate([w[1:] for w in windows])
    sample = tiny.code_sample_files()
    train = np.array(
        tiny.token_stream(tokenizer, tiny.read_texts(sample.train), tokenizer.eos_token_id)
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
    assert tiny.train_tiny_codegen(trained_codegen_dir, progress=False) == trained_codegen_dir
    assert time.monotonic() - started < 30
    assert weights.stat().st_mtime_ns == before


def test_trained_model_writes_plausible_python(trained_codegen_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(trained_codegen_dir)
    model = tiny.load_model(trained_codegen_dir)
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
    windows = tiny.token_windows(tokenizer, tiny.held_out_text(8000), 256)
    right = total = 0
    with torch.no_grad():
        for window in windows:
            logits = model(input_ids=torch.tensor([window])).logits[0, :-1]
            right += int((logits.argmax(-1) == torch.tensor(window[1:])).sum())
            total += len(window) - 1
    most_frequent = np.bincount(np.concatenate([w[1:] for w in windows])).max() / total
    assert right / total > max(0.3, 2 * most_frequent)


def test_build_once_builds_once_atomically(tmp_path: Path) -> None:
    calls: list[int] = []

    def slow_build(out: Path) -> None:
        calls.append(1)
        time.sleep(0.3)
        (out / "done").write_text("yes")

    target = tmp_path / "thing"
    threads = [
        threading.Thread(target=tiny.build_once, args=(target, slow_build)) for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert calls == [1]
    assert (target / "done").read_text() == "yes"

    def failing_build(out: Path) -> None:
        (out / "partial").write_text("half")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        tiny.build_once(tmp_path / "broken", failing_build)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.lock", "thing", "thing.lock"]
