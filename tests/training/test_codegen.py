"""Random CodeGen checkpoints: random everywhere, reproducible, and only possible shapes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, CodeGenForCausalLM

from acepilot.training import codegen


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
    again = codegen.make_random_codegen(
        tmp_path / "again", tokenizer_dir=tiny_tokenizer_dir, seed=0, n_positions=256
    )
    other = codegen.make_random_codegen(
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
        codegen.check_shape(**shape)
