"""Workspace context in a real `acepilot serve` session (issue 17): the index started on initialize.

The workspace folder is written by each test; the backend is the stub team
server (lsp_helpers.Stub), which records the prompts it is sent, so the tests
read exactly what the model would have been given.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from lsp_helpers import Stub, get_stats, inline, items_of, open_doc, remote_options, running_server
from lsprotocol import types

from acepilot.server.lsp.workspace import AFTER_LINES, BEFORE_LINES, HEAD_LINES, document_window

pytestmark = pytest.mark.timeout(180)

GEOMETRY = '''"""Vectors."""


def scale_vector(vector, factor):
    """Multiply each component of `vector` by `factor`."""
    return [component * factor for component in vector]
'''
HIDDEN = """def leaked_secret_helper(value):
    return value + 1
"""
APP = """from pkg.geometry import scale_vector
from hidden import leaked_secret_helper


def main(values):
    doubled = scale_vector(values, 2)
    shifted = leaked_secret_helper(doubled)
    result = """


def write_workspace(root: Path) -> Path:
    """A small repository: app.py imports pkg/geometry.py (not opened) and an ignored file."""
    (root / "pkg").mkdir()
    (root / "pkg" / "__init__.py").write_text("", encoding="utf-8")
    (root / "pkg" / "geometry.py").write_text(GEOMETRY, encoding="utf-8")
    (root / "hidden.py").write_text(HIDDEN, encoding="utf-8")
    (root / ".gitignore").write_text("hidden.py\n", encoding="utf-8")
    app = root / "app.py"
    app.write_text(APP, encoding="utf-8")
    return app


def end_of(text: str) -> tuple[int, int]:
    lines = text.split("\n")
    return len(lines) - 1, len(lines[-1])


async def wait_indexed(client: Any, files: int, timeout: float = 120) -> dict[str, Any]:
    """Poll `acepilot/stats` until the first walk is over (the counts say so)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        workspace = (await get_stats(client))["workspace"]
        if not workspace["indexing"] and workspace["files"] >= files:
            return workspace
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not indexed within {timeout} s: {workspace}")
        await asyncio.sleep(0.05)


async def test_prompt_holds_the_definition_of_an_import_from_a_file_not_open(
    stub: Stub, tmp_path: Path
) -> None:
    app = write_workspace(tmp_path)
    stub.reply = lambda body: "0"
    async with running_server("visual_studio_code", remote_options(stub), tmp_path) as (
        client,
        _,
        _,
    ):
        workspace = await wait_indexed(client, files=2)  # __init__.py is empty: not indexed
        assert workspace["folders"] == 1
        open_doc(client, app.as_uri(), APP)
        line, column = end_of(APP)
        assert items_of(await inline(client, app.as_uri(), line, column))
        prompt = stub.bodies[-1]["prompt"]
        assert "def scale_vector(vector, factor):" in prompt
        assert "# Path: pkg/geometry.py" in prompt  # no repository format: a path comment
        assert prompt.index("pkg/geometry.py") < prompt.index("# Path: app.py")
        assert "leaked_secret_helper(value)" not in prompt  # .gitignore'd: never indexed
        stats = (await get_stats(client))["workspace"]
        assert stats["last_chunks"] >= 1 and stats["last_tokens"] > 0
        assert set(stats) == {"folders", "files", "indexing", "last_chunks", "last_tokens"}

        # A file saved later is indexed (didSave), and its definitions reach the prompt.
        (tmp_path / "pkg" / "units.py").write_text(
            "def meters_to_feet(meters):\n    return meters * 3.28084\n", encoding="utf-8"
        )
        text = "from pkg.units import meters_to_feet\n\n\nheight = "
        other = tmp_path / "other.py"
        other.write_text(text, encoding="utf-8")
        client.text_document_did_save(
            types.DidSaveTextDocumentParams(
                text_document=types.TextDocumentIdentifier(uri=(tmp_path / "pkg/units.py").as_uri())
            )
        )
        client.workspace_did_change_watched_files(
            types.DidChangeWatchedFilesParams(
                changes=[types.FileEvent(uri=other.as_uri(), type=types.FileChangeType.Created)]
            )
        )
        await wait_indexed(client, files=4)
        open_doc(client, other.as_uri(), text)
        line, column = end_of(text)
        await inline(client, other.as_uri(), line, column)
        assert "def meters_to_feet(meters):" in stub.bodies[-1]["prompt"]

        # Saving the .gitignore'd file (open in the editor) does not index it either.
        client.text_document_did_save(
            types.DidSaveTextDocumentParams(
                text_document=types.TextDocumentIdentifier(uri=(tmp_path / "hidden.py").as_uri())
            )
        )
        await wait_indexed(client, files=4)
        assert (await get_stats(client))["workspace"]["files"] == 4
        await inline(client, app.as_uri(), *end_of(APP))
        assert "leaked_secret_helper(value)" not in stub.bodies[-1]["prompt"]


async def test_setting_off_keeps_todays_prompt(stub: Stub, tmp_path: Path) -> None:
    app = write_workspace(tmp_path)
    options = remote_options(stub, workspaceContext=False)
    async with running_server("visual_studio_code", options, tmp_path) as (client, _, _):
        open_doc(client, app.as_uri(), APP)
        line, column = end_of(APP)
        await inline(client, app.as_uri(), line, column)
        assert stub.bodies[-1]["prompt"].startswith("# Path: app.py\n# Language: python\n")
        assert (await get_stats(client))["workspace"]["folders"] == 0


async def test_completions_are_answered_while_indexing_runs(stub: Stub, tmp_path: Path) -> None:
    app = write_workspace(tmp_path)
    bulk = tmp_path / "bulk"
    for group in range(60):  # 6,000 files: seconds of indexing on any machine
        folder = bulk / f"g{group}"
        folder.mkdir(parents=True)
        for number in range(100):
            (folder / f"m{number}.py").write_text(
                f"def function_{group}_{number}(x):\n    return x + {number}\n", encoding="utf-8"
            )
    async with running_server("visual_studio_code", remote_options(stub), tmp_path) as (
        client,
        _,
        _,
    ):
        open_doc(client, app.as_uri(), APP)
        line, column = end_of(APP)
        answered = items_of(await inline(client, app.as_uri(), line, column))
        workspace = (await get_stats(client))["workspace"]
        assert answered and [item.insert_text for item in answered] == ["42"]
        assert workspace["indexing"] is True, workspace  # the answer did not wait for the walk
        assert workspace["files"] < 6000


def test_the_collector_gets_the_head_and_the_lines_around_the_cursor_of_a_huge_document() -> None:
    lines = [f"line_{i} = {i}\n" for i in range(50_000)]
    text, offset = document_window(lines, 30_000, 3)
    kept = text.splitlines()
    assert len(kept) == 30_000 + AFTER_LINES  # line numbers are the document's
    assert (
        kept[0] == "line_0 = 0"
        and kept[HEAD_LINES - 1] == f"line_{HEAD_LINES - 1} = {HEAD_LINES - 1}"
    )
    assert kept[HEAD_LINES] == "" and kept[30_000 - BEFORE_LINES - 1] == ""
    assert kept[30_000 - BEFORE_LINES] == f"line_{30_000 - BEFORE_LINES} = {30_000 - BEFORE_LINES}"
    assert text[offset - 3 : offset] == "lin" and text[offset:].startswith("e_30000 = 30000")
    small = ["a = 1\n", "b = 2\n", "c"]
    assert document_window(small, 2, 1) == ("a = 1\nb = 2\nc", 13)


async def test_typing_in_a_line_keeps_the_prompt_head_byte_identical(
    stub: Stub, tmp_path: Path
) -> None:
    """Stable ordering: keystrokes in the same line change only the prompt's last line, so the
    context part (and all above the cursor line) is byte-identical from request to request, and
    the engine's per-document KV cache keeps being reused."""
    app = write_workspace(tmp_path)
    stub.reply = lambda body: "0"
    async with running_server("visual_studio_code", remote_options(stub), tmp_path) as (
        client,
        _,
        _,
    ):
        await wait_indexed(client, files=2)
        uri = app.as_uri()
        open_doc(client, uri, APP)
        line, column = end_of(APP)
        await inline(client, uri, line, column)
        for version, char in enumerate("sca", start=2):
            client.text_document_did_change(
                types.DidChangeTextDocumentParams(
                    text_document=types.VersionedTextDocumentIdentifier(version=version, uri=uri),
                    content_changes=[
                        types.TextDocumentContentChangePartial(
                            range=types.Range(
                                types.Position(line, column), types.Position(line, column)
                            ),
                            text=char,
                        )
                    ],
                )
            )
            column += 1
            await inline(client, uri, line, column)
        prompts = [body["prompt"] for body in stub.bodies]
        assert len(prompts) == 4
        contexts = {prompt[: prompt.index("# Path: app.py")] for prompt in prompts}
        assert len(contexts) == 1 and "def scale_vector(vector, factor):" in contexts.pop()
        heads = {prompt.rpartition("\n")[0] for prompt in prompts}
        assert len(heads) == 1  # only the cursor line differs
        assert [prompt.rpartition("\n")[2] for prompt in prompts] == [
            "    result = ",
            "    result = s",
            "    result = sc",
            "    result = sca",
        ]
