"""Build a training corpus from a team's repositories: `acepilot train corpus`.

    sources (dirs, git URLs) -> files by language -> path and content filters
    -> exact and near duplicates out -> HumanEval-X leak refused
    -> secrets scrubbed -> split by repository -> (FIM) -> tokens -> packed rows
    -> <out_dir>/<name>/v<N>/ {train.npy, validation.npy, manifest.json, ...}

The settings below are the defaults; override them with config files from
acepilot/training/config/ and `--key=value` (see acepilot/training/config/__init__.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import hashlib
import json
import logging
import os
import random
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from acepilot.training.corpus import dedup, filters, fim, pack, scrub
from acepilot.training.corpus.sources import CorpusError, Repository, list_files, open_source

log = logging.getLogger(__name__)

FORMAT = "acepilot-corpus/1"


@dataclass
class CorpusConfig:
    # I/O
    sources: list[str] = field(default_factory=list)  # local directories and git URLs (URL#ref)
    out_dir: str = "corpora"  # the dataset goes to <out_dir>/<name>/v<N>/
    name: str = "corpus"  # the dataset's name; each build is a new version of it
    clone_dir: str = "~/.cache/acepilot/clones"  # git URLs are cloned here once
    # languages
    languages: list[str] = field(default_factory=list)  # e.g. ["vue", "typescript"]; [] = all known
    # file filters
    min_bytes: int = 32  # smaller files teach nothing
    max_bytes: int = 1_000_000  # larger files are data or generated
    max_line_length: int = 1000  # any longer line: minified or a data blob
    max_mean_line_length: float = 100.0  # mean above this: minified
    min_alnum_ratio: float = 0.25  # fewer letters/digits: tables, base64, ascii art
    # duplicates, secrets, evaluation data
    near_dup_threshold: float = 0.85  # MinHash-estimated Jaccard of word 5-grams; 0 = off
    scrub_secrets: bool = True  # detect-secrets; counts in the manifest, never values
    eval_data: str = ""  # HumanEval-X directory (*.jsonl.gz) whose content must never enter
    eval_leak: str = "refuse"  # refuse: stop the build naming the files; drop: leave them out; off
    # split, by repository: validation measures code the model has never seen
    validation_fraction: float = 0.1  # of the repositories (at least one when there are two)
    validation_repos: list[str] = field(default_factory=list)  # explicit names instead
    seed: int = 1337  # picks the validation repositories and the shuffle
    # tokens
    tokenizer: str = ""  # a local checkpoint or tokenizer directory: the model's own tokenizer
    seq_len: int = 2048  # tokens per packed row (CodeGen's n_positions)
    # fill-in-the-middle (train documents only; acepilot/training/corpus/fim.py, the form
    # serving writes): character cuts, the middle a random span or a cursor to a line end
    fim_rate: float = 0.0  # share of train documents in FIM form; 0 for CodeGen 1 (no FIM tokens)
    fim_spm_rate: float = 0.5  # of those, the share in suffix-prefix-middle order (the rest PSM)
    fim_line_rate: float = 0.5  # of those, the share whose middle runs from a cursor to a line end
    fim_tokens: list[str] = field(  # prefix, suffix, middle: each one token of the tokenizer
        default_factory=lambda: ["<fim_prefix>", "<fim_suffix>", "<fim_middle>"]
    )
    workers: int = 0  # processes scanning for secrets; 0 = one per core
    progress: bool = True  # tqdm bars while reading and scrubbing files


@dataclass
class Document:
    repo: str
    path: str
    language: str
    split: str
    sha256: str
    text: str
    secrets: int = 0


def _split_repositories(repos: list[Repository], config: CorpusConfig) -> dict[str, str]:
    names = [r.name for r in repos]
    if config.validation_repos:
        unknown = set(config.validation_repos) - set(names)
        if unknown:
            raise CorpusError(f"validation_repos not among the sources: {sorted(unknown)}")
        held = set(config.validation_repos)
    else:
        count = round(config.validation_fraction * len(names)) if len(names) > 1 else 0
        if config.validation_fraction > 0 and len(names) > 1:
            count = max(count, 1)
        # a hash order, not the input order: adding a source does not reshuffle the rest
        order = sorted(names, key=lambda n: hashlib.sha256(f"{config.seed}:{n}".encode()).digest())
        held = set(order[:count])
    if len(held) == len(names) and names:
        raise CorpusError("every repository is in validation: nothing left to train on")
    if not held:
        log.warning("one repository only: no validation split (add sources to measure)")
    return {n: ("validation" if n in held else "train") for n in names}


def _next_version(root: Path) -> Path:
    taken = [int(p.name[1:]) for p in root.glob("v*") if p.name[1:].isdigit()]
    return root / f"v{max(taken, default=0) + 1}"


def read_documents(
    repos: list[Repository], splits: dict[str, str], config: CorpusConfig, stats: dict[str, Any]
) -> list[Document]:
    """Every file through the filters, train repositories first, so that a file
    duplicated across the split is kept in train and dropped from validation."""
    from tqdm import tqdm

    wanted = set(config.languages) or set(filters.LANGUAGES)
    unknown = wanted - set(filters.LANGUAGES)
    if unknown:
        raise CorpusError(
            f"unknown languages {sorted(unknown)}; known: {sorted(filters.LANGUAGES)}"
        )
    leak_index = None
    if config.eval_leak != "off":
        if not config.eval_data:
            raise CorpusError(
                "set eval_data to the HumanEval-X directory (*.jsonl.gz) so evaluation data "
                "cannot enter the corpus (or eval_leak=off to skip the check)"
            )
        try:
            leak_index = dedup.EvalLeakIndex(Path(config.eval_data).expanduser())
        except FileNotFoundError as exc:
            raise CorpusError(str(exc)) from exc
        stats["eval_leak"] = {
            "mode": config.eval_leak,
            "eval_files": leak_index.files,
            "eval_sha256": leak_index.sha256,
            "refused": [],
        }
    else:
        stats["eval_leak"] = {"mode": "off"}

    ordered = sorted(repos, key=lambda r: splits[r.name] != "train")
    listings = [(repo, list_files(repo)) for repo in ordered]
    seen_hashes: set[str] = set()
    near = (
        dedup.NearDuplicates(config.near_dup_threshold) if config.near_dup_threshold > 0 else None
    )
    drops: Counter[str] = Counter()
    documents: list[Document] = []
    bar = tqdm(
        total=sum(len(files) for _, files in listings),
        desc="corpus",
        unit="file",
        disable=not config.progress,
    )
    for repo, files in listings:
        per_repo: Counter[str] = Counter()
        for rel in files:
            bar.update(1)
            reason, doc = _admit(repo, rel, wanted, config, seen_hashes, near, leak_index)
            if reason == "eval_leak":
                stats["eval_leak"]["refused"].append(f"{repo.name}/{rel}")
            if doc is None:
                drops[reason] += 1
                per_repo[reason] += 1
                continue
            doc.split = splits[repo.name]
            documents.append(doc)
            per_repo["kept"] += 1
        stats["repos"][repo.name]["files"] = dict(per_repo)
    bar.close()
    stats["filters"] = dict(sorted(drops.items()))
    refused = stats["eval_leak"].get("refused", [])
    if refused and config.eval_leak == "refuse":
        raise CorpusError(
            f"{len(refused)} file(s) contain HumanEval-X evaluation code; remove them from the "
            f"sources or set eval_leak=drop: {', '.join(refused[:10])}"
        )
    if config.scrub_secrets:
        _scrub(documents, {r.name: r.path for r in repos}, config, stats)
    else:
        stats["secrets"] = {"scrubbed": False}
    return documents


def _scrub(
    documents: list[Document], paths: dict[str, Path], config: CorpusConfig, stats: dict[str, Any]
) -> None:
    """detect-secrets over every kept file, in `workers` processes: it scans
    ~700 lines/s per core, the slowest stage of the build by far."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    from tqdm import tqdm

    workers = config.workers or os.cpu_count() or 1
    args = ([paths[d.repo] / d.path for d in documents], [d.text for d in documents])
    secret_types: Counter[str] = Counter()
    with contextlib.ExitStack() as stack:
        if workers > 1 and len(documents) > 1:
            # spawn: the parent holds a tokenizer's threads, which fork would copy
            pool = stack.enter_context(
                ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"))
            )
            results = pool.map(scrub.scrub_file, *args, chunksize=8)
        else:
            results = map(scrub.scrub_file, *args)
        bar = stack.enter_context(
            tqdm(total=len(documents), desc="secrets", unit="file", disable=not config.progress)
        )
        for doc, (text, found) in zip(documents, results, strict=True):
            doc.text, doc.secrets = text, sum(found.values())
            secret_types.update(found)
            bar.update(1)
    stats["secrets"] = {
        "scrubbed": True,
        "files_scrubbed": sum(1 for d in documents if d.secrets),
        "found": sum(secret_types.values()),
        "by_type": dict(sorted(secret_types.items())),
    }


def _admit(
    repo: Repository,
    rel: str,
    wanted: set[str],
    config: CorpusConfig,
    seen_hashes: set[str],
    near: dedup.NearDuplicates | None,
    leak_index: dedup.EvalLeakIndex | None,
) -> tuple[str, Document | None]:
    """The reason a file is out, or its document. Cheapest rules first."""
    reason = filters.path_reason(rel)
    if reason:
        return reason, None
    language = filters.language_of(rel)
    if language is None:
        return "not_code", None
    if language not in wanted:
        return "other_language", None
    path = repo.path / rel
    if path.stat().st_size > config.max_bytes:
        return "too_large", None
    data = path.read_bytes()
    reason = filters.binary_reason(data)
    if reason:
        return reason, None
    text = data.decode("utf-8")
    reason = filters.content_reason(
        text,
        min_bytes=config.min_bytes,
        max_bytes=config.max_bytes,
        max_line_length=config.max_line_length,
        max_mean_line_length=config.max_mean_line_length,
        min_alnum_ratio=config.min_alnum_ratio,
    )
    if reason:
        return reason, None
    digest = dedup.content_hash(data)
    if digest in seen_hashes:
        return "exact_duplicate", None
    seen_hashes.add(digest)
    if leak_index is not None and leak_index.leaks(text):
        return "eval_leak", None
    if near is not None and near.is_duplicate(f"{repo.name}/{rel}", text):
        return "near_duplicate", None
    return "", Document(repo.name, rel, language, "", digest, text)


def check_config(config: CorpusConfig) -> None:
    """Refuse settings that cannot make a corpus, before any file is read."""
    if config.eval_leak not in ("refuse", "drop", "off"):
        raise CorpusError(f"eval_leak {config.eval_leak!r}: expected refuse, drop or off")
    for name in ("fim_rate", "fim_spm_rate", "fim_line_rate"):
        if not 0 <= getattr(config, name) <= 1:
            raise CorpusError(f"{name} must be in [0, 1]")
    if not 0 <= config.validation_fraction < 1:
        raise CorpusError("validation_fraction must be in [0, 1)")
    if config.seq_len < 2:
        raise CorpusError(f"seq_len must be at least 2, got {config.seq_len}")
    if not config.sources:
        raise CorpusError("no sources: give local directories or git URLs")
    if not config.tokenizer:
        raise CorpusError("set tokenizer to the model's checkpoint or tokenizer directory")


def open_tokenizer(config: CorpusConfig) -> Any:
    """The model's own tokenizer (it must have an EOS)."""
    from acepilot.training.tokenizer import load_tokenizer

    try:
        tokenizer = load_tokenizer(config.tokenizer)
    except (OSError, ValueError) as exc:
        raise CorpusError(f"tokenizer {config.tokenizer!r}: {exc}") from exc
    tokenizer.model_max_length = 1 << 62  # documents are packed, never fed whole
    return tokenizer


def fim_setup(config: CorpusConfig, tokenizer: Any) -> tuple[fim.FimTokens, fim.FimSettings] | None:
    """The FIM sentinels (each one token of the tokenizer) and rates; None when fim_rate is 0."""
    if config.fim_rate <= 0:
        return None
    if len(config.fim_tokens) != 3:
        raise CorpusError(
            f"fim: fim_tokens needs prefix, suffix and middle, got {config.fim_tokens}"
        )
    prefix, suffix, middle = config.fim_tokens
    try:
        pack.fim_token_ids(tokenizer, (prefix, suffix, middle))
    except ValueError as exc:
        raise CorpusError(f"fim: {exc}") from exc
    tokens = fim.FimTokens(prefix=prefix, suffix=suffix, middle=middle, eos=tokenizer.eos_token)
    settings = fim.FimSettings(
        rate=config.fim_rate, spm_rate=config.fim_spm_rate, line_rate=config.fim_line_rate
    )
    return tokens, settings


def fim_manifest(setup: tuple[fim.FimTokens, fim.FimSettings] | None) -> dict[str, Any] | None:
    """The manifest's FIM record (docs/model-format.md), with the orders trained."""
    if setup is None:
        return None
    tokens, settings = setup
    orders = [
        o
        for o, share in ((fim.PSM, 1 - settings.spm_rate), (fim.SPM, settings.spm_rate))
        if share > 0
    ]
    return {**tokens.manifest(orders[0]), "orders": orders}


def document_texts(
    docs: list[Document],
    setup: tuple[fim.FimTokens, fim.FimSettings] | None,
    rng: random.Random,
    orders: Counter[str],
) -> list[str]:
    """The documents' texts, a share of them in FIM form (character cuts, corpus/fim.py);
    `orders` counts the transformed ones by order. No EOS: the packer adds it."""
    if setup is None:
        return [d.text for d in docs]
    tokens, settings = setup
    texts = []
    for doc in docs:
        text, order = fim.fim_document(doc.text, tokens, settings, rng)
        if order:
            orders[order] += 1
        texts.append(text.removesuffix(tokens.eos))
    return texts


def pack_split(
    docs: list[Document],
    split: str,
    tokenizer: Any,
    setup: tuple[fim.FimTokens, fim.FimSettings] | None,
    rng: random.Random,
    work: Path,
    config: CorpusConfig,
    stats: dict[str, Any],
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One split's documents shuffled, tokenized and packed into `<split>.npy`;
    its counts, and a row per file for files.jsonl. Only train documents get FIM."""
    rng.shuffle(docs)  # rows mix files and repositories
    dtype = pack.token_dtype(len(tokenizer))
    packer = pack.Packer(work / f"{split}.npy", config.seq_len, tokenizer.eos_token_id, dtype)
    orders: Counter[str] = Counter()
    languages: dict[str, Counter[str]] = stats.setdefault("languages", {})
    rows = []
    for start in range(0, len(docs), 256):
        batch = docs[start : start + 256]
        texts = document_texts(batch, setup if split == "train" else None, rng, orders)
        encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]
        for doc, ids in zip(batch, encoded, strict=True):
            packer.add(ids)
            tokens = len(ids) + 1
            lang = languages.setdefault(doc.language, Counter())
            lang["files"] += 1
            lang[f"{split}_tokens"] += tokens
            repo = stats["repos"][doc.repo]
            repo["tokens"] = repo.get("tokens", 0) + tokens
            rows.append(
                {
                    "repo": doc.repo,
                    "path": doc.path,
                    "language": doc.language,
                    "split": split,
                    "sha256": doc.sha256,
                    "tokens": tokens,
                    "secrets_scrubbed": doc.secrets,
                }
            )
    counts = {"fim_documents": sum(orders.values()), "fim_orders": dict(sorted(orders.items()))}
    return {**counts, **packer.finish()}, rows


def write_validation_files(docs: list[Document], path: Path) -> None:
    """Held-out repositories, scrubbed, for in-domain line-completion evaluation."""
    with gzip.open(path, "wt", encoding="utf-8") as f:
        for d in sorted(docs, key=lambda d: (d.repo, d.path)):
            row = {"repo": d.repo, "path": d.path, "language": d.language, "text": d.text}
            f.write(json.dumps(row) + "\n")


def build_corpus(config: CorpusConfig) -> Path:
    """Build the dataset and return its versioned directory."""
    started = time.time()
    check_config(config)
    tokenizer = open_tokenizer(config)
    setup = fim_setup(config, tokenizer)

    taken: set[str] = set()
    clone_dir = Path(config.clone_dir).expanduser()
    repos = [open_source(s, clone_dir, taken) for s in config.sources]
    splits = _split_repositories(repos, config)
    stats: dict[str, Any] = {
        "repos": {
            r.name: {
                "source": r.source,
                "kind": r.kind,
                "commit": r.commit,
                "dirty": r.dirty,
                "split": splits[r.name],
                "licences": r.licences,
            }
            for r in repos
        }
    }
    documents = read_documents(repos, splits, config, stats)

    root = Path(config.out_dir).expanduser() / config.name
    root.mkdir(parents=True, exist_ok=True)
    final = _next_version(root)
    work = root / f".{final.name}.partial"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()

    rng = random.Random(config.seed)
    splits_out: dict[str, Any] = {}
    file_rows = []
    for split in ("train", "validation"):
        docs = [d for d in documents if d.split == split]
        counts, rows = pack_split(docs, split, tokenizer, setup, rng, work, config, stats)
        splits_out[split] = {
            "repos": sorted(n for n, s in splits.items() if s == split),
            **counts,
        }
        file_rows.extend(rows)
        if split == "validation":
            write_validation_files(docs, work / "validation_files.jsonl.gz")
    with open(work / "files.jsonl", "w", encoding="utf-8") as f:
        for row in file_rows:
            f.write(json.dumps(row) + "\n")
    if splits_out["train"]["sequences"] == 0:
        shutil.rmtree(work)
        raise CorpusError(
            f"the train split has {splits_out['train']['tokens']} tokens: fewer than one "
            f"row of seq_len={config.seq_len}"
        )

    manifest = {
        "format": FORMAT,
        "name": config.name,
        "version": final.name,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "build_seconds": round(time.time() - started, 2),
        "config": dataclasses.asdict(config),
        "tokenizer": {
            "path": str(Path(config.tokenizer).expanduser().resolve()),
            "class": type(tokenizer).__name__,
            "vocab_size": len(tokenizer),
            "eos_token_id": tokenizer.eos_token_id,
        },
        "seq_len": config.seq_len,
        "dtype": pack.token_dtype(len(tokenizer)).__name__,
        "fim": fim_manifest(setup),
        "sources": stats["repos"],
        "filters": stats["filters"],
        "secrets": stats["secrets"],
        "eval_leak": stats["eval_leak"],
        "languages": {k: dict(v) for k, v in sorted(stats.get("languages", {}).items())},
        "splits": splits_out,
        "tokens": sum(s["tokens"] for s in splits_out.values()),
    }
    (work / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    work.rename(final)
    log.info(
        "corpus %s: %d train rows, %d validation rows",
        final,
        splits_out["train"]["sequences"],
        splits_out["validation"]["sequences"],
    )
    return final
