"""Stage 1, sources: permissively licensed code found on this machine, split by package.

Where the code comes from (each root is optional; what is missing is skipped):

| language | root | licence read from |
|---|---|---|
| python | the standard library | PSF-2.0 |
| python | this interpreter's site-packages | each distribution's metadata (License-Expression, classifiers, License) |
| javascript, typescript | npm's global node_modules and the repository's node_modules (`npm ci`) | the nearest package.json |
| go | Debian's golang standard library (`/usr/share/go-*/src`) | BSD-3-Clause |
| rust | Debian's librust-*-dev crates (`/usr/share/cargo/registry`) | each crate's Cargo.toml |

Only permissive licences are kept (MIT, BSD, Apache-2.0, ISC, PSF, 0BSD, ...);
every kept file carries its licence. Held-out evaluation files are chosen by
*package* (a stdlib top-level module, a distribution, an npm package, a Go
package directory, a crate), by a hash of its name: no file of a held-out
package is seen by the tokenizer or the model, and a held-out file whose
content (whitespace-normalised) equals a training file's is dropped.
Within each language, packages are taken in hash order until the byte budget
is spent, so a budget spreads over many packages.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from acepilot.training.corpus import filters

PERMISSIVE = frozenset(
    {
        "MIT",
        "MIT-0",
        "ISC",
        "BSD",
        "BSD-2-Clause",
        "BSD-3-Clause",
        "Apache-2.0",
        "0BSD",
        "BlueOak-1.0.0",
        "CC0-1.0",
        "PSF-2.0",
        "Python-2.0",
        "Unlicense",
        "Zlib",
        "HPND",
    }
)
PYTHON_STDLIB_LICENCE = "PSF-2.0"
GO_LICENCE = "BSD-3-Clause"
EXCLUDED_DIRS = frozenset(
    {
        "test",
        "tests",
        "testing",
        "testdata",
        "__tests__",
        "example",
        "examples",
        "benches",
        "benchmarks",
        "docs",
        "idlelib",
        "tkinter",
        "turtledemo",
        "lib2to3",
        "ensurepip",
        "encodings",
        "pydoc_data",
        "__phello__",
        "__pycache__",
        "site-packages",
        "dist-packages",
        "_vendor",
        "vendor",
        "vendored",
        "node_modules",
        "dist",
        "build",
    }
)
EXTENSIONS = {
    "python": (".py",),
    "javascript": (".js", ".mjs", ".cjs"),
    "typescript": (".ts", ".mts", ".cts", ".tsx"),
    "go": (".go",),
    "rust": (".rs",),
}
# Our own code never trains our model (it is what the model is tested on by hand).
SKIPPED_DISTRIBUTIONS = frozenset({"acepilot"})


@dataclass(frozen=True)
class SourceFile:
    path: Path
    relative: str  # "python/json/decoder.py", "go/net/http/server.go"
    language: str
    licence: str
    package: str  # the held-out unit: "python:json", "rust:serde-1.0.152"


@dataclass(frozen=True)
class Sources:
    train: tuple[SourceFile, ...]
    validation: tuple[SourceFile, ...]
    held_out: tuple[SourceFile, ...]
    licences: dict[str, Any]
    dropped: dict[str, int] = field(default_factory=dict)

    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        for label, files in (
            ("train", self.train),
            ("validation", self.validation),
            ("held_out", self.held_out),
        ):
            digest.update(label.encode() + b"\0")
            for file in files:
                digest.update(file.relative.encode() + b"\0" + file.licence.encode() + b"\0")
                digest.update(hashlib.sha256(file.path.read_bytes()).digest())
        return digest.hexdigest()


def name_hash(name: str) -> int:
    """A stable pseudo-random number per name (Python's hash() is salted)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big")


def read_code(path: Path) -> str | None:
    try:
        return path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def code_files(root: Path, extensions: tuple[str, ...], exclude: frozenset[str]) -> Iterator[Path]:
    """Files under `root` with these extensions, in sorted order, pruning `exclude`d dirs."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(
            d for d in dirnames if d not in exclude and not d.startswith((".", "config-"))
        )
        for name in sorted(filenames):
            if name.endswith(extensions) and not name.startswith("test_"):
                path = Path(dirpath, name)
                if path.is_file() and not path.is_symlink():
                    yield path


# ---------------------------------------------------------------------------
# Licences


SPDX_ALIASES = {
    "mit": "MIT",
    "mit license": "MIT",
    "the mit license": "MIT",
    "mit-0": "MIT-0",
    "isc": "ISC",
    "isc license": "ISC",
    "isc license (iscl)": "ISC",
    "bsd": "BSD",
    "bsd license": "BSD",
    "new bsd": "BSD-3-Clause",
    "new bsd license": "BSD-3-Clause",
    "3-clause bsd": "BSD-3-Clause",
    "bsd-3-clause": "BSD-3-Clause",
    "bsd 3-clause": "BSD-3-Clause",
    "bsd-2-clause": "BSD-2-Clause",
    "apache": "Apache-2.0",
    "apache 2.0": "Apache-2.0",
    "apache-2.0": "Apache-2.0",
    "apache 2": "Apache-2.0",
    "apache license 2.0": "Apache-2.0",
    "apache license, version 2.0": "Apache-2.0",
    "apache software license": "Apache-2.0",
    "apache software license 2.0": "Apache-2.0",
    "psf": "PSF-2.0",
    "psf-2.0": "PSF-2.0",
    "python software foundation license": "PSF-2.0",
    "0bsd": "0BSD",
    "unlicense": "Unlicense",
    "the unlicense": "Unlicense",
    "the unlicense (unlicense)": "Unlicense",
    "zlib": "Zlib",
    "cc0-1.0": "CC0-1.0",
    "blueoak-1.0.0": "BlueOak-1.0.0",
}


def permissive(expression: str | None) -> str | None:
    """The expression normalised, if every alternative of it is permissive (or, for
    `A OR B`, at least one is); None otherwise. Conservative: unknown means no."""
    if not expression:
        return None
    text = expression.strip().strip("()")
    if len(text) > 200:  # a whole licence text pasted into a metadata field
        first = text.splitlines()[0].lower()
        for key, spdx in (("mit license", "MIT"), ("apache license", "Apache-2.0")):
            if key in first:
                return spdx
        return None
    alternatives = re.split(r"\s+or\s+|/", text, flags=re.IGNORECASE)
    if re.search(r"\bor\b", text, re.IGNORECASE) and len(alternatives) > 1:
        for alternative in alternatives:
            found = permissive(alternative)
            if found:
                return found
        return None
    parts = re.split(r"\s+and\s+", text, flags=re.IGNORECASE)
    names = [SPDX_ALIASES.get(p.strip().strip("()").lower(), p.strip().strip("()")) for p in parts]
    if all(name in PERMISSIVE for name in names):
        return " AND ".join(names)
    return None


CLASSIFIER = "License :: OSI Approved :: "


def distribution_licence(metadata: Any) -> str | None:
    """A distribution's licence from its core metadata, or None when not clearly permissive."""
    expression = metadata.get("License-Expression")
    if expression:
        return permissive(expression)
    classifiers = [
        c[len(CLASSIFIER) :]
        for c in metadata.get_all("Classifier") or []
        if c.startswith(CLASSIFIER)
    ]
    if classifiers:
        names = [permissive(c) for c in classifiers]
        return names[0] if all(names) else None
    return permissive(metadata.get("License"))


# ---------------------------------------------------------------------------
# Roots, one function per kind; each yields (package, relative name, path, licence)

Found = tuple[str, str, Path, str]


def python_stdlib(root: Path | None = None) -> Iterator[Found]:
    root = root or Path(sysconfig.get_paths()["stdlib"])
    for path in code_files(root, EXTENSIONS["python"], EXCLUDED_DIRS):
        relative = path.relative_to(root).as_posix()
        top = relative.split("/", 1)[0].removesuffix(".py")
        yield f"python:{top}", f"python/{relative}", path, PYTHON_STDLIB_LICENCE


def python_site_packages(licences: dict[str, Any]) -> Iterator[Found]:
    """The permissively licensed distributions installed beside this interpreter."""
    from importlib.metadata import distributions

    purelib = Path(sysconfig.get_paths()["purelib"]).resolve()
    seen: set[str] = set()
    kept: dict[str, str] = {}
    refused: list[str] = []
    for dist in sorted(distributions(), key=lambda d: (d.metadata["Name"] or "").lower()):
        name = (dist.metadata["Name"] or "").lower()
        if not name or name in seen or name in SKIPPED_DISTRIBUTIONS:
            continue
        seen.add(name)
        licence = distribution_licence(dist.metadata)
        if licence is None:
            refused.append(name)
            continue
        kept[name] = licence
        for entry in sorted(dist.files or [], key=str):
            parts = Path(str(entry)).parts
            if not str(entry).endswith(".py") or any(p in EXCLUDED_DIRS for p in parts[:-1]):
                continue
            if parts[-1].startswith("test_") or ".." in parts:
                continue
            path = (purelib / Path(str(entry))).resolve()
            if not path.is_file() or purelib not in path.parents:
                continue
            relative = path.relative_to(purelib).as_posix()
            yield f"pypi:{name}", f"pypi/{relative}", path, licence
    licences["pypi"] = {
        "root": str(purelib),
        "distributions": kept,
        "refused_not_clearly_permissive": refused,
    }


def package_licence(directory: Path, root: Path, cache: dict[Path, tuple[str, str] | None]) -> Any:
    """(package name, licence) of the nearest package.json at or above `directory`."""
    current = directory
    while True:
        if current in cache:
            return cache[current]
        manifest = current / "package.json"
        found: tuple[str, str] | None = None
        stop = False
        if manifest.is_file():
            try:
                data = json.loads(manifest.read_text("utf-8"))
            except (OSError, ValueError):
                data = None
            if isinstance(data, dict) and isinstance(data.get("name"), str):
                stop = True
                value = data.get("license")
                licence = permissive(value) if isinstance(value, str) else None
                found = (data["name"], licence) if licence else None
        if stop or current == root or current.parent == current:
            cache[current] = found
            return found
        current = current.parent


def npm_packages(roots: list[Path]) -> Iterator[Found]:
    extensions = EXTENSIONS["javascript"] + EXTENSIONS["typescript"]
    exclude = EXCLUDED_DIRS - {"node_modules", "dist", "build"}
    for root in roots:
        if not root.is_dir():
            continue
        cache: dict[Path, tuple[str, str] | None] = {}
        for path in code_files(root, extensions, exclude):
            if ".min." in path.name or filters.path_reason(path.name):
                continue
            owner = package_licence(path.parent, root, cache)
            if owner is None:
                continue
            package, licence = owner
            relative = path.relative_to(root).as_posix()
            yield f"npm:{package}", f"npm/{relative}", path, licence


def go_roots() -> list[Path]:
    candidates = [Path("/usr/local/go/src"), *sorted(Path("/usr/share").glob("go-*/src"))]
    return [p for p in candidates if p.is_dir()][-1:]


def go_stdlib(roots: list[Path]) -> Iterator[Found]:
    for root in roots:
        for path in code_files(root, EXTENSIONS["go"], EXCLUDED_DIRS | {"cmd"}):
            if path.name.endswith("_test.go"):
                continue
            relative = path.relative_to(root).as_posix()
            package = relative.rsplit("/", 1)[0] if "/" in relative else "(root)"
            yield f"go:{package}", f"go/{relative}", path, GO_LICENCE


CARGO_LICENSE = re.compile(r'^\s*license\s*=\s*"([^"]+)"', re.MULTILINE)


def rust_crates(root: Path = Path("/usr/share/cargo/registry")) -> Iterator[Found]:
    if not root.is_dir():
        return
    for crate in sorted(p for p in root.iterdir() if p.is_dir()):
        try:
            match = CARGO_LICENSE.search((crate / "Cargo.toml").read_text("utf-8"))
        except (OSError, UnicodeDecodeError):
            continue
        licence = permissive(match.group(1)) if match else None
        if licence is None:
            continue
        for path in code_files(crate, EXTENSIONS["rust"], EXCLUDED_DIRS):
            relative = path.relative_to(root).as_posix()
            yield f"rust:{crate.name}", f"rust/{relative}", path, licence


def language_of(relative: str) -> str:
    suffix = Path(relative).suffix
    if relative.endswith(".d.ts"):
        return "typescript"
    for language, extensions in EXTENSIONS.items():
        if suffix in extensions:
            return language
    raise ValueError(f"no language for {relative}")


__all__ = [
    "PERMISSIVE",
    "SourceFile",
    "Sources",
    "distribution_licence",
    "go_roots",
    "go_stdlib",
    "language_of",
    "name_hash",
    "npm_packages",
    "permissive",
    "python_site_packages",
    "python_stdlib",
    "read_code",
    "rust_crates",
]
