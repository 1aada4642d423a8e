"""Stages 2 and 3: the tokenizer and the packed training rows.

Tokenizer: byte-level BPE (GPT-2/CodeGen style; acepilot/training/tokenizer.py,
the trainer the test models use too) trained on a sample of the training files
only, with `<|endoftext|>` (BOS = EOS, id 0) and the StarCoder2 FIM and
repository tokens as special tokens, so the model build finds them in the
tokenizer and records them in the manifest.

Data: each training file is cut into pieces that fit a row
(`chars_per_chunk`), and each piece becomes one document
(acepilot/training/corpus/fim.py): sometimes preceded by snippets of other
files of its package in the repository format, sometimes with its path, and
with probability `fim_rate` in fill-in-the-middle order (PSM or SPM). The
documents are packed into rows of `seq_len` tokens, the layout `acepilot
train corpus` writes (train.npy, validation.npy, manifest.json). Validation
documents stay plain text, so the validation loss is ordinary next-token loss.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from acepilot.training.bootstrap.config import BootstrapConfig
from acepilot.training.bootstrap.sources import SourceFile, Sources, name_hash, read_code
from acepilot.training.corpus import fim
from acepilot.training.tokenizer import load_tokenizer, train_tokenizer

TOKENS = fim.FimTokens()


def tokenizer_sample(files: Sequence[SourceFile], budget: int) -> list[str]:
    """Training files in hash order until `budget` bytes: a uniform sample of the mixture."""
    texts: list[str] = []
    for file in sorted(files, key=lambda f: (name_hash("t" + f.relative), f.relative)):
        text = read_code(file.path)
        if text is None or len(text) > budget:
            continue
        texts.append(text)
        budget -= len(text)
    return texts


def make_tokenizer(sources: Sources, config: BootstrapConfig, out: Path) -> dict[str, Any]:
    began = time.monotonic()
    train_tokenizer(
        tokenizer_sample(sources.train, config.tokenizer_sample_bytes),
        config.vocab_size,
        out,
        special_tokens=TOKENS.special(),
    )
    tokenizer = load_tokenizer(out)
    tokenizer.model_max_length = config.n_positions
    tokenizer.save_pretrained(str(out))
    for token in TOKENS.special():
        ids = tokenizer(token, add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            raise RuntimeError(f"special token {token!r} is not one token: {ids}")
    digest = hashlib.sha256((out / "tokenizer.json").read_bytes()).hexdigest()
    return {
        "tokens": len(tokenizer),
        "sha256": digest,
        "seconds": round(time.monotonic() - began, 1),
    }


def package_path(file: SourceFile) -> str:
    """The path a repository would show: "python/json/decoder.py" -> "json/decoder.py"."""
    return file.relative.split("/", 1)[1]


def documents(
    files: Sequence[SourceFile], config: BootstrapConfig, rng: random.Random, *, plain: bool
) -> Iterator[tuple[str, str | None, bool]]:
    """(document text ending in EOS, FIM order or None, has repository context) per piece."""
    settings = fim.FimSettings(
        rate=config.fim_rate, spm_rate=config.fim_spm_rate, line_rate=config.fim_line_rate
    )
    by_package: dict[str, list[SourceFile]] = {}
    for file in files:
        by_package.setdefault(file.package, []).append(file)
    for package, members in by_package.items():
        texts = [read_code(f.path) or "" for f in members]
        for index, (file, text) in enumerate(zip(members, texts, strict=True)):
            for piece in fim.chunk_text(text, config.chars_per_chunk):
                if plain:
                    yield piece + TOKENS.eos, None, False
                    continue
                with_repo = rng.random() < config.repo_rate and len(members) > 1
                with_path = rng.random() < 0.5
                header = ""
                if with_repo:
                    others = [i for i in range(len(members)) if i != index]
                    picks = rng.sample(others, min(2, len(others)))
                    share = config.repo_context_chars // len(picks)
                    context = [
                        (package_path(members[i]), fim.snippet(texts[i], share, rng)) for i in picks
                    ]
                    repo = package.split(":", 1)[1]
                    header = fim.repo_header(TOKENS, repo, context, package_path(file))
                elif with_path:
                    header = f"{TOKENS.file_sep}{package_path(file)}\n"
                body, order = fim.fim_document(piece, TOKENS, settings, rng)
                yield header + body, order, with_repo


def pack_batch(packer: Any, tokenizer: Any, batch: list[str], eos: int) -> None:
    """Tokenize the documents and hand them to the packer; empties `batch`."""
    for ids in tokenizer(batch, add_special_tokens=False, verbose=False)["input_ids"]:
        # each document already ends in EOS, which the packer writes itself
        packer.add(ids[:-1] if ids and ids[-1] == eos else ids)
    batch.clear()


def make_data(
    sources: Sources, config: BootstrapConfig, tokenizer_dir: Path, out: Path
) -> dict[str, Any]:
    """train.npy / validation.npy / manifest.json as `acepilot train corpus` lays them out."""
    from acepilot.training.corpus import pack

    began = time.monotonic()
    tokenizer = load_tokenizer(tokenizer_dir)
    eos = tokenizer.eos_token_id
    dtype = pack.token_dtype(len(tokenizer))
    counts: dict[str, dict[str, Any]] = {}
    for split, files, plain in (
        ("train", sources.train, False),
        ("validation", sources.validation, True),
    ):
        rng = random.Random(f"{config.seed}:{split}")
        packer = pack.Packer(out / f"{split}.npy", config.seq_len, eos, dtype)
        orders: dict[str, int] = {}
        repo_docs = 0
        batch: list[str] = []
        for text, order, repo in documents(files, config, rng, plain=plain):
            batch.append(text)
            if order:
                orders[order] = orders.get(order, 0) + 1
            repo_docs += repo
            if len(batch) >= 512:
                pack_batch(packer, tokenizer, batch, eos)
        pack_batch(packer, tokenizer, batch, eos)
        counts[split] = {**packer.finish(), "fim": orders, "repo_documents": repo_docs}
    manifest = {
        "name": "acepilot-bootstrap",
        "version": 1,
        "seq_len": config.seq_len,
        "tokenizer": {"path": str(tokenizer_dir), "vocab_size": len(tokenizer)},
        "fim": TOKENS.manifest(),
        "repo": TOKENS.repo_manifest(),
        "counts": counts,
        "licences": sources.licences,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str) + "\n")
    return {"counts": counts, "seconds": round(time.monotonic() - began, 1)}


__all__ = ["TOKENS", "documents", "make_data", "make_tokenizer"]
