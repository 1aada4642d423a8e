"""Typing replay benchmark (not a test): the real language server over stdio, a human typist.

Why one module over 600 lines: a benchmark is one script a user runs as
`python bench/typing_replay.py`; the typist, the LSP client and the report
share one command line (bench/fim_order.py and bench/infill_replay.py reuse
its parts by import).

What it does, per mode (one fresh `acepilot serve` process each, driven by
pygls' LanguageClient over stdio; the workspace folder is the standard
library, indexed before the typing starts):

   reuse      KV reuse on, workspace context on, idle prefill on (the defaults)
   noreuse    KV reuse off (every prompt prefilled in full)
   nocontext  KV reuse on, workspace context off (today's prompt before issue 17)
   noidle     KV reuse on, workspace context on, idle prefill off

1. Takes real source files (modules of this Python's standard library), picks
   functions with a short ASCII body, opens each file, deletes a function's
   body and types it back character by character: 60-120 ms per character,
   Enter inserts the next line's indentation as editors do, a pause of
   0.4-1.2 s after each line and of 0.3-0.8 s after some words.
2. Asks for an inline completion the way VS Code does: after each keystroke
   the pending request is cancelled ($/cancelRequest) and a new one is sent
   once typing pauses for the debounce (VS Code's 50 ms). The schedule of keystrokes is
   fixed by the seed, so both modes type the same thing at the same times (the
   `--duration` cut may fall a few keys apart); responses never slow the
   typist down.
3. Reads `acepilot/stats` from the server: requests answered by typing-ahead,
   by the LRU cache, by the model; prompt tokens prefilled and reused.

Then (the reuse and nocontext servers) the server's own overhead: all time in the request
handler except waiting (debounce) and the backend, p50 over requests at the
middle of a 5,000-line document.

The model: the 350M-shape int4 CodeGen built by bench/engine.py (random
weights with the real shapes: speed does not depend on weight values, but the
completions are noise, so typing-ahead — the user typing what was shown —
hardly ever happens here, and a single line never stops before max tokens).

    .venv/bin/python bench/typing_replay.py                       # ~8 min: 2 x 120 s of typing + loads + overhead
    .venv/bin/python bench/typing_replay.py --duration 60 --files 2
    .venv/bin/python bench/typing_replay.py --modes reuse --duration 30
    .venv/bin/python bench/typing_replay.py --modes reuse nocontext noidle  # context's cost

Needs the `build` extra the first time (bench/engine.py builds the model into
~/.cache/acepilot-bench); no network.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # `bench`

import argparse
import ast
import asyncio
import random
import statistics
import sysconfig
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from lsprotocol import types
from pygls.lsp.client import LanguageClient

from acepilot.server.protocol import STATS, STATUS
from bench.engine import DEFAULT_CACHE, ensure_artifact, ensure_checkpoint

OVERHEAD_LINES = 5000
MODES: dict[str, dict[str, Any]] = {
    "reuse": {"kvReuse": True},
    "noreuse": {"kvReuse": False},
    "nocontext": {"kvReuse": True, "workspaceContext": False},
    "noidle": {"kvReuse": True, "idlePrefillMs": 0},
}
TITLES = {
    "reuse": "KV reuse on (context, idle prefill)",
    "noreuse": "KV reuse off",
    "nocontext": "no workspace context",
    "noidle": "context, no idle prefill",
}


# ---- the typing session --------------------------------------------------------


@dataclass(frozen=True)
class Key:
    """One keystroke: insert `text` at (line, column), `gap` seconds after the previous one."""

    line: int
    column: int
    text: str
    gap: float


@dataclass
class Task:
    """A function whose body is deleted, then typed back."""

    path: Path
    name: str
    head_end: tuple[int, int]  # end of the def's last line (the body starts after it)
    body_end: tuple[int, int]  # end of the body's last line
    body: str  # the deleted text, starting with "\n"


def pick_tasks(files: int, per_file: int, rng: random.Random) -> list[Task]:
    """Functions with a 3-12 line ASCII body from standard-library modules of 200-3000 lines."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    candidates = sorted(stdlib.glob("*.py"))
    rng.shuffle(candidates)
    tasks: list[Task] = []
    for path in candidates:
        try:
            text = path.read_text(encoding="utf-8")
            tree = ast.parse(text)
        except (UnicodeDecodeError, SyntaxError, OSError):
            continue
        lines = text.split("\n")
        if not 200 <= len(lines) <= 3000 or "\r" in text:
            continue
        found = []
        for node in ast.walk(tree):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            first, last = node.body[0].lineno - 1, (node.end_lineno or 0) - 1
            if node.body[0].lineno == node.lineno or not 3 <= last - first + 1 <= 12:
                continue
            body_lines = lines[first : last + 1]
            body = "\n".join(body_lines)
            if not body.isascii() or len(body) > 450 or "\t" in body:
                continue
            head = first - 1
            found.append(
                Task(
                    path,
                    node.name,
                    (head, len(lines[head])),
                    (last, len(lines[last])),
                    "\n" + body,
                )
            )
        if len(found) >= per_file:
            rng.shuffle(found)
            chosen = sorted(found[:per_file], key=lambda task: -task.head_end[0])
            tasks.extend(chosen)  # bottom-up: typing one does not move the next
            if len({task.path for task in tasks}) >= files:
                break
    return tasks


def keystrokes(task: Task, rng: random.Random) -> list[Key]:
    """Type `task.body` back at a human rate (see the module docstring)."""
    keys: list[Key] = []
    line, column = task.head_end
    body = task.body
    index = 0
    gap = 0.8  # looking at the function before starting
    while index < len(body):
        char = body[index]
        if char == "\n":
            rest = body[index + 1 :]
            indent = rest[: len(rest) - len(rest.lstrip(" "))]
            keys.append(Key(line, column, "\n" + indent, gap))
            line, column = line + 1, len(indent)
            index += 1 + len(indent)
            gap = rng.uniform(0.4, 1.2)  # a new line: think
            continue
        keys.append(Key(line, column, char, gap))
        column += 1
        index += 1
        gap = rng.uniform(0.06, 0.12)
        if char in " (.," and rng.random() < 0.15:
            gap += rng.uniform(0.3, 0.8)
    return keys


# ---- the client ------------------------------------------------------------------


@dataclass
class Measures:
    sent: int = 0
    answered: list[float] = field(default_factory=list)  # ms, request -> response
    with_items: int = 0
    cancelled_by_client: int = 0
    errors: int = 0
    typed: int = 0


class Bench:
    """One server process and the typing replay against it."""

    def __init__(self, args: argparse.Namespace, options: dict[str, Any]) -> None:
        self.args = args
        self.options = options
        self.client = LanguageClient("acepilot-bench", "1")
        self.ready = asyncio.Event()
        self.failed: str | None = None
        self.measures = Measures()
        self._ids = 0

        @self.client.feature(STATUS)
        def on_status(params: Any) -> None:
            state = getattr(params, "state", None)
            if state == "ready":
                self.ready.set()
            elif state == "error":
                self.failed = str(getattr(params, "message", "error"))
                self.ready.set()

        @self.client.feature(types.WINDOW_SHOW_MESSAGE)
        def on_message(params: types.ShowMessageParams) -> None:
            print(f"server: {params.message}", file=sys.stderr)

        @self.client.feature(types.WINDOW_LOG_MESSAGE)
        def on_log(params: types.LogMessageParams) -> None:
            pass

    async def start(self) -> None:
        env = {**os.environ}
        env.pop("ACEPILOT_MODEL", None)
        await self.client.start_io(sys.executable, "-m", "acepilot.server.cli", "serve", env=env)
        root = Path(sysconfig.get_paths()["stdlib"])
        await self.client.initialize_async(
            types.InitializeParams(
                capabilities=types.ClientCapabilities(
                    general=types.GeneralClientCapabilities(
                        position_encodings=[types.PositionEncodingKind.Utf16]
                    )
                ),
                initialization_options=self.options,
                root_uri=root.as_uri(),
                workspace_folders=[types.WorkspaceFolder(uri=root.as_uri(), name="stdlib")],
            )
        )
        self.client.initialized(types.InitializedParams())
        await asyncio.wait_for(self.ready.wait(), 600)
        if self.failed:
            raise SystemExit(f"the server could not load the model: {self.failed}")
        while (await self.stats())["workspace"]["indexing"]:  # the user opened it a while ago
            await asyncio.sleep(0.5)

    async def stop(self) -> None:
        try:
            await asyncio.wait_for(self.client.shutdown_async(None), 30)
            self.client.exit(None)
        finally:
            await self.client.stop()

    async def stats(self, reset: bool = False) -> dict[str, Any]:
        result = await self.client.protocol.send_request_async(
            STATS, {"reset": True} if reset else {}
        )
        return plain(result)

    def open(self, uri: str, text: str, version: int) -> None:
        self.client.text_document_did_open(
            types.DidOpenTextDocumentParams(types.TextDocumentItem(uri, "python", version, text))
        )

    def edit(
        self, uri: str, version: int, start: tuple[int, int], end: tuple[int, int], text: str
    ) -> None:
        self.client.text_document_did_change(
            types.DidChangeTextDocumentParams(
                text_document=types.VersionedTextDocumentIdentifier(version=version, uri=uri),
                content_changes=[
                    types.TextDocumentContentChangePartial(
                        range=types.Range(types.Position(*start), types.Position(*end)), text=text
                    )
                ],
            )
        )

    def request(self, uri: str, line: int, column: int) -> tuple[str, asyncio.Future[Any], float]:
        self._ids += 1
        msg_id = f"bench-{self._ids}"
        params = types.InlineCompletionParams(
            context=types.InlineCompletionContext(
                trigger_kind=types.InlineCompletionTriggerKind.Automatic
            ),
            text_document=types.TextDocumentIdentifier(uri),
            position=types.Position(line, column),
        )
        sent = time.perf_counter()
        future = asyncio.wrap_future(
            self.client.protocol.send_request(
                types.TEXT_DOCUMENT_INLINE_COMPLETION, params, msg_id=msg_id
            )
        )
        self.measures.sent += 1
        future.add_done_callback(lambda done: self._answered(done, sent))
        return msg_id, future, sent

    def _answered(self, future: asyncio.Future[Any], sent: float) -> None:
        if future.cancelled():
            return
        if future.exception() is not None:
            # Cancelled by us ($/cancelRequest) answers with an error: counted there.
            if "cancel" not in str(future.exception()).lower():
                self.measures.errors += 1
            return
        self.measures.answered.append((time.perf_counter() - sent) * 1000)
        result = future.result()
        items = getattr(result, "items", result) or []
        if items:
            self.measures.with_items += 1

    def cancel(self, msg_id: str) -> None:
        self.client.protocol.notify(types.CANCEL_REQUEST, types.CancelParams(id=msg_id))
        self.measures.cancelled_by_client += 1

    async def type_session(self, tasks: list[Task], seed: int) -> float:
        """Replay the tasks until `--duration` seconds have passed; returns seconds typed."""
        patient = getattr(self.args, "patient", None)  # bench/fim_order.py's args have none
        return await type_session(
            self, tasks, seed, self.args.duration, self.args.debounce_ms, patient
        )

    async def overhead(self, requests: int) -> dict[str, Any]:
        """Server overhead at the middle of a 5,000-line document (one model token each)."""
        self.measures = Measures()  # the typing session's own are kept by the caller
        text = big_document()
        uri = (Path(sysconfig.get_paths()["stdlib"]) / "acepilot_bench_5000.py").as_uri()
        self.open(uri, text, 1)
        self.client.workspace_did_change_configuration(
            types.DidChangeConfigurationParams(settings={"acepilot": {"maxNewTokens": 1}})
        )
        await self.stats(reset=True)
        lines = text.split("\n")
        line = OVERHEAD_LINES // 2
        while lines[line].strip() == "" or not lines[line].isascii():
            line += 1
        column = len(lines[line])
        version = 1
        for index in range(requests):
            version += 1
            char = "abcdefghij"[index % 10]
            self.edit(uri, version, (line, column), (line, column), char)
            column += 1
            await asyncio.sleep(0.05)
            _, future, _ = self.request(uri, line, column)
            await asyncio.wait_for(future, 120)
        return await self.stats()


class Editor(Protocol):
    """What the typist drives: an editor's view of a completion backend.

    Bench (the language server over LSP) and bench/infill_replay.py's llama.vscode
    client (llama-server's /infill over HTTP) both implement it, so both get the same
    keystrokes at the same times.
    """

    @property
    def measures(self) -> Measures: ...

    def open(self, uri: str, text: str, version: int) -> None: ...

    def edit(
        self, uri: str, version: int, start: tuple[int, int], end: tuple[int, int], text: str
    ) -> None: ...

    def request(
        self, uri: str, line: int, column: int
    ) -> tuple[str, asyncio.Future[Any], float]: ...

    def cancel(self, msg_id: str) -> None: ...


async def type_session(
    editor: Editor,
    tasks: list[Task],
    seed: int,
    duration: float,
    debounce_ms: int,
    patient_s: float | None = None,
) -> float:
    """Replay the tasks until `duration` seconds have passed; returns seconds typed.

    `patient_s`: at every pause of at least that many seconds the typist reads the
    completion: it waits for the answer (at most 60 s) before the pause starts. Where
    no backend answers between keystrokes, this still measures what one costs while
    the document and the caches are in the state typing left them (bench/infill_replay.py).
    """
    rng = random.Random(seed)
    debounce = debounce_ms / 1000
    started = time.monotonic()
    versions: dict[str, int] = {}
    pending: tuple[str, asyncio.Future[Any], float] | None = None
    for task in tasks:
        uri = task.path.as_uri()
        if uri not in versions:
            versions[uri] = 1
            editor.open(uri, task.path.read_text(encoding="utf-8"), 1)
        versions[uri] += 1
        editor.edit(uri, versions[uri], task.head_end, task.body_end, "")  # delete the body
        keys = keystrokes(task, rng)
        for index, key in enumerate(keys):
            if time.monotonic() - started > duration:
                break
            await asyncio.sleep(key.gap if index else 0.3)
            if pending is not None and not pending[1].done():
                editor.cancel(pending[0])
            pending = None
            versions[uri] += 1
            editor.edit(
                uri, versions[uri], (key.line, key.column), (key.line, key.column), key.text
            )
            editor.measures.typed += 1
            following = keys[index + 1].gap if index + 1 < len(keys) else 2.0
            if following > debounce:
                # VS Code asks once typing pauses for its debounce.
                await asyncio.sleep(debounce)
                last = key.text.split("\n")
                line = key.line + len(last) - 1
                column = (key.column if len(last) == 1 else 0) + len(last[-1])
                pending = editor.request(uri, line, column)
                if patient_s is not None and following >= patient_s:
                    await asyncio.wait({pending[1]}, timeout=60)
        else:
            await asyncio.sleep(1.5)  # the function is done: a last look
            continue
        break
    if pending is not None and not pending[1].done():
        editor.cancel(pending[0])
    await asyncio.sleep(0.5)
    return time.monotonic() - started


def big_document() -> str:
    """About 5,000 lines of standard-library code (whole modules, concatenated)."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    parts: list[str] = []
    count = 0
    for path in sorted(stdlib.glob("*.py")):
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        parts.append(text)
        count += text.count("\n")
        if count >= OVERHEAD_LINES:
            break
    return "\n".join("".join(parts).split("\n")[:OVERHEAD_LINES]) + "\n"


def plain(value: Any) -> Any:
    if hasattr(value, "_asdict"):
        return {key: plain(item) for key, item in value._asdict().items()}
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    return value


# ---- driver -----------------------------------------------------------------------


def percentile(values: list[float], share: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[max(1, -(-int(share * len(ordered) * 1000) // 1000)) - 1]


async def run_mode(
    args: argparse.Namespace, mode: str, tasks: list[Task], options: dict[str, Any]
) -> dict[str, Any]:
    bench = Bench(args, {**options, **MODES[mode]})
    print(f"[{mode}] starting the server and loading the model ...", file=sys.stderr, flush=True)
    await bench.start()
    try:
        print(f"[{mode}] typing for up to {args.duration:.0f} s ...", file=sys.stderr, flush=True)
        typed_s = await bench.type_session(tasks, args.seed)
        stats = await bench.stats()
        result: dict[str, Any] = {"mode": mode, "typed_s": typed_s, "measures": bench.measures}
        result["stats"] = stats
        if args.details:
            for record in stats["recent_generations"]:
                print(f"[{mode}] generation {record}", file=sys.stderr)
        if mode in ("reuse", "nocontext") and args.overhead_requests:
            print(f"[{mode}] overhead on a {OVERHEAD_LINES}-line document ...", file=sys.stderr)
            result["overhead"] = await bench.overhead(args.overhead_requests)
    finally:
        await bench.stop()
    return result


def row(name: str, values: list[str]) -> str:
    return f"| {name} | " + " | ".join(values) + " |"


def report(results: list[dict[str, Any]], args: argparse.Namespace, tasks: list[Task]) -> str:
    def per_model(stats: dict[str, Any], key: str) -> float:
        count = stats["generations"]
        return stats[key] / count if count else float("nan")

    columns: list[dict[str, Any]] = []
    for result in results:
        measures: Measures = result["measures"]
        stats: dict[str, Any] = result["stats"]
        generations = stats["recent_generations"]
        # Random weights end a line (newline, EOS) at random: the answers that decoded all
        # of maxNewTokens are the slowest kind, and what a goal must hold for.
        model_answers = [r for r in stats["recent_requests"] if r["source"] == "model"]
        full = [r["total_ms"] for r in model_answers if r["finish_reason"] == "length"]
        early = [r["total_ms"] for r in model_answers if r["finish_reason"] in ("stop", "eos")]
        columns.append(
            {
                "typed": f"{measures.typed} keys in {result['typed_s']:.0f} s",
                "sent": measures.sent,
                "answered": len(measures.answered),
                "with_items": measures.with_items,
                "cancelled": measures.cancelled_by_client,
                "p50": percentile(measures.answered, 0.5),
                "p95": percentile(measures.answered, 0.95),
                "full": len(full),
                "full_p50": percentile(full, 0.5),
                "full_p95": percentile(full, 0.95),
                "early": len(early),
                "early_p50": percentile(early, 0.5),
                "server_requests": stats["requests"],
                "typing_ahead": stats["typing_ahead"],
                "cache": stats["cache_hits"],
                "model": stats["model_requests"],
                "generations": stats["generations"],
                "errors": stats["errors"] + measures.errors,
                "prompt": per_model(stats, "prompt_tokens"),
                "prefilled": per_model(stats, "prefilled_tokens"),
                "reused": per_model(stats, "reused_tokens"),
                "generated": per_model(stats, "generated_tokens"),
                "idle_runs": stats.get("idle_prefill", {}).get("runs", 0),
                "idle_tokens": stats.get("idle_prefill", {}).get("prefilled_tokens", 0),
                "context_tokens": stats["workspace"]["last_tokens"],
                "prefill_ms": statistics.median([g["prefill_ms"] for g in generations])
                if generations
                else float("nan"),
            }
        )
    names = [TITLES[result["mode"]] for result in results]
    header = "| | " + " | ".join(names) + (" | first / second |" if len(results) == 2 else " |")
    lines = [
        f"Model: {args.model_name}, maxNewTokens {args.max_new_tokens}, "
        f"contextTokens {args.context_tokens}, client debounce {args.debounce_ms} ms, "
        f"server debounce {args.server_debounce_ms} ms, "
        f"{len(tasks)} functions from {len({t.path for t in tasks})} stdlib files, seed {args.seed}",
        f"Load average at start {args.load_start}, at end {os.getloadavg()[0]:.2f} "
        f"({os.cpu_count()} cores)",
        "",
        header,
        "|---" * (len(results) + 1 + (len(results) == 2)) + "|",
    ]
    specs = [
        ("typed", "typed", None),
        ("requests sent (client)", "sent", None),
        ("answered (not cancelled by the client)", "answered", None),
        ("answered with a completion", "with_items", None),
        ("cancelled by the client (typed on)", "cancelled", None),
        ("latency p50 ms (request -> response)", "p50", "{:.0f}"),
        ("latency p95 ms", "p95", "{:.0f}"),
        ("server: model answers that decoded all maxNewTokens", "full", None),
        ("... their latency p50 ms (server side)", "full_p50", "{:.0f}"),
        ("... their latency p95 ms (server side)", "full_p95", "{:.0f}"),
        ("server: model answers ended early (newline, EOS)", "early", None),
        ("... their latency p50 ms (server side)", "early_p50", "{:.0f}"),
        ("server: requests", "server_requests", None),
        ("server: answered by typing-ahead", "typing_ahead", None),
        ("server: answered by the LRU cache", "cache", None),
        ("server: reached the model", "model", None),
        ("server: model generations run", "generations", None),
        ("errors", "errors", None),
        ("prompt tokens per generation (mean)", "prompt", "{:.0f}"),
        ("tokens prefilled per generation (mean)", "prefilled", "{:.1f}"),
        ("tokens reused from the KV cache (mean)", "reused", "{:.0f}"),
        ("tokens generated per generation (mean)", "generated", "{:.1f}"),
        ("prefill ms per generation (median)", "prefill_ms", "{:.0f}"),
        ("idle prefills run", "idle_runs", None),
        ("tokens fed by idle prefills", "idle_tokens", None),
        ("workspace context tokens in the last prompt", "context_tokens", None),
    ]
    for title, key, fmt in specs:
        values = [
            "-" if c[key] != c[key] else fmt.format(c[key]) if fmt else str(c[key])  # NaN: none
            for c in columns
        ]
        if len(columns) == 2:
            a, b = columns[0][key], columns[1][key]
            numbers = isinstance(a, int | float) and isinstance(b, int | float)
            ratio = f"{a / b:.2f}x" if numbers and b and a == a and b == b else "-"
            values.append(ratio)
        lines.append(row(title, values))
    for result in results:
        if "overhead" in result:
            overhead = result["overhead"]["overhead"]
            latency = result["overhead"]["latency"]
            lines += [
                "",
                f"[{TITLES[result['mode']]}] "
                f"Server overhead on a {OVERHEAD_LINES}-line document (time in the request "
                "handler minus debounce and backend, one model token per request, "
                f"n={overhead['count']}): p50 {overhead['p50_ms']} ms, p95 {overhead['p95_ms']} ms; "
                f"whole request p50 {latency['p50_ms']} ms.",
            ]
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> int:
    cache: Path = args.cache
    cache.mkdir(parents=True, exist_ok=True)
    registry = args.registry
    if args.model:
        args.model_name = args.model
    else:
        print(f"[model] the 350M-shape {args.precision} model (bench/engine.py builds it once)")
        checkpoint = ensure_checkpoint(cache, "350M")
        ensure_artifact(cache, checkpoint, "350M", args.precision)
        args.model_name = f"bench-350M-{args.precision}"
        registry = cache / "registry"
    options = {
        "backend": "local",
        "registry": str(registry),
        "model": args.model_name,
        "maxNewTokens": args.max_new_tokens,
        "contextTokens": args.context_tokens,
        "snippetTokens": min(256, args.context_tokens // 4),
        "timeoutMs": 0,
        "debounceMs": args.server_debounce_ms,
    }
    if args.threads:
        options["threads"] = args.threads
    tasks = pick_tasks(args.files, args.per_file, random.Random(args.seed))
    if not tasks:
        raise SystemExit("no suitable functions found in the standard library")
    args.load_start = f"{os.getloadavg()[0]:.2f}"
    results = [await run_mode(args, mode, tasks, options) for mode in args.modes]
    print(report(results, args, tasks))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--duration", type=float, default=120, help="seconds of typing per mode (default 120)"
    )
    parser.add_argument(
        "--files", type=int, default=3, help="standard-library files to type in (default 3)"
    )
    parser.add_argument("--per-file", type=int, default=3, help="functions per file (default 3)")
    parser.add_argument(
        "--modes",
        nargs="+",
        default=["reuse", "noreuse"],
        choices=list(MODES),
        help="reuse (defaults), noreuse (KV reuse off), nocontext (workspace context off), "
        "noidle (idle prefill off); default: reuse noreuse",
    )
    parser.add_argument(
        "--debounce-ms",
        type=int,
        default=50,
        help="client debounce: VS Code asks after typing pauses this long (its own: 50)",
    )
    parser.add_argument(
        "--server-debounce-ms",
        type=int,
        default=0,
        help="the server's debounceMs setting (0: what the VS Code extension sends; "
        "the server's own default for other editors is 40)",
    )
    parser.add_argument("--max-new-tokens", type=int, default=16, help="server maxNewTokens (16)")
    parser.add_argument(
        "--context-tokens", type=int, default=1024, help="server contextTokens (1024)"
    )
    parser.add_argument("--precision", default="int4", choices=["int4", "int8", "fp32"])
    parser.add_argument(
        "--model", help="another registry model instead (a smoke test with a tiny one)"
    )
    parser.add_argument("--registry", type=Path, help="the registry of --model")
    parser.add_argument("--threads", type=int, help="onnxruntime threads (default: all cores)")
    parser.add_argument(
        "--overhead-requests",
        type=int,
        default=40,
        help=f"requests for the overhead measure on a {OVERHEAD_LINES}-line document (0: skip)",
    )
    parser.add_argument(
        "--patient",
        type=float,
        metavar="SECONDS",
        help="wait for the answer at every pause of at least SECONDS (see type_session)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--details", action="store_true", help="print every model generation to stderr"
    )
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    args = parser.parse_args()
    if bool(args.model) != bool(args.registry):
        parser.error("--model and --registry go together")
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
