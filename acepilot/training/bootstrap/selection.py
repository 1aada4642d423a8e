"""Stage 1, sources (continued): the deterministic train / validation / held-out split.

The held-out unit is the package (see sources.py): `name_hash(package) %
held_out_every == 0` puts a whole package aside, so the evaluation never sees a
sibling of a file the model trained on. Files pass the corpus's content rules
(acepilot/training/corpus/filters.py: minified, generated, binary, long lines).
Exact duplicates (whitespace-normalised) are kept once, training side first,
so a held-out file that also exists in a training package leaves the held-out
side. Validation files (the training loop's loss) come from training packages.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from acepilot.training.bootstrap import sources as src
from acepilot.training.bootstrap.config import BootstrapConfig, repository_root
from acepilot.training.corpus import filters
from acepilot.training.corpus.fim import FimTokens

SPECIAL = FimTokens().special()


def normal_hash(text: str) -> str:
    """sha256 of the text with all whitespace removed: copies that differ only in
    indentation or line ends count as one."""
    return hashlib.sha256("".join(text.split()).encode()).hexdigest()


def candidates(config: BootstrapConfig, licences: dict[str, Any]) -> Iterator[src.Found]:
    """Every file of every root, with its package and licence."""
    yield from src.python_stdlib()
    if config.pypi_bytes:
        yield from src.python_site_packages(licences)
    node_roots = [
        Path(p) if Path(p).is_absolute() else repository_root() / p for p in config.node_roots
    ]
    if config.javascript_bytes or config.typescript_bytes:
        yield from src.npm_packages(node_roots)
    if config.go_bytes:
        yield from src.go_stdlib(src.go_roots())
    if config.rust_bytes:
        yield from src.rust_crates()


def budgets(config: BootstrapConfig) -> dict[str, int]:
    """Training bytes per kind of source (the held-out side gets `held_out_bytes` each)."""
    return {
        "python": config.python_bytes,
        "pypi": config.pypi_bytes,
        "javascript": config.javascript_bytes,
        "typescript": config.typescript_bytes,
        "go": config.go_bytes,
        "rust": config.rust_bytes,
    }


def kind_of(package: str, language: str) -> str:
    return "pypi" if package.startswith("pypi:") else language


def select_sources(config: BootstrapConfig) -> src.Sources:
    licences: dict[str, Any] = {}
    dropped: dict[str, int] = {}

    def drop(reason: str) -> None:
        dropped[reason] = dropped.get(reason, 0) + 1

    # group by package; packages in hash order, files in path order within each
    packages: dict[str, list[tuple[str, Path, str, str]]] = {}
    for package, relative, path, licence in candidates(config, licences):
        language = src.language_of(relative)
        size = path.stat().st_size
        if size > config.max_file_bytes:
            drop("too_large")
            continue
        packages.setdefault(package, []).append((relative, path, licence, language))
    order = sorted(packages, key=lambda p: (src.name_hash(p), p))
    held_packages = [p for p in order if src.name_hash(p) % config.held_out_every == 0]
    train_packages = [p for p in order if src.name_hash(p) % config.held_out_every != 0]

    left = budgets(config)
    held_left = {kind: config.held_out_bytes if spend else 0 for kind, spend in left.items()}
    seen: set[str] = set()
    train: list[src.SourceFile] = []
    validation: list[src.SourceFile] = []
    held_out: list[src.SourceFile] = []

    def take(names: Iterable[str], budget: dict[str, int], into: list[src.SourceFile]) -> None:
        for package in names:
            for relative, path, licence, language in packages[package]:
                kind = kind_of(package, language)
                size = path.stat().st_size
                if budget.get(kind, 0) < size:
                    continue
                text = src.read_code(path)
                if text is None:
                    drop("binary")
                    continue
                reason = filters.content_reason(
                    text,
                    min_bytes=200,
                    max_bytes=config.max_file_bytes,
                    max_line_length=1000,
                    max_mean_line_length=100.0,
                    min_alnum_ratio=0.25,
                )
                if reason:
                    drop(reason)
                    continue
                if any(token in text for token in SPECIAL):
                    drop("special_token_text")  # would be read as a control token
                    continue
                digest = normal_hash(text)
                if digest in seen:
                    drop("duplicate")
                    continue
                seen.add(digest)
                budget[kind] -= size
                into.append(src.SourceFile(path, relative, language, licence, package))

    take(train_packages, left, train)  # training first: a copy found later leaves held-out
    take(held_packages, held_left, held_out)
    kept_train: list[src.SourceFile] = []
    for file in train:
        is_validation = src.name_hash("v" + file.relative) % config.validation_every == 0
        (validation if is_validation else kept_train).append(file)
    if not kept_train or not held_out:
        raise RuntimeError("too little local code to train on")
    if not validation:
        validation.append(kept_train.pop())
    licences["summary"] = licence_summary([*kept_train, *validation, *held_out])
    return src.Sources(tuple(kept_train), tuple(validation), tuple(held_out), licences, dropped)


def licence_summary(files: Iterable[src.SourceFile]) -> dict[str, dict[str, int]]:
    """Files per language and licence."""
    out: dict[str, dict[str, int]] = {}
    for file in files:
        per = out.setdefault(file.language, {})
        per[file.licence] = per.get(file.licence, 0) + 1
    return {language: dict(sorted(per.items())) for language, per in sorted(out.items())}


__all__ = ["select_sources"]
