"""Where the code comes from: local directories and git URLs (cloned with the
`git` CLI), each one a repository with a name, a commit and its licence files."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from acepilot.server.errors import AcepilotError

log = logging.getLogger(__name__)

# anything git can clone that is not a local directory
GIT_URL = re.compile(r"^(?:[a-z][a-z0-9+.-]*://|[\w.-]+@[\w.-]+:)", re.IGNORECASE)

LICENCE_NAMES = re.compile(r"^(?:licen[cs]e|copying|unlicense)(?:[.-].*)?$", re.IGNORECASE)

# first match wins: the phrases are the ones each licence's text carries
SPDX_HINTS = (
    ("Apache-2.0", "apache license"),
    ("AGPL-3.0", "gnu affero general public license"),
    ("LGPL-3.0", "gnu lesser general public license"),
    ("GPL-3.0", "gnu general public license\n                       version 3"),
    ("GPL-3.0", "version 3, 29 june 2007"),
    ("GPL-2.0", "version 2, june 1991"),
    ("MPL-2.0", "mozilla public license"),
    ("BSD-3-Clause", "neither the name"),
    ("BSD-2-Clause", "redistributions in binary form"),
    ("MIT", "permission is hereby granted, free of charge"),
    ("ISC", "permission to use, copy, modify, and/or distribute"),
    ("Unlicense", "this is free and unencumbered software"),
)


class CorpusError(AcepilotError):
    """A corpus could not be built (a source, the tokenizer, an evaluation leak)."""


@dataclass
class Repository:
    name: str  # unique within the corpus, used for the split
    source: str  # as the user gave it
    path: Path  # the working tree we read
    kind: str  # "git" (cloned), "local-git" or "directory"
    commit: str | None = None
    dirty: bool = False  # a local checkout with uncommitted changes
    licences: list[dict[str, str]] = field(default_factory=list)


def _git(args: list[str], cwd: Path | None = None) -> str:
    try:
        done = subprocess.run(
            ["git", *args],
            cwd=cwd,
            check=True,
            capture_output=True,
            text=True,
            env={**os.environ, "GIT_TERMINAL_PROMPT": "0"},
        )
    except FileNotFoundError as exc:
        raise CorpusError("the `git` command is needed for git sources") from exc
    except subprocess.CalledProcessError as exc:
        raise CorpusError(f"git {' '.join(args)} failed: {exc.stderr.strip()}") from exc
    return done.stdout.strip()


def _name_from(source: str) -> str:
    tail = source.rstrip("/").rsplit("/", 1)[-1].rsplit(":", 1)[-1]
    return tail.removesuffix(".git") or "repo"


def open_source(source: str, clone_dir: Path, taken: set[str]) -> Repository:
    """Resolve one input. A URL is cloned (shallow) once into `clone_dir`; `URL#REF`
    picks a branch or tag. A local directory is read in place."""
    name = _name_from(source.split("#", 1)[0])
    base, n = name, 2
    while name in taken:
        name, n = f"{base}-{n}", n + 1
    taken.add(name)
    local = Path(source).expanduser()
    if local.is_dir():
        repo = Repository(name=name, source=str(local.resolve()), path=local, kind="directory")
        if (local / ".git").exists():
            repo.kind = "local-git"
            repo.commit = _git(["rev-parse", "HEAD"], cwd=local)
            repo.dirty = bool(_git(["status", "--porcelain"], cwd=local))
    elif GIT_URL.match(source):
        url, _, ref = source.partition("#")
        digest = hashlib.sha256(source.encode()).hexdigest()[:12]
        target = clone_dir / f"{_name_from(url)}-{digest}"
        if not (target / ".git").exists():
            clone_dir.mkdir(parents=True, exist_ok=True)
            log.info("cloning %s", url)
            args = ["clone", "--quiet", "--depth", "1"]
            if ref:
                args += ["--branch", ref]
            _git([*args, url, str(target)])
        repo = Repository(name=name, source=source, path=target, kind="git")
        repo.commit = _git(["rev-parse", "HEAD"], cwd=target)
    else:
        raise CorpusError(f"source {source!r} is neither a directory nor a git URL")
    repo.licences = find_licences(repo.path)
    return repo


def list_files(repo: Repository) -> list[str]:
    """Relative paths, sorted. In a git checkout: what git tracks (so .gitignore'd
    build output never enters); elsewhere every file under the directory."""
    if repo.kind != "directory":
        out = _git(["ls-files", "-z"], cwd=repo.path)
        paths = (p for p in out.split("\0") if p)
        # a symlink may point outside the repository: never follow it
        return sorted(
            p for p in paths if not (repo.path / p).is_symlink() and (repo.path / p).is_file()
        )
    files = []
    for root, dirs, names in os.walk(repo.path):
        dirs[:] = sorted(d for d in dirs if d != ".git")
        for n in names:
            if not os.path.islink(os.path.join(root, n)):
                files.append(os.path.relpath(os.path.join(root, n), repo.path))
    return sorted(files)


def guess_spdx(text: str) -> str:
    lowered = " ".join(text.lower().split())
    for spdx, phrase in SPDX_HINTS:
        if " ".join(phrase.split()) in lowered:
            return spdx
    return "unknown"


def find_licences(root: Path) -> list[dict[str, str]]:
    """Licence files at the top of the repository: path, sha256 and a guessed SPDX id."""
    found = []
    for path in sorted(root.iterdir()):
        if path.is_file() and LICENCE_NAMES.match(path.name):
            data = path.read_bytes()
            found.append(
                {
                    "path": path.name,
                    "sha256": hashlib.sha256(data).hexdigest(),
                    "spdx_guess": guess_spdx(data.decode("utf-8", "replace")),
                }
            )
    return found
