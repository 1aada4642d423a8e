"""The shipped default model: models/acepilot-tiny/, registered on first use, its sha256 checked.

`make run` on a fresh machine must be the install plus seconds, so the
trained, built and evaluated artifact is committed under models/ (an entry
directory in the registry's layout: manifest.json, the int8 graph, the
tokenizer, and provenance/: sources and licences, recipe, training log,
evaluation). `ensure_shipped` copies it into the user's registry and makes it
production; before that it checks every file against the manifest's sha256
*and* the manifest itself against `SHIPPED_DIGEST`, pinned here in the code:
a corrupt file, a Git LFS pointer or a swapped manifest is refused with a
clear error instead of serving something else.

Regenerate the shipped model only deliberately: `ship()` writes the directory
from a bootstrap work dir and returns the new digest, which must then be put
into `SHIPPED_DIGEST` by hand (the test suite checks they agree).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from acepilot.training.bootstrap.config import MODEL_NAME, repository_root

if TYPE_CHECKING:
    from acepilot.server.registry import ModelEntry, Registry

# files_digest of the shipped entry's files (acepilot/server/registry.py); see ship().
SHIPPED_DIGEST = "f02a7afe58f77b48d826f2bd4c190b228f875371b71f5dce4ca6756e6f690610"
PROVENANCE = "provenance"


def shipped_dir() -> Path:
    return repository_root() / "models" / MODEL_NAME


def load_shipped(directory: Path | None = None, digest: str | None = None) -> ModelEntry:
    """The shipped entry, every file's sha256 verified; RegistryError when anything differs."""
    from acepilot.server.errors import RegistryError
    from acepilot.server.registry import ModelEntry

    directory = directory or shipped_dir()
    expected = SHIPPED_DIGEST if digest is None else digest
    entry = ModelEntry.load(directory)
    if entry.digest != expected:
        raise RegistryError(
            f"{directory}: the manifest's files do not match the shipped model "
            f"(digest {entry.digest}, expected {expected}); restore the directory from the "
            "repository or rebuild it with `acepilot bootstrap`"
        )
    entry.verify()  # every file's bytes against its sha256
    return entry


def ensure_shipped(
    registry: Registry, directory: Path | None = None, digest: str | None = None
) -> ModelEntry:
    """The shipped model as production of MODEL_NAME in `registry` (copied the first time)."""
    from acepilot.training.bootstrap.publish import copy_entry

    shipped = load_shipped(directory, digest)
    for version in reversed(registry.versions(MODEL_NAME)):
        try:
            candidate = registry.entry(MODEL_NAME, version)
        except Exception:
            continue
        if candidate.digest == shipped.digest:
            entry = candidate
            break
    else:
        entry = copy_entry(shipped, registry, {"shipped_from": str(directory or shipped_dir())})
    if registry.production(MODEL_NAME) != entry.version:
        registry.set_production(MODEL_NAME, entry.version)
    return entry


def shipped_record(entry: ModelEntry) -> dict[str, Any]:
    """The bootstrap record kept in provenance/ (what `acepilot bootstrap` printed)."""
    path = entry.path / PROVENANCE / "bootstrap.json"
    try:
        record: dict[str, Any] = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        record = {}
    record.update(
        {
            "name": entry.name,
            "version": entry.version,
            "registry": str(entry.path.parent.parent),
            "shipped": True,
        }
    )
    return record


def licences_text(work: Path) -> str:
    """A summary of where the training code came from and under which licences;
    every file with its licence is in sources.json beside it."""
    sources = json.loads((work / "sources.json").read_text("utf-8"))
    lines = [
        "# Licences of the code this model was trained on",
        "",
        "Only permissively licensed code found on the training machine was used; every",
        "file with its licence (SPDX) is listed in `sources.json` (`files`). Held-out",
        "evaluation packages are listed there too: the model never saw them.",
        "",
        "| language | licence | files |",
        "|---|---|---|",
    ]
    for language, per in sorted(sources["licences"].get("summary", {}).items()):
        for licence, count in sorted(per.items()):
            lines.append(f"| {language} | {licence} | {count} |")
    pypi = sources["licences"].get("pypi", {})
    if pypi:
        lines += [
            "",
            "Python distributions used (licence from their metadata): "
            + ", ".join(
                f"{name} ({licence})" for name, licence in sorted(pypi["distributions"].items())
            ),
            "",
            "Refused as not clearly permissive: "
            + ", ".join(sorted(pypi.get("refused_not_clearly_permissive", []))),
        ]
    return "\n".join(lines) + "\n"


def fim_order(work: Path) -> str | None:
    """The FIM order serving should use, from the evaluation (None: the suffix did not help)."""
    from acepilot.training.bootstrap.evaluate import best_fim_order

    try:
        results = json.loads((work / "evaluate" / "results.json").read_text("utf-8"))
    except (OSError, ValueError):
        return None
    return best_fim_order(results)


def ship(work: Path, published: ModelEntry, out: Path | None = None) -> str:
    """Write models/acepilot-tiny from a finished bootstrap (its work dir and published
    entry) with its provenance; returns the digest to pin in SHIPPED_DIGEST."""
    from acepilot.server.registry import Registry

    out = out or shipped_dir()
    provenance = {
        "bootstrap.json": work / "bootstrap.json",
        "sources.json": work / "sources.json",
        "training-log.jsonl": work / "train" / "log.jsonl",
        "training-run.json": work / "train" / "run.json",
        "evaluation.json": work / "evaluate" / "results.json",
        "examples.json": work / "evaluate" / "examples.json",
        "loss.png": work / "train" / "loss.png",
    }
    staging_root = out.parent / f".{out.name}.staging"
    shutil.rmtree(staging_root, ignore_errors=True)
    registry = Registry(staging_root)
    with registry.stage(MODEL_NAME) as staging:
        for name in published.files:
            if name.startswith(f"{PROVENANCE}/"):
                continue
            target = staging / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(published.file_path(name), target)
        (staging / PROVENANCE).mkdir()
        for name, source in provenance.items():
            if source.is_file():
                shutil.copyfile(source, staging / PROVENANCE / name)
        (staging / PROVENANCE / "LICENCES.md").write_text(licences_text(work), "utf-8")
        manifest = {
            key: value
            for key, value in published.manifest.items()
            if key not in ("files", "name", "version", "created", "format")
        }
        # servers use FIM whenever the manifest offers it: offer it only when it
        # measured at least as well as the prefix alone, in the order that measured
        # best (the tokens stay in the tokenizer either way)
        order = fim_order(work)
        fim = manifest["tokenizer"].get("fim")
        manifest["tokenizer"] = {
            **manifest["tokenizer"],
            "fim": {**fim, "order": order} if order and fim else None,
        }
        entry = registry.commit(staging, MODEL_NAME, manifest)
    shutil.rmtree(out, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(entry.path, out)
    shutil.rmtree(staging_root, ignore_errors=True)
    return entry.digest


__all__ = [
    "SHIPPED_DIGEST",
    "ensure_shipped",
    "load_shipped",
    "ship",
    "shipped_dir",
    "shipped_record",
]
