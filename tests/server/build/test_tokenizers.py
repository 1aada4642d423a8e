"""Tokenizers into the artifact (tokenizer.json, sentencepiece converted at build time),
FIM tokens read from the tokenizer, and what is fetched from the hub."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from family_models import hf_config, model_class, padded, scaled_config

from acepilot.server.build.checkpoint import HUB_METADATA, hub_patterns
from acepilot.server.build.pipeline import build_model
from acepilot.server.build.tokenizer import KNOWN_FIM, fim_from_vocab
from acepilot.server.errors import ModelSourceError
from acepilot.server.registry import Registry
from acepilot.training.codegen import randomize_
from acepilot.training.tiny.sample import code_sample_files, read_texts

SAMPLES = [
    "def add(a, b):\n    return a + b\n",
    "    for i in range(10):\n\tprint(f'{i:>3}')  # ünïcode ✓\n",
    "class Stack:\n    def __init__(self):\n        self.items = []\n",
]


@pytest.mark.parametrize("known", KNOWN_FIM, ids=lambda k: k.name)
def test_each_fim_token_set_is_recognised_from_the_vocabulary(known) -> None:
    vocab = {token: i for i, token in enumerate(["a", "b", *known.required, *known.stop])}
    if known.repo:
        vocab.update({token: len(vocab) + i for i, token in enumerate(known.repo)})
    fim, repo = fim_from_vocab(vocab)
    assert fim is not None
    assert (fim["prefix"], fim["suffix"], fim["middle"]) == (
        known.prefix,
        known.suffix,
        known.middle,
    )
    assert fim["order"] in fim["orders"] and fim["stop"] == list(known.stop)
    assert (repo is None) == (known.repo is None)


def test_no_fim_without_the_whole_token_set() -> None:
    """CodeGen 1's vocabulary; and a set with one token missing is not a FIM model."""
    assert fim_from_vocab({"<|endoftext|>": 0, "def": 1}) == (None, None)
    partial = {"<fim_prefix>": 0, "<fim_suffix>": 1, "<|endoftext|>": 2}
    assert fim_from_vocab(partial) == (None, None)


def test_hub_downloads_one_weight_format() -> None:
    both = ["config.json", "model.safetensors", "pytorch_model.bin", "tokenizer.model"]
    assert hub_patterns(both) == [*HUB_METADATA, "*.safetensors", "*.safetensors.index.json"]
    assert "pytorch_model*.bin" in hub_patterns(["config.json", "pytorch_model.bin"])
    assert "tokenizer.model" in HUB_METADATA and "modeling_codegen.py" in HUB_METADATA


@pytest.fixture(scope="module")
def sentencepiece_llama(tmp_path_factory) -> Path:
    """A LLaMA checkpoint whose only tokenizer is a sentencepiece tokenizer.model (CodeLlama's
    way): slow LlamaTokenizer files, no tokenizer.json."""
    import sentencepiece as spm
    import torch
    from transformers import LlamaTokenizer

    out = tmp_path_factory.mktemp("spm-llama")
    corpus = out / "corpus.txt"
    corpus.write_text("\n".join(read_texts(code_sample_files().train[:40])))
    spm.SentencePieceTrainer.train(
        input=str(corpus),
        model_prefix=str(out / "sp"),
        vocab_size=600,
        model_type="bpe",
        byte_fallback=True,
        character_coverage=1.0,
        # As code models' sentencepiece models are trained (CodeLlama): text kept as it is.
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        allow_whitespace_only_pieces=True,
        bos_id=1,
        eos_id=2,
        unk_id=0,
        minloglevel=2,
    )
    checkpoint = out / "checkpoint"
    slow = LlamaTokenizer(vocab_file=str(out / "sp.model"))  # legacy, as CodeLlama's
    slow.save_pretrained(str(checkpoint))
    assert not (checkpoint / "tokenizer.json").exists()
    config = scaled_config("deepseek-coder-1.3b-base", padded(len(slow)))
    config.update(bos_token_id=1, eos_token_id=2)
    torch.manual_seed(0)
    model = model_class("llama")(hf_config(config)).eval()
    randomize_(model, 0)
    model.save_pretrained(str(checkpoint), safe_serialization=True)
    return checkpoint


def test_a_sentencepiece_tokenizer_becomes_tokenizer_json(sentencepiece_llama, tmp_path) -> None:
    import sentencepiece as spm
    from tokenizers import Tokenizer

    entry = build_model(
        str(sentencepiece_llama), precision="fp32", registry=Registry(tmp_path), progress=False
    )
    assert entry.manifest["parity"]["status"] == "passed"
    assert entry.manifest["family"] == "llama"
    served = Tokenizer.from_file(str(entry.tokenizer_path))  # what serving loads
    model = spm.SentencePieceProcessor(model_file=str(sentencepiece_llama / "tokenizer.model"))
    for text in SAMPLES:  # the ids sentencepiece itself gives, after the BOS
        assert served.encode(text).ids == [1, *model.encode(text)], text
        assert served.decode(served.encode(text).ids, skip_special_tokens=True) == text
    assert entry.manifest["tokenizer"]["bos_token_id"] == 1
    assert entry.manifest["tokenizer"]["eos_token_id"] == 2


def test_a_tokenizer_that_is_remote_code_is_refused(family_checkpoints, tmp_path) -> None:
    """CodeGen2.5's tokenizer is its own Python (tiktoken) code: never run; without a
    tokenizer.json beside it the build says what to do."""
    broken = tmp_path / "codegen25"
    shutil.copytree(family_checkpoints["codegen25-7b-multi"], broken)
    (broken / "tokenizer.json").unlink()
    settings = json.loads((broken / "tokenizer_config.json").read_text())
    settings.update(
        tokenizer_class="CodeGen25Tokenizer",
        auto_map={"AutoTokenizer": ["tokenization_codegen25.CodeGen25Tokenizer", None]},
    )
    (broken / "tokenizer_config.json").write_text(json.dumps(settings))
    registry = Registry(tmp_path / "registry")
    with pytest.raises(ModelSourceError, match=r"put a tokenizer\.json"):
        build_model(str(broken), precision="fp32", registry=registry, progress=False)
    assert registry.names() == []
