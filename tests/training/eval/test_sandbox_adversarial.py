"""Hostile completions against the HumanEval-X harness: each would have PASSED before the
completion channel (it exits 0 before or after failing tests, or disables the tests'
assertions) and is refused now; the canonical solution of the same problem still passes.

Every attack runs on problem 0 (Rust/C++ macro and builtins attacks on the problems whose
tests use what they override), through the real sandbox (bubblewrap, uids, limits).
"""

from __future__ import annotations

import os
import queue
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from acepilot.training.eval.data import load_problems
from acepilot.training.eval.languages import execute
from acepilot.training.eval.sandbox import Limits, Sandbox, find_bwrap
from acepilot.training.eval.toolchains import find_toolchain

REPO_ROOT = Path(__file__).resolve().parents[3]
DATA = Path(
    os.environ.get("ACEPILOT_HUMANEVAL_X", REPO_ROOT.parent / "shared" / "data" / "humaneval-x")
)
pytestmark = [
    pytest.mark.skipif(not DATA.is_dir(), reason=f"HumanEval-X data not at {DATA}"),
    pytest.mark.skipif(find_bwrap() is None, reason="bubblewrap not installed"),
]

PY_WRONG = "    return True\n"
# Python: the first four are the issue's; the rest extend the class.
PYTHON = {
    "sys.exit(0)": "    import sys\n    sys.exit(0)\n",
    "raise SystemExit": "    raise SystemExit\n",
    "os._exit(0) at top level": PY_WRONG + "import os\nos._exit(0)\n",
    "atexit handler": PY_WRONG + "import atexit, os\natexit.register(lambda: os._exit(0))\n",
    "excepthook": PY_WRONG + "import sys, os\nsys.excepthook = lambda *a: os._exit(0)\n",
    "__main__ block with sys.exit(main())": PY_WRONG
    + "def main():\n    return 0\nif __name__ == '__main__':\n    import sys\n    sys.exit(main())\n",
    "fake report printed": PY_WRONG + "print('ACEPILOT-DONE ' + '0' * 32)\nraise SystemExit(0)\n",
    "fake report on fd 4": PY_WRONG
    + "import os\nos.write(4, b'ACEPILOT-DONE ' + b'0' * 32 + b'\\n')\nos._exit(0)\n",
    "secret read from fd 3, environ, argv": PY_WRONG + "import os, re, sys\n"
    "found = b''\n"
    "try:\n    found = os.read(3, 64)\nexcept OSError:\n    pass\n"
    "for path in ['/proc/self/environ', '/proc/self/cmdline', '/proc/1/environ',"
    " '/proc/2/environ', '/proc/2/cmdline', 'harness.py', 'main.py']:\n"
    "    try:\n        found += open(path, 'rb').read()\n    except OSError:\n        pass\n"
    "for token in set(re.findall(rb'[0-9a-f]{32}', found)):\n"
    "    os.write(4, b'ACEPILOT-DONE ' + token + b'\\n')\n"
    "os._exit(0)\n",
    "threads exit 0 while the tests fail": PY_WRONG + "import os, threading\n"
    "threading.Thread(target=lambda: os._exit(0), daemon=True).start()\n",
}
JS = {
    "process.exit(0)": "  process.exit(0)\n}\n",
    "console.assert overridden": "  return true\n}\nconsole.assert = () => {}\n",
    "console shadowed": "  return true\n}\nconst console = { assert() {} }\n",
    "exit handler": "  return true\n}\nprocess.on('exit', () => process.exit(0))\n",
    "uncaught exceptions swallowed": "  return true\n}\n"
    "process.on('uncaughtException', () => process.exit(0))\n",
    "eval to shadow the harness": "  return true\n}\n"
    "for (const k of Object.getOwnPropertyNames(globalThis)) "
    "if (k.startsWith('acepilot_')) eval('var ' + k + ' = {check() {}, done() {}}')\n",
}
CPP = {
    "exit(0)": "    exit(0);\n}\n",
    "_Exit(0)": "    _Exit(0);\n}\n",
    "exit(0) in a static initializer": "    return true;\n}\nstatic int early = (exit(0), 0);\n",
    "assert defined away": "    return true;\n}\n#define assert(x) ((void)0)\n",
    "false defined as true": "    return true;\n}\n#define false true\n",
    "own main, the tests' main renamed": "    return true;\n}\nint main() { return 0; }\n"
    "#define main unused_main\n",
    "abort handler exits 0": "    return true;\n}\n#include <csignal>\n#include <unistd.h>\n"
    "static int hook = (signal(SIGABRT, [](int) { _exit(0); }), 0);\n",
    "secret stolen in a static initializer": "    return true;\n}\n#include <unistd.h>\n"
    "static int steal = [] { char b[64]; long n = read(3, b, 64); if (n > 0) {"
    ' write(4, "ACEPILOT-DONE ", 14); write(4, b, n); write(4, "\\n", 1); } _exit(0);'
    " return 0; }();\n",
}
JAVA = {
    "System.exit(0)": "        System.exit(0);\n        return true;\n    }\n}\n",
    "Runtime.halt(0)": "        Runtime.getRuntime().halt(0);\n        return true;\n    }\n}\n",
    "shutdown hook halts 0": "        Runtime.getRuntime().addShutdownHook(new Thread(() -> "
    "Runtime.getRuntime().halt(0)));\n        return true;\n    }\n}\n",
    "Arrays shadowed": "        return true;\n    }\n}\nclass Arrays {\n"
    "    @SafeVarargs\n"
    "    static <T> java.util.List<T> asList(T... a) { return new java.util.ArrayList<>(); }\n}\n",
}
GO = {
    "TestMain that runs nothing": "    return true\n}\nfunc TestMain(m *testing.M) {}\n",
    "panics swallowed": "    defer func() { recover() }()\n    return true\n}\n",
}
RUST = {
    "std::process::exit(0)": "    std::process::exit(0);\n}\n",
    "assert_eq! shadowed": "    return true;\n}\nmacro_rules! assert_eq { ($($t:tt)*) => {} }\n"
    "macro_rules! assert { ($($t:tt)*) => {} }\n",
    "panic hook exits 0": "    std::panic::set_hook(Box::new(|_| std::process::exit(0)));\n"
    "    true\n}\n",
}
ATTACKS = {"python": PYTHON, "js": JS, "cpp": CPP, "java": JAVA, "go": GO, "rust": RUST}
# Overriding what the tests call: Python/2's test is `assert abs(candidate(3.5) - 0.5) < 1e-6`.
BUILTINS_SWAP = "    import builtins\n    builtins.abs = lambda x: 0\n    return 0.5\n"


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    with Sandbox(tmp_path_factory.mktemp("sandbox")) as box:
        yield box


def problem(language: str, task: int) -> dict[str, object]:
    return next(p for p in load_problems(DATA, language) if p["task_id"].endswith(f"/{task}"))


def verdicts(
    sandbox: Sandbox, tmp: Path, language: str, completions: dict[str, str], task: int = 0
) -> dict[str, str]:
    toolchain = find_toolchain(language)
    if toolchain.missing:
        pytest.skip(f"{language}: {toolchain.missing}")
    item = problem(language, task)
    cases = {**completions, "canonical": str(item["canonical_solution"])}

    slots: queue.Queue[int] = queue.Queue()
    for slot in (0, 1):
        slots.put(slot)

    def run(text: str) -> str:  # two at a time, each in its own sandbox slot (uid)
        slot = slots.get()
        try:
            limits = Limits(cpu_s=10, wall_s=20)
            outcome = execute(
                sandbox, toolchain, item, text, limits=limits, slot=slot, cache_dir=tmp
            )
        finally:
            slots.put(slot)
        return outcome.status

    with ThreadPoolExecutor(max_workers=2) as pool:
        statuses = list(pool.map(run, cases.values()))
    return dict(zip(cases, statuses, strict=True))


@pytest.mark.parametrize("language", list(ATTACKS))
def test_early_exits_and_disabled_assertions_never_pass(
    sandbox: Sandbox, tmp_path: Path, language: str
) -> None:
    found = verdicts(sandbox, tmp_path, language, ATTACKS[language])
    assert found.pop("canonical") == "passed"
    passed = [name for name, status in found.items() if status == "passed"]
    assert passed == [], f"{language}: these attacks passed: {passed}"


def test_swapping_builtins_the_tests_use_fails(sandbox: Sandbox, tmp_path: Path) -> None:
    found = verdicts(sandbox, tmp_path, "python", {"abs swapped": BUILTINS_SWAP}, task=2)
    assert found == {"abs swapped": "failed", "canonical": "passed"}


# ---------------------------------------------------------------------------
# The filesystem view: each completion does something outside its sandbox, then the
# correct body; "passed" would mean the attack worked unhindered.

CANONICAL_0 = """    for idx, elem in enumerate(numbers):
        for idx2, elem2 in enumerate(numbers):
            if idx != idx2 and abs(elem - elem2) < threshold:
                return True
    return False
"""


def python_attack(sandbox: Sandbox, tmp: Path, code: str) -> tuple[str, str]:
    toolchain = find_toolchain("python")
    outcome = execute(
        sandbox,
        toolchain,
        problem("python", 0),
        code + CANONICAL_0,
        limits=Limits(cpu_s=20, wall_s=30),
        cache_dir=tmp,
    )
    return outcome.status, outcome.output


def test_a_host_unix_socket_cannot_be_reached(sandbox: Sandbox, tmp_path: Path) -> None:
    """A 0777 Unix socket elsewhere on the machine (think of Docker's or a database's)."""
    import socket

    path = tmp_path / "service.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(4)
    server.setblocking(False)
    path.chmod(0o777)
    try:
        status, output = python_attack(
            sandbox,
            tmp_path,
            "    import socket\n"
            "    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\n"
            f"    s.connect({str(path)!r})\n",
        )
        with pytest.raises(BlockingIOError):
            server.accept()  # nobody connected
    finally:
        server.close()
    assert status == "failed" and "FileNotFoundError" in output


def test_files_written_to_tmp_and_dev_shm_do_not_outlive_the_sample(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    marker = f"acepilot-leak-{os.getpid()}"
    code = (
        "    import contextlib\n"
        f"    for place in ('/tmp/{marker}', '/dev/shm/{marker}', '/var/tmp/{marker}'):\n"
        "        with contextlib.suppress(OSError):\n"
        "            open(place, 'w').write('x')\n"
    )
    status, _ = python_attack(sandbox, tmp_path, code)
    assert status == "passed"  # the sample's own /tmp is writable...
    for place in ("/tmp", "/dev/shm", "/var/tmp"):  # ...and private
        assert not Path(place, marker).exists()


def test_disk_is_bounded_per_sample_not_only_per_file(sandbox: Sandbox, tmp_path: Path) -> None:
    """600 MiB in files below the 16 MiB file-size limit: the work tmpfs (256 MiB) stops it."""
    code = (
        "    chunk = b'x' * (8 << 20)\n"
        "    for i in range(75):\n"
        "        with open(f'fill-{i}', 'wb') as handle:\n"
        "            handle.write(chunk)\n"
    )
    status, output = python_attack(sandbox, tmp_path, code)
    assert status == "failed" and "No space left on device" in output


def test_files_outside_the_toolchains_are_not_visible(sandbox: Sandbox, tmp_path: Path) -> None:
    """A world-readable key under a home-like directory: not in the view at all."""
    home = tmp_path / "home" / "alice"
    (home / ".ssh").mkdir(parents=True)
    key = home / ".ssh" / "id_ed25519"
    key.write_text("PRIVATE KEY\n")
    key.chmod(0o644)
    code = (
        f"    print(open({str(key)!r}).read())\n    import os\n    print(sorted(os.listdir('/')))\n"
    )
    status, output = python_attack(sandbox, tmp_path, code)
    assert status == "failed" and "FileNotFoundError" in output and "PRIVATE KEY" not in output
    listing = (
        "    import os\n"
        "    print(sorted(os.listdir('/')), os.path.exists('/home'), os.path.exists('/var'),"
        " os.path.exists('/run'), os.path.exists('/etc/passwd'), os.path.exists('/root/.ssh'))\n"
        "    raise SystemExit(1)\n"
    )
    status, output = python_attack(sandbox, tmp_path, listing)
    assert "['acepilot', 'bin', 'dev', 'etc', 'lib', 'lib64', 'out', 'proc'" in output
    assert "False False False False False" in output  # no /home, /var, /run, passwd, ~/.ssh


def test_rust_include_str_of_a_host_file_does_not_compile(sandbox: Sandbox, tmp_path: Path) -> None:
    toolchain = find_toolchain("rust")
    if toolchain.missing:
        pytest.skip(toolchain.missing)
    secret = tmp_path / "credentials.txt"
    secret.write_text("hunter2-very-secret\n")
    secret.chmod(0o644)
    completion = f'    let _leak = include_str!("{secret}");\n    true\n}}\n'
    outcome = execute(
        sandbox,
        toolchain,
        problem("rust", 0),
        completion,
        limits=Limits(cpu_s=10, wall_s=20),
        cache_dir=tmp_path,
    )
    assert outcome.status == "build_failed"
    assert "hunter2" not in outcome.output and "No such file" in outcome.output


def test_pass_at_1_counts_only_finished_tests(tmp_path: Path) -> None:
    """The issue's figure: six wrong bodies that exit 0 early among eight samples gave
    pass@1 = 0.75; only the two correct ones count now."""
    from acepilot.training.eval.generate import FixedGenerator, Sampling
    from acepilot.training.eval.humaneval import HumanEvalConfig, evaluate

    exits = [PYTHON[name] for name in list(PYTHON)[:6]]
    variants = [*exits, CANONICAL_0, CANONICAL_0]
    config = HumanEvalConfig(
        data=str(DATA),
        languages=("python",),
        tasks=(0,),
        ks=(1,),
        workers=2,
        progress=False,
        sampling=Sampling(n=len(variants)),
    )
    summary = evaluate(FixedGenerator({"Python/0": variants}), config, tmp_path)
    assert summary["languages"]["python"]["pass@1"]["value"] == pytest.approx(2 / 8)
