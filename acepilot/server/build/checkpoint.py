"""Where a checkpoint comes from: a local directory or a Hugging Face hub id.

The hub download is real (users pass `Salesforce/codegen-350M-mono`); on a
network without the hub it fails with a message that says what to do instead.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from acepilot.server.errors import ModelSourceError

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
# What a checkpoint of a supported family needs: config, tokenizer (tokenizer.json, GPT-2
# style vocab/merges, or a sentencepiece tokenizer.model) and CodeGen2's modeling_codegen.py,
# which the build reads as text (its qkv packing) and never runs. Optimizer states, GGUF,
# ONNX and other formats are not fetched.
HUB_METADATA = [
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
    "special_tokens_map.json",
    "modeling_codegen.py",
]
SAFETENSORS = ["*.safetensors", "*.safetensors.index.json"]
PYTORCH_BIN = ["pytorch_model*.bin", "pytorch_model.bin.index.json"]
HUB_PATTERNS = HUB_METADATA + SAFETENSORS + PYTORCH_BIN
MAX_CONFIG_BYTES = 1 << 20


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint on local disk and how it was obtained (for the manifest)."""

    path: Path
    source: dict[str, Any]
    config: dict[str, Any]


def resolve_checkpoint(source: str, revision: str | None = None) -> Checkpoint:
    """A local directory is used as it is; anything else is tried as a hub id."""
    path = Path(source).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelSourceError(f"{source}: not a directory of a Hugging Face checkpoint")
        resolved = path.resolve()
        return Checkpoint(
            resolved,
            {"kind": "local", "path": str(resolved), "sha256": hash_directory(resolved)},
            read_config(resolved),
        )
    if not HUB_ID.match(source) or ".." in source:
        raise ModelSourceError(f"{source}: no such directory, and not a Hugging Face hub id")
    downloaded = download_from_hub(source, revision)
    return Checkpoint(
        downloaded,
        {"kind": "hub", "id": source, "revision": downloaded.name},
        read_config(downloaded),
    )


def download_from_hub(repo_id: str, revision: str | None) -> Path:
    try:
        from huggingface_hub import snapshot_download
    except ImportError as exc:  # pragma: no cover - part of the build extra
        raise ModelSourceError(
            "downloading needs huggingface_hub: pip install 'acepilot[build]'"
        ) from exc
    try:
        from huggingface_hub import HfApi

        files = HfApi().list_repo_files(repo_id, revision=revision)
        return Path(
            snapshot_download(
                repo_id=repo_id, revision=revision, allow_patterns=hub_patterns(files)
            )
        )
    except Exception as exc:  # the hub client raises many types; all mean the same here
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise ModelSourceError(
            f"could not get {repo_id!r} from the Hugging Face hub ({type(exc).__name__}: {reason}). "
            "Without access to the hub, download the checkpoint elsewhere and pass its local "
            "directory instead."
        ) from None


def hub_patterns(files: list[str]) -> list[str]:
    """What to fetch of a repository: one weight format (safetensors when it has them,
    else PyTorch .bin: several repositories carry both, and both would double the download)."""
    has_safetensors = any(name.endswith(".safetensors") for name in files)
    return HUB_METADATA + (SAFETENSORS if has_safetensors else PYTORCH_BIN)


def read_config(directory: Path) -> dict[str, Any]:
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise ModelSourceError(f"{directory}: no config.json (not a Hugging Face checkpoint)")
    if config_path.stat().st_size > MAX_CONFIG_BYTES:
        raise ModelSourceError(f"{config_path}: implausibly large config.json")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelSourceError(f"{config_path}: not valid JSON ({exc})") from None
    if not isinstance(config, dict):
        raise ModelSourceError(f"{config_path}: expected a JSON object")
    return config


def hash_directory(directory: Path) -> str:
    """One sha256 over the names and contents of the checkpoint's files."""
    digest = hashlib.sha256()
    for file in sorted(p for p in directory.iterdir() if p.is_file()):
        digest.update(file.name.encode() + b"\0")
        with file.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()
