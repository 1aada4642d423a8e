"""The HumanEval-X languages and their toolchains on this machine, found once.

`find_toolchain` resolves the absolute paths of a language's tools (system
directories first: a tool under a user's home may be unreachable for the
sandbox user), its environment and the host paths outside /usr it needs
mounted read-only (rustup's sysroot, the Rust crates HumanEval-X needs,
built once into a cache; Go's testify), or says in `missing` what to install.
languages.py builds and runs the programs with them.
"""

from __future__ import annotations

import ctypes.util
import hashlib
import json
import logging
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from acepilot.training.eval.harness import RUST_CRATE_USES
from acepilot.training.eval.sandbox import SYSTEM_PATH

log = logging.getLogger(__name__)

LANGUAGES = ("python", "cpp", "java", "js", "go", "rust")
ALIASES = {
    "py": "python",
    "c++": "cpp",
    "javascript": "js",
    "golang": "go",
    "rs": "rust",
}
GOPATH_CANDIDATES = ("/usr/share/gocode",)
TESTIFY = "src/github.com/stretchr/testify/assert"


def canonical_language(name: str) -> str:
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    if key not in LANGUAGES:
        raise ValueError(f"unknown language {name!r}: choose from {', '.join(LANGUAGES)}")
    return key


@dataclass(frozen=True)
class Toolchain:
    """Absolute paths of the tools a language needs, its environment, and notes."""

    language: str
    tools: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    missing: str | None = None  # why the language cannot run here
    notes: tuple[str, ...] = ()
    binds: tuple[str, ...] = ()  # host paths outside /usr it needs (mounted read-only)

    @property
    def path(self) -> str:
        dirs = [str(Path(tool).parent) for tool in self.tools.values()]
        return ":".join(dict.fromkeys([*dirs, *SYSTEM_PATH.split(":")]))

    def describe(self) -> dict[str, Any]:
        return {"tools": self.tools, "missing": self.missing, "notes": list(self.notes)}


def which(name: str) -> str | None:
    """System directories first: a tool under a user's home (pyenv shims, ~/.cargo)
    may be unreachable for the sandbox user."""
    return shutil.which(name, path=SYSTEM_PATH) or shutil.which(name)


def version_of(command: list[str]) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    text = (done.stdout or done.stderr).strip().splitlines()
    return text[0] if text else "unknown"


@cache
def find_toolchain(language: str) -> Toolchain:
    """Resolve the language's tools once; `missing` says what to install when absent."""
    language = canonical_language(language)
    finder = {
        "python": _python,
        "cpp": _cpp,
        "java": _java,
        "js": _js,
        "go": _go,
        "rust": _rust,
    }[language]
    toolchain = finder()
    if toolchain.missing:
        log.warning("%s: %s", language, toolchain.missing)
    return toolchain


def _python() -> Toolchain:
    python = which("python3")
    if python is None:
        return Toolchain("python", missing="python3 not found: install python3")
    return Toolchain("python", {"python": python}, notes=(version_of([python, "--version"]),))


def _cpp() -> Toolchain:
    gxx = which("g++")
    if gxx is None:
        return Toolchain("cpp", missing="g++ not found: install g++ (e.g. apt-get install g++)")
    notes = [version_of([gxx, "--version"])]
    crypto = ctypes.util.find_library("crypto") is not None and (
        Path("/usr/include/openssl/md5.h").exists()
    )
    if not crypto:
        notes.append("libcrypto (libssl-dev) not found: task CPP/162 (MD5) cannot link")
    if not Path("/usr/include/boost/any.hpp").exists():
        notes.append("boost headers (libboost-dev) not found: CPP/22 and CPP/137 cannot compile")
    return Toolchain(
        "cpp", {"g++": gxx}, env={"ACEPILOT_LINK_CRYPTO": "1" if crypto else ""}, notes=tuple(notes)
    )


def _java() -> Toolchain:
    javac, java = which("javac"), which("java")
    if javac is None or java is None:
        return Toolchain("java", missing="javac/java not found: install a JDK (openjdk-17-jdk)")
    java_real = str(Path(java).resolve())
    javac_real = str(Path(javac).resolve())
    return Toolchain(
        "java",
        {"javac": javac_real, "java": java_real},
        notes=(version_of([java_real, "-version"]),),
        binds=(str(Path(java_real).parent.parent),),
    )


def _js() -> Toolchain:
    node = which("node")
    if node is None:
        return Toolchain("js", missing="node not found: install Node.js")
    return Toolchain("js", {"node": node}, notes=(f"node {version_of([node, '--version'])}",))


def _go() -> Toolchain:
    go = which("go")
    if go is None:
        return Toolchain("go", missing="go not found: install golang (apt-get install golang)")
    go = str(Path(go).resolve())
    gopaths = [os.environ.get("ACEPILOT_GOPATH", ""), os.environ.get("GOPATH", "")]
    gopath = next(
        (p for p in [*gopaths, *GOPATH_CANDIDATES] if p and (Path(p) / TESTIFY).is_dir()), None
    )
    if gopath is None:
        return Toolchain(
            "go",
            missing="the Go tests import github.com/stretchr/testify: install "
            "golang-github-stretchr-testify-dev or set ACEPILOT_GOPATH to a GOPATH holding it",
        )
    try:
        goroot = subprocess.run(
            [go, "env", "GOROOT"], capture_output=True, text=True, timeout=30, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        return Toolchain("go", missing=f"`go env GOROOT` failed ({exc})")
    env = {
        "GOROOT": goroot,
        "GOPATH": gopath,
        "GO111MODULE": "off",
        "GOFLAGS": "",
        "CGO_ENABLED": "0",
        "GOPROXY": "off",
        "GOTOOLCHAIN": "local",
    }
    return Toolchain(
        "go",
        {"go": go},
        env=env,
        notes=(version_of([go, "version"]), f"GOPATH {gopath}"),
        binds=(goroot, gopath),
    )


def _rust() -> Toolchain:
    rustc = which("rustc")
    if rustc is None:
        return Toolchain("rust", missing="rustc not found: install Rust (rustup or apt rustc)")
    # rustup's proxy needs $HOME/.rustup; the sandbox has another HOME: use the real binary.
    try:
        sysroot = subprocess.run(
            [rustc, "--print", "sysroot"], capture_output=True, text=True, timeout=60, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        return Toolchain("rust", missing=f"`rustc --print sysroot` failed ({exc})")
    real = Path(sysroot) / "bin" / "rustc"
    if not real.is_file():
        real = Path(rustc).resolve()
    version = version_of([str(real), "--version"])
    notes = [version]
    env: dict[str, str] = {}
    try:
        externs = rust_crates(str(real), version)
    except RuntimeError as exc:
        externs = None
        notes.append(str(exc))
    if externs is None:
        notes.append(
            "crates rand, regex, md5 unavailable (install librust-rand-dev librust-regex-dev "
            "librust-md5-dev and cargo): their `use` lines are dropped and Rust/38, 50, 53, "
            "91, 162 (whose solutions or tests use them) cannot pass"
        )
    else:
        env["ACEPILOT_RUST_EXTERNS"] = json.dumps(externs)
        notes.append(f"crates {', '.join(sorted(externs['crates']))} from {externs['registry']}")
    binds = [str(Path(sysroot).resolve())]
    if externs is not None:
        binds.append(str(externs["deps"]))
    return Toolchain("rust", {"rustc": str(real)}, env=env, notes=tuple(notes), binds=tuple(binds))


RUST_DEPS_MANIFEST = """\
[package]
name = "acepilot-humaneval-deps"
version = "0.1.0"
edition = "2021"

[dependencies]
rand = "0.8"
regex = { version = "1", default-features = false, features = ["std", "unicode"] }
md5 = "0.7"
"""


def rust_crates(rustc: str, version: str) -> dict[str, Any] | None:
    """Compile rand, regex and md5 once from a local crate directory (Debian's
    /usr/share/cargo/registry, or $ACEPILOT_CARGO_REGISTRY) into a cache, for
    `rustc --extern`. None when the crates or cargo are not there. The crates
    are system packages, built without network (cargo --offline)."""
    registry = Path(os.environ.get("ACEPILOT_CARGO_REGISTRY", "/usr/share/cargo/registry"))
    cargo = which("cargo")
    names = sorted(p.name for p in registry.glob("*")) if registry.is_dir() else []
    if cargo is None or not all(any(n.startswith(c + "-") for n in names) for c in RUST_CRATE_USES):
        return None
    key = hashlib.sha256(f"{version}\n{names}\n{RUST_DEPS_MANIFEST}".encode()).hexdigest()[:16]
    cache = (
        Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        / "acepilot"
        / "humaneval-rust-deps"
        / key
    )
    record = cache / "externs.json"
    if not record.is_file():
        cache.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=".build-", dir=cache.parent))
        (work / "src").mkdir()
        (work / "src" / "lib.rs").write_text("")
        (work / "Cargo.toml").write_text(RUST_DEPS_MANIFEST)
        (work / ".cargo").mkdir()
        (work / ".cargo" / "config.toml").write_text(
            f'[source.crates-io]\nreplace-with = "local"\n[source.local]\ndirectory = "{registry}"\n'
        )
        env = {**os.environ, "CARGO_HOME": str(work / ".cargo-home"), "RUSTC": rustc}
        log.warning("building the Rust crates HumanEval-X needs (rand, regex, md5), once")
        done = subprocess.run(
            [cargo, "build", "--offline", "--quiet"],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        if done.returncode != 0:
            shutil.rmtree(work, ignore_errors=True)
            raise RuntimeError(f"cannot build the Rust crates: {done.stderr.strip()[-500:]}")
        deps = work / "target" / "debug" / "deps"
        crates = {}
        for crate in RUST_CRATE_USES:
            found = sorted(deps.glob(f"lib{crate}-*.rlib"))
            if not found:
                raise RuntimeError(f"cargo built no lib{crate}*.rlib")
            crates[crate] = str(cache / "target" / "debug" / "deps" / found[0].name)
        data = {
            "crates": crates,
            "deps": str(cache / "target" / "debug" / "deps"),
            "registry": str(registry),
        }
        (work / "externs.json").write_text(json.dumps(data))
        try:
            os.rename(work, cache)
        except OSError:  # another process finished first: use theirs
            shutil.rmtree(work, ignore_errors=True)
    result: dict[str, Any] = json.loads(record.read_text())
    return result
