"""The VS Code extension end to end, in a real VS Code: code-server 4.100.3 + Debian chromium.

What it proves, with the real Python language server and the tiny trained
CodeGen (tests/engine_fixtures.py): the freshly packaged .vsix installs and
activates, its status bar item reaches "ready", typing shows ghost text
(`span.ghost-text-decoration`) equal to what a separate `acepilot serve`
process answers for the same document state (tests/extension/expected.py),
Tab inserts exactly that text into the document (read back from disk after
saving), the acceptance reaches the server's statistics through the items'
command (`acepilot.accepted` -> `acepilot/telemetry`), clicking the status
bar item turns completions off and on, a server killed mid-session is restarted and completions resume; and with a Python that has
no acepilot the user sees the error with the install command.

The installs are inside the test and cached between runs, outside the
repository: node_modules by `npm ci` (root, git-ignored) when package-lock.json
changed, the .vsix by `npm run package` when its inputs changed, code-server
under $ACEPILOT_E2E_CACHE or ~/.cache/acepilot-e2e (~2.5 minutes the first
time). Screenshots and logs go to $ACEPILOT_TEST_ARTIFACTS/vscode-e2e, else
the test's tmp dir; the path is printed. A missing system prerequisite
(chromium, ripgrep, node/npm, the npm registry) skips with the reason.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from expected import expected_completions
from node_tools import ROOT, artifacts_dir, digest, locked, run_logged

with contextlib.suppress(ImportError):  # needs the build extra (torch)
    from engine_fixtures import built_tiny_registry  # noqa: F401

pytestmark = pytest.mark.timeout(1500)

CODE_SERVER_VERSION = "4.100.3"
CHROMIUM = "/usr/bin/chromium"
RUN = ROOT / "extension" / "test" / "e2e" / "run.mjs"
# Settings shared by VS Code and the oracle server: greedy, one thread, no debounce.
MAX_TOKENS = 24
SOURCE = (
    "def add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n    return a - b\n\n\n"
    "def mul(a, b):\n    return a"
)


def server_settings(registry: Path) -> dict[str, Any]:
    """What the extension sends for the VS Code settings below (extension/src/config.ts)."""
    return {
        "backend": "local",
        "registry": str(registry),
        "model": "tiny",
        "threads": 1,
        "maxNewTokens": MAX_TOKENS,
        "debounceMs": 0,
    }


def vscode_settings(registry: Path, python: str) -> dict[str, Any]:
    return {
        "acepilot.server.python": python,
        "acepilot.registry": str(registry),
        "acepilot.model": "tiny",
        "acepilot.threads": 1,
        "acepilot.maxTokens": MAX_TOKENS,
        "acepilot.debounceMs": 0,
    }


@pytest.fixture(scope="session")
def vsix(node_modules: Path, e2e_cache: Path) -> Path:
    """dist/acepilot.vsix from `npm run package`, rebuilt only when its inputs changed."""
    out = ROOT / "dist" / "acepilot.vsix"
    stamp = ROOT / "dist" / ".acepilot-vsix-sha256"
    inputs = [
        ROOT / "package.json",
        ROOT / "package-lock.json",
        ROOT / ".vscodeignore",
        ROOT / "extension" / "src",
        ROOT / "extension" / "esbuild.mjs",
        ROOT / "extension" / "README.md",
    ]
    wanted = digest(inputs)
    with locked(e2e_cache / "package.lock"):
        if not out.is_file() or not stamp.is_file() or stamp.read_text() != wanted:
            run_logged(["npm", "run", "package"], ROOT, 600)
            stamp.write_text(wanted)
    return out


@pytest.fixture(scope="session")
def code_server(e2e_cache: Path, node_modules: Path) -> Path:
    """code-server under the cache (extension/scripts/install-code-server.sh), once."""
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"{CHROMIUM} is missing: apt-get install chromium (make system-deps)")
    if shutil.which("rg") is None:
        pytest.skip("ripgrep is missing: apt-get install ripgrep (make system-deps)")
    target = e2e_cache / f"code-server-{CODE_SERVER_VERSION}"
    binary = target / "node_modules" / ".bin" / "code-server"
    with locked(e2e_cache / "code-server.lock"):
        script = ROOT / "extension" / "scripts" / "install-code-server.sh"
        run_logged(["bash", str(script), str(target), CODE_SERVER_VERSION], ROOT, 1200)
    assert binary.is_file()
    return binary


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return artifacts_dir(tmp_path_factory, "vscode-e2e")


def drive(
    scenario: str,
    workdir: Path,
    artifacts: Path,
    code_server: Path,
    vsix: Path,
    settings: dict[str, Any],
    registry: Path,
) -> dict[str, Any]:
    """Run extension/test/e2e/run.mjs for one scenario; its observations as a dict."""
    config = {
        "scenario": scenario,
        "codeServer": str(code_server),
        "vsix": str(vsix),
        "chromium": CHROMIUM,
        "workdir": str(workdir),
        "artifacts": str(artifacts),
        "result": str(workdir / "result.json"),
        "marker": uuid.uuid4().hex,
        "source": SOURCE,
        "type1": " ",
        "type2": " ",
        "settings": settings,
        # no model or registry from the environment: only what the settings say
        "env": {"ACEPILOT_REGISTRY": str(registry)},
    }
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.json").write_text(json.dumps(config))
    env = {k: v for k, v in os.environ.items() if k != "ACEPILOT_MODEL"}
    proc = subprocess.run(
        ["node", str(RUN), str(workdir / "config.json")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    print(f"VS Code e2e ({scenario}) artefacts: {artifacts}")
    print(proc.stderr[-3000:])
    result: dict[str, Any] = json.loads((workdir / "result.json").read_text())
    (artifacts / f"{scenario}-result.json").write_text(json.dumps(result, indent=2))
    logs = artifacts / f"{scenario}-vscode-logs"
    with contextlib.suppress(OSError):
        shutil.copytree(workdir / "user" / "logs", logs, dirs_exist_ok=True)
    assert proc.returncode == 0 and result.get("ok"), (
        f"the VS Code run failed: {result.get('error')}\nscreenshots and logs: {artifacts}"
    )
    print(f"VS Code e2e ({scenario}): {result['durationMs'] / 1000:.1f} s")
    return result


def at_cursor(text: str, line: int, column: int) -> int:
    """Offset of 1-based (line, column) as VS Code's status bar shows it (no tabs here)."""
    lines = text.split("\n")
    return sum(len(each) + 1 for each in lines[: line - 1]) + column - 1


def check_ghost(ghost: dict[str, Any], expected: str) -> None:
    """The ghost text on screen is the server's completion (first line inline, the rest below)."""
    lines = expected.split("\n")
    assert ghost["inline"] == lines[0], f"ghost text {ghost!r} != server's {expected!r}"
    assert ghost["below"] == lines[1:], f"ghost text {ghost!r} != server's {expected!r}"


def test_ghost_text_tab_telemetry_and_restart(
    built_tiny_registry: Path,
    code_server: Path,
    vsix: Path,
    artifacts: Path,
    tmp_path: Path,
) -> None:
    workdir = tmp_path / "complete"
    python = sys.executable  # the interpreter running the tests has acepilot
    result = drive(
        "complete",
        workdir,
        artifacts,
        code_server,
        vsix,
        vscode_settings(built_tiny_registry, python),
        tmp_path / "no-registry",
    )
    root = workdir / "workspace"
    settings = server_settings(built_tiny_registry)

    # 1. Ghost text = the server's completion for the typed state; Tab inserts exactly it.
    after_tab: str = result["afterTab"]
    line, column = result["cursor1"]["line"], result["cursor1"]["column"]
    cut = at_cursor(after_tab, line, column)
    typed = after_tab[:cut]
    assert typed == SOURCE + " ", "the typed text is not where the test put it"
    expected = expected_completions(root, root / "main.py", typed, line - 1, column - 1, settings)
    assert expected, "the server gives no completion here: choose another SOURCE"
    check_ghost(result["ghost1"], expected[0])
    assert after_tab[cut:] == expected[0], "Tab did not insert the shown completion"

    # 2. The acceptance reached the server through the item's command (local telemetry).
    stats = re.search(r"(\d+) shown, (\d+) accepted", result["stats"])
    assert stats is not None, result["stats"]
    assert int(stats.group(1)) >= 1
    assert int(stats.group(2)) == 1

    # 3. The status bar item toggled completions off (and on again: the run went on).
    assert result["toggledOff"] == "Acepilot disabled"

    # 4. Killed mid-session: a new server process, ready again, and completions resume.
    assert result["secondPids"] and result["secondPids"][0] != result["killed"]
    before_second: str = result["beforeSecond"]
    assert before_second == after_tab + " "
    line, column = result["cursor2"]["line"], result["cursor2"]["column"]
    assert at_cursor(before_second, line, column) == len(before_second)
    expected = expected_completions(
        root, root / "main.py", before_second, line - 1, column - 1, settings
    )
    assert expected, "the server gives no completion after the restart: choose another SOURCE"
    check_ghost(result["ghost2"], expected[0])
    assert len(result["screenshots"]) == 5


def test_missing_acepilot_shows_the_install_command(
    code_server: Path, vsix: Path, artifacts: Path, tmp_path: Path
) -> None:
    # A real Python without acepilot: an empty virtual environment.
    venv = tmp_path / "empty-venv"
    subprocess.run(["python3", "-m", "venv", "--without-pip", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    workdir = tmp_path / "missing"
    result = drive(
        "missing",
        workdir,
        artifacts,
        code_server,
        vsix,
        {"acepilot.server.python": python},
        tmp_path / "no-registry",
    )
    toast: str = result["toast"]
    assert "does not have acepilot installed" in toast, toast
    assert f"{python} -m pip install acepilot" in toast, toast
    assert "pip install -e ." in toast, toast
    assert result["statusLabel"] == "Acepilot error"
    assert result["screenshots"]
