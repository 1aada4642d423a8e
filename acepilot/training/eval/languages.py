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
per sample (sandbox.py), compilers included, with the tools toolchains.py
found (the language names and aliases live there too).

A brace language stops generation at "\\n}" (the end of a top-level block;
for Java the end of the class, whose method is indented) and the "}" is put
back; Python uses the Codex paper's stop sequences.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from acepilot.training.eval.harness import Program, assemble, new_tag
from acepilot.training.eval.sandbox import CppGuard, ExecResult, Limits, Sandbox, Step
from acepilot.training.eval.toolchains import Toolchain

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
