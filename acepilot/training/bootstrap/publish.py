"""Stages 6 and 8: the build into a private registry, and publishing the evaluated entry.

The build is `model build` (fused ONNX graph, int8, parity gate against
PyTorch) into a registry private to the work dir, so nothing reaches the
user's registry before the evaluation has passed. Publishing copies the
evaluated entry (reusing an identical one) and makes it production.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from acepilot.training.bootstrap.config import MODEL_NAME, BootstrapConfig
from acepilot.training.bootstrap.data import TOKENS

if TYPE_CHECKING:
    from acepilot.server.registry import ModelEntry, Registry


def private_entry(build_dir: Path) -> ModelEntry:
    from acepilot.server.registry import Registry

    return Registry(build_dir / "registry").resolve(MODEL_NAME)


def make_build(
    config: BootstrapConfig, checkpoint: Path, out: Path, progress: bool
) -> dict[str, Any]:
    """`model build` into a registry private to the work dir (published only after evaluation)."""
    from acepilot.server.build.pipeline import build_model
    from acepilot.server.registry import Registry

    began = time.monotonic()
    entry = build_model(
        str(checkpoint),
        precision=config.precision,
        registry=Registry(out / "registry"),
        name=MODEL_NAME,
        parity=config.parity,
        progress=progress,
    )
    tokenizer = entry.manifest.get("tokenizer", {})
    fim = tokenizer.get("fim") or {}
    wanted = TOKENS.manifest()
    if (
        any(fim.get(k) != wanted[k] for k in ("prefix", "suffix", "middle"))
        or tokenizer.get("repo") != TOKENS.repo_manifest()
    ):
        # the builder reads FIM tokens from the tokenizer: it must have found ours
        raise RuntimeError(f"the build did not record the model's FIM/repository tokens: {fim!r}")
    return {
        "version": entry.version,
        "parity": entry.manifest.get("parity"),
        "seconds": round(time.monotonic() - began, 1),
    }


def copy_entry(
    entry: ModelEntry, registry: Registry, extra: dict[str, Any] | None = None
) -> ModelEntry:
    """`entry`'s files into `registry` as a new version of MODEL_NAME (manifest kept)."""
    with registry.stage(MODEL_NAME) as staging:
        for name in entry.files:
            target = staging / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(entry.file_path(name), target)
        manifest = {
            key: value
            for key, value in entry.manifest.items()
            if key not in ("files", "name", "version", "created", "format")
        }
        manifest.update(extra or {})
        return registry.commit(staging, MODEL_NAME, manifest)


def publish(entry: ModelEntry, registry: Registry) -> ModelEntry:
    """Copy the evaluated entry into `registry` (reusing an identical one) and make it production."""
    from acepilot.server.errors import RegistryError

    source = entry.manifest.get("source", {}).get("sha256")
    published = None
    for version in reversed(registry.versions(MODEL_NAME)):
        try:
            candidate = registry.entry(MODEL_NAME, version)
        except RegistryError:
            continue
        if (
            candidate.files == entry.files
            and candidate.manifest.get("source", {}).get("sha256") == source
        ):
            published = candidate
            break
    if published is None:
        published = copy_entry(entry, registry)
    if registry.production(MODEL_NAME) != published.version:
        registry.set_production(MODEL_NAME, published.version)
    return published


def published_entry(registry: Registry, record: dict[str, Any]) -> ModelEntry | None:
    """The registry's production model if it is what `record` published, else None."""
    from acepilot.server.errors import RegistryError

    try:
        if registry.production(MODEL_NAME) != record.get("version"):
            return None
        entry = registry.entry(MODEL_NAME, str(record["version"]))
    except (RegistryError, KeyError):
        return None
    return entry if entry.files == record.get("files") else None


__all__ = ["copy_entry", "make_build", "private_entry", "publish", "published_entry"]
