"""A headless editor: `acepilot complete` and `acepilot demo` run the editor's pipeline.

The file is opened in a Session as an editor would open it (language id from
its extension, path relative to a workspace root), the cursor is placed, and
the same `pipeline.complete` as the language server's produces the text: same
prompt, same stop, same post-processing. What the CLI prints is what the
editor shows for the same text and cursor (tests/server/test_complete_cli.py
checks it against a real `acepilot serve`).

Differences are only those of a single request: no debounce, no generation
deadline, no other open documents (so no snippets). With `workspace` (the CLI's
`--workspace DIR`) the folder is indexed first (waiting for the walk, which the
editor never does) and the prompt gets the same workspace context as the
editor's; without it, no index and no workspace context.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from acepilot.server.errors import AcepilotError
from acepilot.server.lsp import pipeline
from acepilot.server.lsp.backends import Result
from acepilot.server.lsp.documents import line_content, split_lines
from acepilot.server.lsp.prompt import PromptPart
from acepilot.server.lsp.session import Session

MAX_FILE_BYTES = 32 << 20
INDEX_WAIT_S = 600.0  # the CLI waits this long for the workspace's first walk
LANGUAGE_IDS = {
    ".py": "python",
    ".pyi": "python",
    ".js": "javascript",
    ".mjs": "javascript",
    ".jsx": "javascriptreact",
    ".ts": "typescript",
    ".tsx": "typescriptreact",
    ".go": "go",
    ".rs": "rust",
    ".java": "java",
    ".c": "c",
    ".h": "c",
    ".cc": "cpp",
    ".cpp": "cpp",
    ".hpp": "cpp",
    ".cs": "csharp",
    ".rb": "ruby",
    ".sh": "shellscript",
    ".lua": "lua",
    ".php": "php",
    ".kt": "kotlin",
    ".swift": "swift",
    ".scala": "scala",
}


@dataclass(frozen=True, kw_only=True)
class HeadlessCompletion:
    """The completion an editor would show, and what producing it cost."""

    text: str  # "" when the editor would show nothing
    model: str
    device: str
    result: Result | None  # the backend's generation (None: none ran)
    parts: tuple[PromptPart, ...] = ()  # the prompt's parts with their source (--explain)
    prompt_text: str = ""  # the prompt as the model got it
    latency_ms: float = 0.0  # from the request to the reply, as the editor would wait


class Quiet:
    """A Notifier for a session without a client: errors are kept, the rest dropped."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def notify(self, method: str, params: Any) -> None:
        return None

    def show_error(self, message: str) -> None:
        self.errors.append(message)

    async def begin_progress(self, message: str) -> str | None:
        return None

    def end_progress(self, token: str | None, message: str) -> None:
        return None


def language_id(path: Path) -> str:
    return LANGUAGE_IDS.get(path.suffix.lower(), "plaintext")


def read_source(path: Path) -> str:
    """A source file's text (UTF-8), or a clear AcepilotError."""
    try:
        if path.is_dir():
            raise AcepilotError(f"{path}: is a directory, not a source file")
        if path.stat().st_size > MAX_FILE_BYTES:
            raise AcepilotError(f"{path}: too large for a source file (over 32 MiB)")
        data = path.read_bytes()
    except FileNotFoundError:
        raise AcepilotError(f"{path}: no such file") from None
    except OSError as exc:
        raise AcepilotError(f"{path}: cannot read the file ({exc.strerror or exc})") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise AcepilotError(f"{path}: not UTF-8 text (byte {exc.start})") from None


def cursor_position(text: str, line: int, column: int, path: Path) -> tuple[int, int]:
    """1-based (line, column in characters) -> 0-based (line, code-point column), checked.

    Lines end at "\\n", "\\r\\n" or "\\r" (as in the editor); one past the last
    character is the end of the line; the line after a final break exists.
    """
    lines = split_lines(text)
    if line > len(lines):
        raise AcepilotError(
            f"{path}: line {line} is out of range (the file has {len(lines)} lines)"
        )
    content = line_content(lines[line - 1])
    if column > len(content) + 1:
        raise AcepilotError(
            f"{path}: column {column} is out of range on line {line} "
            f"(it has {len(content)} characters; the end of the line is column {len(content) + 1})"
        )
    return line - 1, column - 1


@dataclass(frozen=True, kw_only=True)
class Position:
    """One file and a 0-based (line, code-point column) cursor in it."""

    path: Path
    text: str
    line: int
    column: int


def complete_file(
    *,
    path: Path,
    text: str,
    line: int,
    column: int,
    settings: dict[str, Any],
    root: Path | None = None,
    workspace: Path | None = None,
) -> HeadlessCompletion:
    """The completion at 0-based (line, code-point column) of `text`, as the editor's.

    `settings`: the language server's settings (camelCase, acepilot/server/protocol.py);
    `root`: the workspace folder (default: the file's directory);
    `workspace`: index this folder for cross-file context (it is then also the root).
    """
    position = Position(path=path, text=text, line=line, column=column)
    folder = workspace or root or path.parent
    return asyncio.run(_complete([position], settings, folder, workspace))[0]


def complete_files(
    positions: list[Position], *, settings: dict[str, Any], root: Path
) -> list[HeadlessCompletion]:
    """Each position completed as if it were the only file open in the editor.

    One session (the model loaded once) for all of them: `acepilot demo`'s tour,
    where the time shown is the completion's, not the model's loading.
    """
    return asyncio.run(_complete(positions, settings, root, None))


async def _complete(
    positions: list[Position],
    settings: dict[str, Any],
    root: Path,
    indexed: Path | None,
) -> list[HeadlessCompletion]:
    notifier = Quiet()
    session = Session(notifier)
    folder = root.resolve()
    session.roots = lambda: [str(folder)]
    chosen = {"debounceMs": 0, "timeoutMs": 0, **settings}
    if indexed is None:
        chosen["workspaceContext"] = False
    if not session.apply_settings(chosen, "command line"):
        raise AcepilotError(notifier.errors[-1])
    try:
        if indexed is not None:
            if not indexed.is_dir():
                raise AcepilotError(f"{indexed}: not a directory (--workspace)")
            session.start_workspace()
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, session.workspace.wait, INDEX_WAIT_S)
        session.start_loading()
        await session.backend_ready.wait()
        if session.backend is None:
            raise AcepilotError(session.backend_error or "cannot load the model")
        return [await _complete_one(session, notifier, position) for position in positions]
    finally:
        await session.close()


async def _complete_one(session: Session, notifier: Quiet, at: Position) -> HeadlessCompletion:
    """Open the file, complete at the cursor, close it (no other document stays open)."""
    backend = session.backend
    assert backend is not None
    results: list[Result] = []
    observe = backend.observer

    def keep(result: Result) -> None:
        results.append(result)
        if observe is not None:
            observe(result)

    backend.observer = keep
    uri = at.path.resolve().as_uri()
    session.did_open(uri, language_id(at.path), 1, at.text)
    try:
        document = session.documents.get(uri)
        query = pipeline.Query(
            uri=uri, line=at.line, character=document.to_units(at.line, at.column)
        )
        began = time.perf_counter()
        completion = await pipeline.complete(session, query)
        latency_ms = (time.perf_counter() - began) * 1000
    finally:
        backend.observer = observe
        session.did_close(uri)
    if notifier.errors and completion is None and session.stats.errors:
        raise AcepilotError(notifier.errors[-1].removeprefix("Acepilot: "))
    return HeadlessCompletion(
        text=completion.text if completion else "",
        model=backend.model,
        device=backend.device,
        result=results[-1] if results else None,
        parts=session.last_prompt.parts if session.last_prompt else (),
        prompt_text=session.last_prompt.text if session.last_prompt else "",
        latency_ms=latency_ms,
    )
