"""Small CodeGen checkpoints made here: shapes, configs, seeded and random weights.

No pretrained weights can be downloaded, so the test suite and acepilot-tiny
start from CodeGen checkpoints that look exactly like the released ones on
disk (config.json, safetensors weights, a fast tokenizer):

- `init_checkpoint`: transformers' own initialisation, seeded: what training
  starts from (acepilot-tiny's bootstrap and the trained test model).
- `make_random_codegen`: random weights *and* random biases and LayerNorm
  affines. transformers initialises biases to zero and LayerNorms to the
  identity, which would hide a converter that drops or swaps them.

torch and transformers are imported inside the functions, so that importing
this module (e.g. by the `acepilot` command line) stays cheap.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from acepilot.training.tokenizer import load_tokenizer

if TYPE_CHECKING:
    from transformers import CodeGenForCausalLM, PreTrainedTokenizerFast


def padded_vocab(tokens: int, multiple: int = 64) -> int:
    """Round the embedding rows up, as CodeGen does (51200 rows for ~50295 tokens)."""
    return -(-tokens // multiple) * multiple


def check_shape(n_embd: int, n_head: int, rotary_dim: int, n_positions: int) -> int:
    """Refuse shapes CodeGen or the fused graph cannot take; returns head_dim.

    CodeGen packs qkv_proj in mp_num = 4 groups of heads, so n_head must be a
    multiple of 4. GroupQueryAttention on CPU needs the cos cache
    (rotary_dim / 2) to be a multiple of 8 and at most head_dim / 2.
    CodeGenModel also clamps rotary_dim to n_ctx // n_head.
    """
    if n_head % 4:
        raise ValueError(f"n_head must be a multiple of 4 (CodeGen's mp_num), got {n_head}")
    if n_embd % n_head:
        raise ValueError(f"n_embd {n_embd} is not divisible by n_head {n_head}")
    head_dim = n_embd // n_head
    if rotary_dim % 16 or not 0 < rotary_dim <= head_dim:
        raise ValueError(
            f"rotary_dim must be a positive multiple of 16 and <= head_dim {head_dim}, "
            f"got {rotary_dim}"
        )
    if rotary_dim > n_positions // n_head:
        raise ValueError(f"rotary_dim {rotary_dim} exceeds n_positions // n_head")
    return head_dim


def codegen_config(
    *,
    vocab_size: int,
    n_embd: int,
    n_layer: int,
    n_head: int,
    rotary_dim: int,
    n_positions: int,
    eos_token_id: int,
) -> Any:
    """A CodeGenConfig like the released ones (gelu_new, eps 1e-5, untied lm_head), no dropout."""
    from transformers import CodeGenConfig

    check_shape(n_embd, n_head, rotary_dim, n_positions)
    return CodeGenConfig(
        vocab_size=vocab_size,
        n_positions=n_positions,
        n_ctx=n_positions,
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=n_head,
        rotary_dim=rotary_dim,
        activation_function="gelu_new",
        layer_norm_epsilon=1e-5,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=eos_token_id,
        eos_token_id=eos_token_id,
        tie_word_embeddings=False,
    )


def tokenizer_config(
    tokenizer: PreTrainedTokenizerFast, vocab_size: int | None, **shape: int
) -> Any:
    """`codegen_config` for this tokenizer: its EOS, and its size padded unless given."""
    tokens = len(tokenizer)
    vocab_size = vocab_size or padded_vocab(tokens)
    if vocab_size < tokens:
        raise ValueError(f"vocab_size {vocab_size} is below the tokenizer's {tokens} tokens")
    eos = tokenizer.eos_token_id
    assert isinstance(eos, int)
    return codegen_config(vocab_size=vocab_size, eos_token_id=eos, **shape)


def init_checkpoint(
    out: Path, tokenizer: PreTrainedTokenizerFast, *, seed: int, **shape: int
) -> int:
    """The untrained CodeGen (transformers' initialisation, seeded) with its tokenizer in
    `out`, which training starts from; returns its number of parameters.

    `shape`: n_embd, n_layer, n_head, rotary_dim, n_positions.
    """
    import torch
    from transformers import CodeGenForCausalLM

    config = tokenizer_config(tokenizer, None, **shape)
    torch.manual_seed(seed)
    model = CodeGenForCausalLM(config)
    model.save_pretrained(str(out), safe_serialization=True)
    tokenizer.save_pretrained(str(out))
    return sum(p.numel() for p in model.parameters())


def randomize_(
    model: Any,
    seed: int,
    weight_std: float = 0.05,
    bias_std: float = 0.1,
    norm_std: float = 0.2,
) -> None:
    """Random weights, biases and norm affines (weight 1 + N(0, norm_std), bias N).

    Any family's parameter names: CodeGen's `ln_*` LayerNorms and the `*norm*`
    RMSNorms/LayerNorms of LLaMA, Qwen2 and StarCoder2 (the build tests' models).
    """
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator, dtype=param.dtype)
            if "norm" in name or ".ln_" in name or name.startswith(("transformer.ln_f", "ln_")):
                if name.endswith("weight"):
                    param.copy_(1.0 + norm_std * noise)
                else:
                    param.copy_(bias_std * noise)
            elif name.endswith("bias"):
                param.copy_(bias_std * noise)
            else:
                param.copy_(weight_std * noise)


def make_random_codegen(
    out_dir: Path,
    *,
    tokenizer_dir: Path,
    seed: int = 0,
    vocab_size: int | None = None,
    n_embd: int = 128,
    n_layer: int = 2,
    n_head: int = 4,
    rotary_dim: int = 16,
    n_positions: int = 256,
    weight_std: float = 0.05,
    bias_std: float = 0.1,
    norm_std: float = 0.2,
) -> Path:
    """A CodeGen checkpoint with random parameters everywhere, saved like a released one.

    `vocab_size` defaults to the tokenizer's size rounded up to a multiple of
    64: like the real CodeGen (51200 rows, ~50295 tokens) the model has rows
    no token maps to, which servers must cope with.
    """
    import torch
    from transformers import CodeGenForCausalLM

    tokenizer = load_tokenizer(tokenizer_dir)
    config = tokenizer_config(
        tokenizer,
        vocab_size,
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=n_head,
        rotary_dim=rotary_dim,
        n_positions=n_positions,
    )
    torch.manual_seed(seed)
    model = CodeGenForCausalLM(config).eval()
    randomize_(model, seed, weight_std, bias_std, norm_std)
    tokenizer.model_max_length = n_positions
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir), safe_serialization=True)
    tokenizer.save_pretrained(str(out_dir))
    return out_dir


def load_model(directory: Path) -> CodeGenForCausalLM:
    from transformers import CodeGenForCausalLM

    model: CodeGenForCausalLM = CodeGenForCausalLM.from_pretrained(str(directory)).eval()
    return model


__all__ = [
    "check_shape",
    "codegen_config",
    "init_checkpoint",
    "load_model",
    "make_random_codegen",
    "padded_vocab",
    "randomize_",
]
