"""The six HumanEval-X languages: prompt, stop sequences, program, build and run.

Programs are assembled the way CodeGeeX's reference harness
(codegeex/benchmark/execution.py) does, so pass rates are comparable with
published HumanEval-X figures, with these documented differences:

- C++ is compiled with -std=c++17 (CodeGeeX: c++11) and linked with -lcrypto
  when libcrypto is present (task 162 needs MD5).
- Go is compiled with `go test -c -vet=off` (GOPATH mode, testify from the
  Debian package or $ACEPILOT_GOPATH) and the test binary run separately, so
  that the compiler runs as the builder uid (which alone may write Go's build
  cache) and only the test binary as the sandbox user. vet findings are
  style, not correctness, hence off.
- Rust is compiled with plain `rustc` (no cargo, no network, no libtest: the
  harness calls the test function itself; see harness.py): the
  declaration's `use rand::Rng; use regex::Regex; use md5;` lines are dropped
  when those crates are not available, so tasks 91 and 162, whose canonical
  solutions need regex and md5, fail by design (docs/evaluation.md).
- The Rust generation prompt is `prompt + declaration`: HumanEval-X's Rust
  prompt is the comment alone, the signature is in `declaration`.

Programs are assembled by harness.py (with the completion channel that makes
only finished tests pass); execute() builds and runs them inside one sandbox
per sample (sandbox.py), compilers included.

A brace language stops generation at "\\n}" (the end of a top-level block;
for Java the end of the class, whose method is indented) and the "}" is put
back; Python uses the Codex paper's stop sequences.
"""

from __future__ import annotations

import ctypes.util
import hashlib
import json
import logging
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from acepilot.training.eval.harness import (
    RUST_CRATE_USES,
    Program,
    assemble,
    new_tag,
)
from acepilot.training.eval.sandbox import (
    SYSTEM_PATH,
    CppGuard,
    ExecResult,
    Limits,
    Sandbox,
    Step,
)

log = logging.getLogger(__name__)

LANGUAGES = ("python", "cpp", "java", "js", "go", "rust")
ALIASES = {
    "py": "python",
    "c++": "cpp",
    "javascript": "js",
    "golang": "go",
    "rs": "rust",
}
PYTHON_STOP = ("\nclass", "\ndef", "\n#", "\nif", "\nprint")
BRACE_STOP = ("\n}",)
JVM_FLAGS = (
    "-Xmx512m",
    "-Xss16m",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-XX:ReservedCodeCacheSize=64m",
    "-XX:CompressedClassSpaceSize=64m",
    "-XX:-UsePerfData",
)
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


# ---------------------------------------------------------------------------
# Programs, build and run


def stop_sequences(language: str) -> tuple[str, ...]:
    return PYTHON_STOP if language == "python" else BRACE_STOP


def finish_completion(language: str, text: str, finish_reason: str) -> str:
    """Put back the brace a brace language's stop sequence removed."""
    if language != "python" and finish_reason == "stop":
        return text + "\n}"
    return text


@dataclass(frozen=True)
class Outcome:
    """The verdict on one sample: passed, failed, timeout, build_failed or error
    (the harness could not execute it: not the code's fault, never a pass)."""

    status: str
    output: str
    build_s: float
    run_s: float

    @property
    def passed(self) -> bool:
        return self.status == "passed"


BUILD_LIMITS = Limits(cpu_s=120, wall_s=180.0, nproc=1024, nofile=1024, output_bytes=4096)
NOT_FINISHED = "\n[acepilot: the tests did not run to their end (no completion report)]"


def execute(
    sandbox: Sandbox,
    toolchain: Toolchain,
    problem: Mapping[str, Any],
    completion: str,
    *,
    limits: Limits,
    slot: int = 0,
    cache_dir: Path | None = None,
) -> Outcome:
    """Build and run one sample in one sandbox (compilers as the builder uid, the
    program as the slot's uid); passed only with the harness's completion report."""
    language = toolchain.language
    if toolchain.missing:
        raise RuntimeError(f"{language} cannot run here: {toolchain.missing}")
    externs = json.loads(toolchain.env.get("ACEPILOT_RUST_EXTERNS") or "{}")
    built = assemble(
        language, problem, completion, tag=new_tag(), crates=frozenset(externs.get("crates", {}))
    )
    env = dict(toolchain.env)
    read_write: dict[str, str] = {}
    if language == "go":
        env["GOCACHE"] = go_cache(sandbox, cache_dir, read_write)
    steps = [*build_steps(toolchain, built, env), run_step(toolchain, built, env, limits)]
    results = sandbox.run_sample(
        built.files,
        steps,
        slot=slot,
        path=toolchain.path,
        read_only=toolchain.binds,
        read_write=read_write,
    )
    build_s = sum(r.duration_s for r in results if r.name != "run")
    last = results[-1]
    if last.name != "run":
        status = "timeout" if last.timed_out else "build_failed"
        return Outcome(status, last.output, build_s, 0.0)
    status = judge(language, last)
    output = last.output
    if status == "failed" and last.ok and not last.reported:
        output += NOT_FINISHED
    return Outcome(status, output, build_s, last.duration_s)


def go_cache(sandbox: Sandbox, cache_dir: Path | None, read_write: dict[str, str]) -> str:
    """Go's build cache: shared between samples only where a uid other than the
    program's owns it (root); otherwise per sample, in the sample's tmpfs."""
    if cache_dir is None or not sandbox.isolation.drop_privileges:
        return ".gocache"  # relative to the work directory (HOME)
    host = sandbox.builder_dir(cache_dir / "gocache")
    if sandbox.isolation.filesystem == "bubblewrap":
        read_write[str(host)] = "/gocache"
        return "/gocache"
    return str(host)


def build_steps(
    toolchain: Toolchain, built: Program, env: Mapping[str, str]
) -> list[Step | CppGuard]:
    tools = toolchain.tools
    language = toolchain.language

    def step(name: str, argv: list[str]) -> Step:
        return Step(name, argv, BUILD_LIMITS, user="build", env=env)

    if language == "cpp":
        std = [tools["g++"], "-std=c++17"]
        link = ["-lcrypto"] if toolchain.env.get("ACEPILOT_LINK_CRYPTO") else []
        return [
            step("macros-prompt", [*std, "-E", "-dM", "-o", "base.macros", "base.cpp"]),
            step("macros-completion", [*std, "-E", "-dM", "-o", "cand.macros", "cand.cpp"]),
            CppGuard(
                "base.macros",
                "cand.macros",
                "cand.cpp",
                "tail.cpp",
                "main.cpp",
                built.extra["names"],
            ),
            step("build", [*std, "-Wno-return-type", "-o", "main", "main.cpp", *link]),
        ]
    if language == "java":
        flags = [f"-J{flag}" for flag in JVM_FLAGS if flag != "-Xss16m"]
        sources = sorted(name for name in built.files if name.endswith(".java"))
        return [step("build", [tools["javac"], *flags, "-encoding", "UTF-8", "-nowarn", *sources])]
    if language == "go":
        sources = sorted(name for name in built.files if name.endswith(".go"))
        go = [tools["go"], "test", "-c", "-vet=off", "-o", "main.test", *sources]
        return [step("build", go)]
    if language == "rust":
        externs = json.loads(toolchain.env.get("ACEPILOT_RUST_EXTERNS") or "{}")
        linked = [f"--extern={name}={path}" for name, path in externs.get("crates", {}).items()]
        if linked:
            linked.append(f"-Ldependency={externs['deps']}")
        rustc = [tools["rustc"], *linked, "--edition", "2021", "-A", "warnings"]
        return [step("build", [*rustc, "-C", "debuginfo=0", "-o", "main", "main.rs"])]
    return []


def run_step(toolchain: Toolchain, built: Program, env: Mapping[str, str], limits: Limits) -> Step:
    tools = toolchain.tools
    language = toolchain.language
    if language == "python":
        argv = [tools["python"], "-B", "-s", "harness.py"]
    elif language == "js":
        argv = [
            tools["node"],
            "--disallow-code-generation-from-strings",
            "--max-old-space-size=512",
            "harness.js",
        ]
    elif language == "java":
        argv = [tools["java"], *JVM_FLAGS, "-cp", ".", built.extra["main_class"]]
    elif language == "go":
        argv = ["./main.test", "-test.timeout=60s"]
    else:
        argv = ["./main"]
    return Step("run", argv, limits, user="run", env=env, channel=True)


def judge(language: str, ran: ExecResult) -> str:
    """Passed = exit 0 and the harness's completion report (the secret came back).
    JavaScript: any output also fails, as in CodeGeeX (its tests printed failures)."""
    if ran.timed_out or ran.returncode in (-signal.SIGXCPU, 128 + signal.SIGXCPU):
        return "timeout"  # wall clock, or the CPU-time limit
    if ran.returncode != 0 or not ran.reported:
        return "failed"
    if language == "js" and ran.output.strip():
        return "failed"
    return "passed"


def describe_toolchains(languages: list[str]) -> str:
    return json.dumps({lang: find_toolchain(lang).describe() for lang in languages}, indent=2)
