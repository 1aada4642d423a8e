"""Small checkpoints of every supported family, made from the real checkpoints' configs.

`scaled_config` keeps what makes a family itself (model_type, GQA ratio, rotary
kind and theta, rope scaling, biases, tied embeddings, partial rotary, sliding
window) and shrinks depth and width; `make_checkpoint` fills it with random
weights AND random biases and norm affines (transformers initialises those to
zero / one, which hides a converter that drops or swaps them) and saves it the
way the hub has it, with a tokenizer carrying the family's FIM special tokens.
`train_checkpoint` trains one briefly, for the int8/int4 judgements (random
weights have nearly flat logits, where any quantization flips the argmax).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from acepilot.training.codegen import randomize_

DATA = Path(__file__).resolve().parents[2] / "data" / "configs"
HEAD_DIM = 32

# The family's special tokens, as their tokenizers have them (FIM and repo-level).
SPECIAL_TOKENS: dict[str, list[str]] = {
    "qwen2": [
        "<|fim_prefix|>",
        "<|fim_middle|>",
        "<|fim_suffix|>",
        "<|fim_pad|>",
        "<|repo_name|>",
        "<|file_sep|>",
        "<|im_start|>",
        "<|im_end|>",
    ],
    "starcoder2": [
        "<fim_prefix>",
        "<fim_middle>",
        "<fim_suffix>",
        "<fim_pad>",
        "<repo_name>",
        "<file_sep>",
    ],
    "llama": ["<｜fim▁hole｜>", "<｜fim▁begin｜>", "<｜fim▁end｜>", "<|EOT|>"],
    "codegen": ["<mask_1>", "<sep>", "<eom>", "<pad>"],
}
DEEPSEEK_BOS, DEEPSEEK_EOS = "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"
MODELING_CODEGEN2 = """# The line of CodeGen2-1B's modeling_codegen.py the builder reads (never imported).
class CodeGenAttention:
    def forward(self, hidden_states):
        qkv = self.qkv_proj(hidden_states)
        # TODO(enijkamp): factor out number of logical TPU-v4 cores or make forward pass agnostic
        mp_num = {mp_num}
        qkv_split = qkv.reshape(qkv.shape[:-1] + (mp_num, -1))
"""


def real_config(name: str) -> dict[str, Any]:
    config: dict[str, Any] = json.loads((DATA / f"{name}.json").read_text())
    return config


def round16(value: float) -> int:
    return max(16, round(value / 16) * 16)


def scaled_config(
    name: str,
    vocab_size: int,
    *,
    layers: int = 2,
    max_positions: int = 512,
    sliding_window: int | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """The real config `name`, shrunk: head_dim 32, at most 4 KV heads, 2 layers."""
    config = dict(real_config(name))
    config["vocab_size"] = vocab_size
    if config["model_type"] == "codegen":
        heads = 8  # a multiple of CodeGen2-1B's mp_num 8
        rotary_fraction = config["rotary_dim"] / (config["n_embd"] // config["n_head"])
        config.update(
            n_embd=heads * HEAD_DIM,
            n_head=heads,
            n_layer=layers,
            rotary_dim=int(HEAD_DIM * rotary_fraction),
            n_positions=max_positions,
            n_ctx=max_positions,
        )
    else:
        heads = config["num_attention_heads"]
        kv_heads = config.get("num_key_value_heads") or heads
        ratio = heads // kv_heads
        new_kv = max(1, min(4, kv_heads // 4)) if ratio == 1 else 1
        new_heads = new_kv * ratio
        mlp_ratio = config["intermediate_size"] / config["hidden_size"]
        hidden = new_heads * HEAD_DIM
        config.update(
            hidden_size=hidden,
            num_attention_heads=new_heads,
            num_key_value_heads=new_kv,
            num_hidden_layers=layers,
            intermediate_size=round16(hidden * mlp_ratio),
            max_position_embeddings=max_positions,
        )
        if "max_window_layers" in config:
            config["max_window_layers"] = layers
        if config["model_type"] == "starcoder2":
            config["sliding_window"] = sliding_window
        elif "sliding_window" in config:
            config["sliding_window"] = max_positions
    config.update(overrides)
    return config


def hf_config(config: dict[str, Any]) -> Any:
    from transformers import AutoConfig

    settings = {k: v for k, v in config.items() if k not in ("model_type", "auto_map")}
    return AutoConfig.for_model(config["model_type"], **settings)


def model_class(model_type: str) -> Any:
    import transformers

    return {
        "codegen": transformers.CodeGenForCausalLM,
        "llama": transformers.LlamaForCausalLM,
        "qwen2": transformers.Qwen2ForCausalLM,
        "starcoder2": transformers.Starcoder2ForCausalLM,
    }[model_type]


def family_tokenizer(tokenizer_dir: Path, model_type: str) -> Any:
    """The tiny byte-level BPE with the family's special tokens added."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    tokens = list(SPECIAL_TOKENS[model_type])
    if model_type == "llama":
        tokens += [DEEPSEEK_BOS, DEEPSEEK_EOS]
    tokenizer.add_special_tokens({"additional_special_tokens": tokens})
    if model_type == "llama":
        tokenizer.bos_token, tokenizer.eos_token = DEEPSEEK_BOS, DEEPSEEK_EOS
    return tokenizer


def padded(tokens: int) -> int:
    return -(-tokens // 64) * 64


def write_checkpoint(
    out: Path, config: dict[str, Any], model: Any, tokenizer: Any, mp_num: int | None = None
) -> Path:
    """Save like the hub: safetensors, config.json, tokenizer; CodeGen2 with its packing."""
    out.mkdir(parents=True, exist_ok=True)
    if mp_num is not None:
        import torch

        from acepilot.server.build.families.codegen2 import regroup_qkv_

        regroup_qkv_(model, config["n_head"], 4, mp_num, torch)
        (out / "modeling_codegen.py").write_text(MODELING_CODEGEN2.replace("{mp_num}", str(mp_num)))
    model.save_pretrained(str(out), safe_serialization=True)
    tokenizer.save_pretrained(str(out))
    saved = json.loads((out / "config.json").read_text())
    if "auto_map" in config:
        saved["auto_map"] = config["auto_map"]
    (out / "config.json").write_text(json.dumps(saved, indent=2))
    return out


def make_checkpoint(out: Path, name: str, tokenizer_dir: Path, seed: int = 0, **scale: Any) -> Path:
    """A random-weight checkpoint of the real config `name`, scaled down."""
    import torch

    model_type = real_config(name)["model_type"]
    tokenizer = family_tokenizer(tokenizer_dir, model_type)
    config = scaled_config(name, padded(len(tokenizer)), **scale)
    config.update(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(seed)
    model = model_class(model_type)(hf_config(config)).eval()
    randomize_(model, seed)
    mp_num = 8 if "auto_map" in config else None
    return write_checkpoint(out, config, model, tokenizer, mp_num)


def train_checkpoint(
    out: Path,
    name: str,
    tokenizer_dir: Path,
    texts: list[str],
    *,
    steps: int = 300,
    seq_len: int = 64,
    batch: int = 16,
    seed: int = 0,
    **scale: Any,
) -> Path:
    """A scaled checkpoint of `name` trained `steps` steps of next-token prediction on `texts`."""
    import torch

    model_type = real_config(name)["model_type"]
    tokenizer = family_tokenizer(tokenizer_dir, model_type)
    config = scaled_config(name, padded(len(tokenizer)), **scale)
    config.update(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    for key in ("attention_dropout", "residual_dropout", "embedding_dropout"):
        if key in config:
            config[key] = 0.0
    torch.manual_seed(seed)
    model = model_class(model_type)(hf_config(config))
    eos = tokenizer.eos_token_id
    stream: list[int] = []
    for text in texts:
        stream.extend(tokenizer(text, add_special_tokens=False)["input_ids"])
        stream.append(eos)
    data = torch.tensor(stream, dtype=torch.long)
    rng = np.random.default_rng(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    model.train()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a model this small gains nothing from a second thread
    try:
        loss = train_steps(model, optimizer, data, rng, steps, seq_len, batch)
    finally:
        torch.set_num_threads(threads)
    model.eval()
    out.mkdir(parents=True, exist_ok=True)
    (out / "training.json").write_text(json.dumps({"steps": steps, "final_loss": loss}))
    return write_checkpoint(out, config, model, tokenizer)


def train_steps(
    model: Any,
    optimizer: Any,
    data: Any,
    rng: np.random.Generator,
    steps: int,
    seq_len: int,
    batch: int,
) -> float:
    """AdamW with a cosine schedule from 3e-3; returns the last step's loss."""
    import torch

    loss = torch.tensor(float("nan"))
    for step in range(steps):
        lr = 3e-3 * 0.5 * (1 + math.cos(math.pi * step / steps))
        for group in optimizer.param_groups:
            group["lr"] = lr
        starts = rng.integers(0, len(data) - seq_len - 1, batch)
        windows = torch.stack([data[s : s + seq_len] for s in starts])
        loss = model(windows, labels=windows).loss
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if step % 50 == 0:
            print(f"step {step} loss {loss.item():.3f}", flush=True)
    return loss.item()
