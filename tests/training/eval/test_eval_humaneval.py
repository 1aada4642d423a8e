"""HumanEval-X harness: pass@k against known values, the canonical self-check on a fixed
sample, and broken or hostile solutions that must fail without harming the machine.

The full canonical run (all 164 problems x 6 languages, ~10 minutes on 2 cores) is
the documented command in docs/evaluation.md; here a fixed sample of 10 problems per
language keeps the suite fast, with the known failures pinned.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from acepilot.training.eval import humaneval
from acepilot.training.eval.cleanup import processes_of
from acepilot.training.eval.generate import CanonicalGenerator, FixedGenerator, Sampling
from acepilot.training.eval.humaneval import HumanEvalConfig, evaluate
from acepilot.training.eval.metrics import pass_at_k, summarize
from acepilot.training.eval.sandbox import UID_BASE, UID_LOCKS, UID_RANGE, probe_isolation
from acepilot.training.eval.toolchains import LANGUAGES, Toolchain, find_toolchain

REPO_ROOT = Path(__file__).resolve().parents[3]
DATA = Path(
    os.environ.get("ACEPILOT_HUMANEVAL_X", REPO_ROOT.parent / "shared" / "data" / "humaneval-x")
)
pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason=f"HumanEval-X data not at {DATA}")

# A fixed spread of problems, including ones whose canonical solutions are known to
# fail (docs/evaluation.md explains each): JavaScript/112 is wrong in the dataset,
# JavaScript/162 needs the npm module js-md5, Rust/50's test uses rand 0.7's API.
SAMPLE = (0, 12, 22, 33, 50, 67, 91, 112, 125, 162)


def known_failures() -> dict[str, set[str]]:
    known = {"js": {"JavaScript/112", "JavaScript/162"}, "rust": {"Rust/50"}}
    if not Path("/usr/include/boost/any.hpp").exists():
        known["cpp"] = {"CPP/22"}  # needs libboost-dev
    if "ACEPILOT_RUST_EXTERNS" not in find_toolchain("rust").env:
        known["rust"] |= {"Rust/91", "Rust/162"}  # need the regex and md5 crates
    return known


def test_pass_at_k_known_values() -> None:
    # 1 - C(n-c, k) / C(n, k)
    assert pass_at_k([10], [3], 1)[0] == pytest.approx(0.3)
    assert pass_at_k([10], [3], 5)[0] == pytest.approx(1 - 21 / 252)  # C(7,5)/C(10,5)
    assert pass_at_k([200], [1], 100)[0] == pytest.approx(0.5)
    assert pass_at_k([5, 5], [0, 5], 2).tolist() == [0.0, 1.0]
    assert pass_at_k([20], [2], 10)[0] == pytest.approx(1 - (10 * 9) / (20 * 19))
    with pytest.raises(ValueError, match="at least 10 samples"):
        pass_at_k([5], [1], 10)
    with pytest.raises(ValueError, match="between 0 and num_samples"):
        pass_at_k([5], [6], 1)


def test_summary_per_language_and_overall_with_intervals() -> None:
    counts = {
        "python": {f"P/{i}": (10, 10 if i < 30 else 0) for i in range(100)},
        "go": {f"G/{i}": (10, 5) for i in range(50)},
    }
    summary = summarize(counts, (1, 10, 100))
    assert summary["ks"] == [1, 10]  # 100 > n is not estimable
    languages = summary["languages"]
    assert isinstance(languages, dict)
    py = languages["python"]["pass@1"]
    assert py["value"] == pytest.approx(0.3) and py["low"] < 0.3 < py["high"]
    assert py["low"] > 0.2 and py["high"] < 0.4  # ~ +-1.96 * sqrt(.21/100)
    go = languages["go"]
    assert go["pass@1"] == {"value": 0.5, "low": 0.5, "high": 0.5}  # every problem 5/10
    assert go["pass@10"]["value"] == pytest.approx(1.0)
    overall = summary["overall"]
    assert isinstance(overall, dict)
    assert overall["pass@1"]["value"] == pytest.approx((30 + 25) / 150)
    assert overall["macro_pass@1"] == pytest.approx(0.4)


def config(tmp: Path, **kw: object) -> HumanEvalConfig:
    base: dict[str, object] = {
        "data": str(DATA),
        "ks": (1,),
        "workers": 2,
        "progress": False,
        "timeout_s": 5.0,
    }
    base.update(kw)
    return HumanEvalConfig(**base)  # type: ignore[arg-type]


def test_canonical_solutions_pass_on_a_fixed_sample(tmp_path: Path) -> None:
    available = [lang for lang in LANGUAGES if not find_toolchain(lang).missing]
    summary = evaluate(
        CanonicalGenerator(), config(tmp_path, languages=tuple(available), tasks=SAMPLE), tmp_path
    )
    assert not summary["skipped"]
    for language, tasks in summary["per_problem"].items():
        assert len(tasks) == len(SAMPLE), language
        failing = {task for task, (n, c) in tasks.items() if c < n}
        assert failing == known_failures().get(language, set()), (language, failing)
    records = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert len(records) == len(SAMPLE) * len(available)
    assert {r["status"] for r in records} <= {"passed", "build_failed", "failed"}
    python = summary["languages"]["python"]["pass@1"]
    assert python["value"] == 1.0
    print()
    print(humaneval.canonical_table(summary))


PREFIX = {
    "python": "Python",
    "cpp": "CPP",
    "java": "Java",
    "js": "JavaScript",
    "go": "Go",
    "rust": "Rust",
}


def run_broken(
    tmp: Path, language: str, task: int, variants: list[str], timeout: float = 3.0
) -> list[dict[str, object]]:
    """Evaluate the given completions (one sample each) of one problem."""
    problems = {f"{PREFIX[language]}/{task}": variants}
    cfg = config(
        tmp,
        languages=(language,),
        tasks=(task,),
        sampling=Sampling(n=len(variants)),
        timeout_s=timeout,
    )
    evaluate(FixedGenerator(problems), cfg, tmp)
    return [json.loads(line) for line in (tmp / "samples.jsonl").read_text().splitlines()]


CANONICAL_0 = """    for idx, elem in enumerate(numbers):
        for idx2, elem2 in enumerate(numbers):
            if idx != idx2 and abs(elem - elem2) < threshold:
                return True
    return False
"""


@pytest.fixture
def listener() -> Iterator[tuple[int, list[object]]]:
    """A loopback TCP server: a sandboxed solution must not reach it."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(0.2)
    accepted: list[object] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            accepted.append(conn)
            conn.sendall(b"hello")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1], accepted
    stop.set()
    thread.join()
    server.close()


def test_broken_and_hostile_python_solutions_fail_harmlessly(
    tmp_path: Path, listener: tuple[int, list[object]]
) -> None:
    """Each hostile variant would PASS if its attack worked (it then runs the correct
    code): a 'failed'/'timeout' status means the sandbox stopped it."""
    port, accepted = listener
    outside = tmp_path / "outside"
    outside.mkdir()
    sentinel = outside / "written-from-the-sandbox"
    variants = {
        "empty body": "",
        "wrong return": "    return 42\n",
        "infinite loop": "    while True:\n        pass\n",
        "fork bomb": (
            "    import os\n"
            "    while True:\n"
            "        try:\n"
            "            os.fork()\n"
            "        except OSError:\n"
            "            pass\n"
        ),
        "write outside": f"    open({str(sentinel)!r}, 'w').write('x')\n" + CANONICAL_0,
        "socket": (
            "    import socket\n"
            f"    socket.create_connection(('127.0.0.1', {port}), timeout=2).recv(5)\n"
            + CANONICAL_0
        ),
        "canonical (control)": CANONICAL_0,
    }
    records = run_broken(tmp_path / "run", "python", 0, list(variants.values()))
    status = {name: r["status"] for name, r in zip(variants, records, strict=True)}
    assert status["canonical (control)"] == "passed"
    assert status["empty body"] == "failed" and status["wrong return"] == "failed"
    assert status["infinite loop"] == "timeout"
    assert status["fork bomb"] in ("timeout", "failed")
    assert status["socket"] == "failed" and not accepted
    assert status["write outside"] == "failed" and not sentinel.exists()  # not in the view
    if probe_isolation().drop_privileges:
        assert idle_sandbox_processes() == []  # the fork bomb is gone
    sockets_output = str(records[list(variants).index("socket")]["output"])
    assert "Error" in sockets_output or "error" in sockets_output


def idle_sandbox_processes() -> list[int]:
    """Processes of sandbox uids that no running harness holds (another harness on this
    machine, e.g. a concurrent test run, may hold some: its processes are its own)."""
    found = []
    for uid in range(UID_BASE, UID_BASE + UID_RANGE):
        lock = UID_LOCKS / f"{uid}.lock"
        if not lock.exists():
            continue  # never leased
        with lock.open("a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # leased right now
            found += processes_of(uid)
    return found


@pytest.mark.skipif(find_toolchain("cpp").missing is not None, reason="no g++")
def test_broken_cpp_solutions(tmp_path: Path) -> None:
    secret = tmp_path / "secret.h"  # outside the toolchains: not in the sandbox's view
    secret.write_text("#define SECRET_ANSWER false\n")
    variants = [
        "",  # no closing brace: does not compile
        "    return false;\n}\n",  # wrong answer
        "    while (true) {}\n}\n",  # infinite loop (CPU limit / timeout)
        "    while (true) fork();\n}\n",  # a fork bomb (the harness includes unistd.h)
        "    for (;;) { new char[1 << 20]; }\n}\n",  # memory: the address-space limit stops it
        f'#include "{secret}"\n    return SECRET_ANSWER;\n}}\n',  # a file it may not read
    ]
    records = run_broken(tmp_path / "run", "cpp", 0, variants, timeout=3.0)
    status = [r["status"] for r in records]
    # g++ runs in the sandbox, where the file does not exist at all
    assert status[5] == "build_failed" and "No such file" in str(records[5]["output"])
    assert status[0] == "build_failed" and status[3] in ("timeout", "failed")
    assert status[1] == "failed" and status[2] == "timeout" and status[4] == "failed"


def test_missing_toolchain_skips_the_language_with_a_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real = humaneval.find_toolchain

    def without_go(language: str) -> Toolchain:
        if language == "go":
            return Toolchain("go", missing="go not found: install golang")
        return real(language)

    monkeypatch.setattr(humaneval, "find_toolchain", without_go)
    summary = evaluate(
        CanonicalGenerator(), config(tmp_path, languages=("python", "go"), tasks=(0,)), tmp_path
    )
    assert summary["skipped"] == {"go": "go not found: install golang"}
    assert set(summary["languages"]) == {"python"}  # skipped, not scored as zero
    assert "skipping go: go not found" in capsys.readouterr().err


def test_eval_command_canonical(tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "acepilot.server.cli",
            "eval",
            "humaneval",
            "canonical",
            "--data",
            str(DATA),
            "--languages",
            "python,js",
            "--tasks",
            "1,2",
            "--k",
            "1",
            "--no-progress",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "| python | 2 | 100.0 [100.0, 100.0] |" in done.stdout
    assert "| js | 2/2 | 100.0% | - |" in done.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["overall"]["pass@1"]["value"] == 1.0
    assert np.isclose(summary["languages"]["js"]["pass@1"]["value"], 1.0)
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "acepilot.server.cli",
            "eval",
            "humaneval",
            "canonical",
            "--out",
            str(out),
            "--languages",
            "cobol",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and "unknown language 'cobol'" in bad.stderr
