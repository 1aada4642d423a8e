"""`acepilot complete` is a headless editor: it shows what the language server shows.

For several cursors in one file, the CLI's completion (a subprocess, as a user
runs it) and the inline completion of a real `acepilot serve` (VS Code's
capabilities, same model and settings, same workspace root) are identical.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from lsp_helpers import inline, items_of, open_doc, running_server, wait_state

pytestmark = pytest.mark.timeout(900)

SOURCE = (
    "import os\n\n\n"
    "def read_lines(path):\n"
    '    """Return the lines of a file."""\n'
    "    with open(path) as handle:\n"
    "        return handle.read().splitlines()\n\n\n"
    "def count_words(text):\n"
    "    total = 0\n"
    "    for line in text.splitlines():\n"
    "        \n"
    "    return total\n"
)
# (0-based line, column): an empty line in a block, mid-line, after a block opener, line end
CURSORS = [(12, 8), (6, 22), (9, 22), (10, 13)]
MAX_TOKENS = 24


def cli_completion(path: Path, registry: Path, line: int, column: int) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "acepilot.server.cli", "complete", str(path)]
        + ["--line", str(line + 1), "--column", str(column + 1), "--json"]
        + ["--registry", str(registry), "--model", "tiny", "--max-tokens", str(MAX_TOKENS)]
        + ["--threads", "1", "--root", str(path.parent)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "ACEPILOT_REGISTRY": str(registry)},
    )
    assert result.returncode == 0, result.stderr
    return str(json.loads(result.stdout)["completion"])


async def test_cli_and_language_server_give_the_same_completion(
    built_tiny_registry: Path, tmp_path: Path
) -> None:
    path = tmp_path / "words.py"
    path.write_text(SOURCE, encoding="utf-8")
    expected = [cli_completion(path, built_tiny_registry, *cursor) for cursor in CURSORS]
    options = {
        "backend": "local",
        "registry": str(built_tiny_registry),
        "model": "tiny",
        "debounceMs": 0,
        "maxNewTokens": MAX_TOKENS,
        "threads": 1,
        "kvReuse": False,  # every request cold, as the CLI's single request
    }
    async with running_server("visual_studio_code", options, tmp_path) as (client, _, statuses):
        await wait_state(statuses, "ready", 300)
        open_doc(client, path.as_uri(), SOURCE)
        shown = []
        for line, column in CURSORS:
            items = items_of(await inline(client, path.as_uri(), line, column))
            shown.append(items[0].insert_text if items else "")
    assert shown == expected
    assert any(expected), "the tiny model said nothing anywhere: the check is empty"
