"""Typing replay against llama-server's /infill, called as llama.vscode calls it, vs acepilot serve.

Not a test. bench/typing_replay.py's typist (same functions of the standard
library deleted and typed back, same keystroke schedule, a request 50 ms after a
keystroke once typing pauses, the pending one cancelled at the next keystroke)
drives two editors in turn, each against a fresh server on the same core:

- ours: `acepilot serve` over LSP (bench/typing_replay.py's client), the int4
  (or int8) build of a random-weight checkpoint, KV reuse and idle prefill on;
  workspace context and open-tab snippets off, so both prompts hold the file's
  own prefix and suffix only (llama.vscode's extra-context ring is off too);
- llama.cpp: llama-server launched with llama.vscode's completion command
  (`-ub 1024 -b 1024 --ctx-size 0 --cache-reuse 256`) on the GGUF of the same
  checkpoint at the same bit width (Q4_0 for int4, Q8_0 for int8), asked the way
  llama.vscode's completion provider asks (src/completion.ts, src/llama-server.ts
  at ggml-org/llama.vscode 3938fb3): n_prefix lines before the cursor, n_suffix
  lines after it, the cursor line's text before the cursor as `prompt`, its
  default sampling fields and time limits, `cache_prompt`, `id_slot` 0; no request
  while the line has more than `max_line_suffix` characters after the cursor; a
  client-side LRU of results that also answers typing-ahead; and, as llama.vscode
  does, no abort: a cancelled request's HTTP call runs to its end (its answer is
  discarded), and the next request waits for it (polled every 150 ms), giving
  up if a keystroke cancels it meanwhile.

Same threads (`--threads`, llama-server's -t and -tb), same max new tokens,
greedy (top_k 1 in llama.vscode's sampler chain). What differs, by design of
each: llama.vscode's n_cmpl (3 by default) is sent as 1, so both decode one
completion; its speculative "future suggestion" request after each answer is
not sent; the prompt windows are llama-server's (prefix ≤ 3/4 of -b tokens,
suffix ≤ 1/4 minus the line's prompt) and ours (contextTokens, the suffix ≤ 1/4).

    .venv/bin/python bench/infill_replay.py --threads 1                # int4 vs Q4_0, 2 x 120 s
    .venv/bin/python bench/infill_replay.py --pairs int4:Q4_0 int8:Q8_0 --duration 60
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # `bench`

import argparse
import asyncio
import json
import random
import subprocess
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench import peers
from bench import typing_replay as replay

LLAMA_VSCODE_COMMIT = "3938fb3568b98e3ddfcf2ce3dd52d9570552b579"
# llama.vscode's launch command for a completion model (src/constants.ts), less `-hf`
# (a local file here) and `-dt` (deprecated in this llama.cpp).
LAUNCH_FLAGS = ["-ub", "1024", "-b", "1024", "--ctx-size", "0", "--cache-reuse", "256"]
WAIT_POLL_S = 0.150  # llama.vscode's DELAY_BEFORE_COMPL_REQUEST
LRU_CAPACITY = 250  # llama.vscode's lruResultCache


@dataclass(frozen=True)
class VscodeSettings:
    """llama.vscode's completion settings (package.json defaults) that shape a request."""

    n_prefix: int = 256  # lines before the cursor
    n_suffix: int = 64  # lines after the cursor
    n_predict: int = 128
    t_max_prompt_ms: int = 500
    t_max_predict_ms: int = 500
    max_line_suffix: int = 8
    n_cmpl: int = 3  # max_parallel_completions
    top_k: int = 40
    top_p: float = 0.99


@dataclass(frozen=True)
class Infill:
    """One /infill request as llama.vscode builds it, with the parts its LRU key uses."""

    input_prefix: str
    input_suffix: str
    prompt: str
    body: dict[str, Any]

    @property
    def key(self) -> str:
        return f"{self.input_prefix}|{self.input_suffix}|{self.prompt}"


def infill_request(
    lines: list[str],
    line: int,
    column: int,
    settings: VscodeSettings,
    chunks: list[dict[str, str]] | None = None,
) -> Infill | None:
    """The body llama.vscode posts to /infill at (line, column); None where it does not ask.

    Mirrors Completion.getCompletionItems and LlamaServer.createRequestPayload: the
    prefix is whole lines above the cursor, the suffix the rest of the cursor line then
    whole lines below, `prompt` the cursor line up to the cursor ("" when only
    indentation). An automatic trigger with more than `max_line_suffix` characters
    after the cursor sends nothing.
    """
    text = lines[line]
    line_prefix, line_suffix = text[:column], text[column:]
    if len(line_suffix) > settings.max_line_suffix:
        return None
    before = lines[max(0, line - settings.n_prefix) : line]
    last = min(len(lines) - 1, line + settings.n_suffix)
    after = lines[line + 1 : last + 1]
    prompt = "" if line_prefix.strip(" \t") == "" else line_prefix
    input_prefix = "\n".join(before) + "\n"
    input_suffix = line_suffix + "\n" + "\n".join(after) + "\n"
    indent = len(text) - len(text.lstrip())
    body: dict[str, Any] = {
        "id_slot": 0,
        "input_prefix": input_prefix,
        "input_suffix": input_suffix,
        "input_extra": list(chunks or []),
        "prompt": prompt,
        "n_predict": settings.n_predict,
        "n_cmpl": settings.n_cmpl,
        "top_k": settings.top_k,
        "top_p": settings.top_p,
        "stream": False,
        "samplers": ["top_k", "top_p", "infill"],
        "cache_prompt": True,
    }
    if indent:
        body["n_indent"] = indent
    body["t_max_prompt_ms"] = settings.t_max_prompt_ms
    body["t_max_predict_ms"] = settings.t_max_predict_ms
    return Infill(input_prefix, input_suffix, prompt, body)


class ResultCache:
    """llama.vscode's client-side LRU of completions (src/lru-cache.ts, getCachedCompletion).

    Keyed by prefix|suffix|prompt. A miss tries shorter prompts: if the user typed on
    from an earlier request's prompt and a cached completion starts with what was
    typed, the rest of it answers (typing-ahead, without a request).
    """

    def __init__(self, capacity: int = LRU_CAPACITY) -> None:
        self.capacity = capacity
        self.items: OrderedDict[str, list[str]] = OrderedDict()

    def get(self, key: str) -> list[str] | None:
        if key not in self.items:
            return None
        self.items.move_to_end(key)
        return self.items[key]

    def put(self, key: str, value: list[str]) -> None:
        self.items[key] = value
        self.items.move_to_end(key)
        while len(self.items) > self.capacity:
            self.items.popitem(last=False)

    def lookup(self, request: Infill) -> list[str] | None:
        found = self.get(request.key)
        if found is not None:
            return found
        prompt = request.prompt
        for cut in range(len(prompt), -1, -1):
            typed = prompt[cut:]
            earlier = self.get(f"{request.input_prefix}|{request.input_suffix}|{prompt[:cut]}")
            if earlier is None:
                continue
            ahead = [c[len(typed) :] for c in earlier if c and c.startswith(typed)]
            if ahead:
                return ahead
        return None


def suggestion(content: str, line_suffix: str) -> str | None:
    """What llama.vscode keeps of an answer (trailing blank lines dropped, the line's
    suffix not repeated); None where it discards it as empty. Its other discard rules
    compare with the lines below and are not replayed (random weights rarely meet them)."""
    lines = content.split("\n")
    while lines and lines[-1].strip() == "":
        lines.pop()
    if not lines or (len(lines) == 1 and lines[0].strip() == ""):
        return None
    if len(lines) == 1 and lines[0] == line_suffix:
        return None
    if line_suffix.strip():
        if lines[0].endswith(line_suffix):
            return lines[0][: -len(line_suffix)]
        if len(lines) > 1:
            return lines[0]
    return "\n".join(lines)


def apply_edit(lines: list[str], start: tuple[int, int], end: tuple[int, int], text: str) -> None:
    """An LSP-style range replacement on a document held as lines (no line breaks)."""
    (start_line, start_column), (end_line, end_column) = start, end
    joined = lines[start_line][:start_column] + text + lines[end_line][end_column:]
    lines[start_line : end_line + 1] = joined.split("\n")


# ---- the llama.vscode client -----------------------------------------------------------


@dataclass
class InfillMeasures(replay.Measures):
    """The typist's counters plus what only this client sees."""

    posted: int = 0  # HTTP requests that reached llama-server
    skipped_waiting: int = 0  # cancelled while waiting for the previous request to end
    not_asked: int = 0  # more than max_line_suffix characters after the cursor
    client_cache: int = 0  # answered by the client's LRU (typing-ahead included)
    timings: list[dict[str, Any]] = field(default_factory=list)  # llama-server's, per answer


class DocumentMirror:
    """The open documents as lists of lines, kept from the typist's open/edit calls (the
    client side of an editor: llama.vscode reads its windows from them)."""

    def __init__(self) -> None:
        self.documents: dict[str, list[str]] = {}

    def open(self, uri: str, text: str, version: int) -> None:
        self.documents[uri] = text.split("\n")

    def edit(
        self, uri: str, version: int, start: tuple[int, int], end: tuple[int, int], text: str
    ) -> None:
        apply_edit(self.documents[uri], start, end, text)


class LlamaVscode(DocumentMirror):
    """An editor with llama.vscode's completion provider, against one llama-server."""

    def __init__(self, url: str, settings: VscodeSettings) -> None:
        super().__init__()
        self.url = url
        self.settings = settings
        self.http = httpx.AsyncClient(timeout=600)
        self.measures: InfillMeasures = InfillMeasures()
        self.cache = ResultCache()
        self.cancelled: set[str] = set()
        self.in_progress = False
        self.tasks: list[asyncio.Task[Any]] = []
        self._ids = 0

    def request(self, uri: str, line: int, column: int) -> tuple[str, asyncio.Future[Any], float]:
        self._ids += 1
        msg_id = f"infill-{self._ids}"
        sent = time.perf_counter()
        self.measures.sent += 1
        task = asyncio.ensure_future(self._provide(msg_id, uri, line, column, sent))
        self.tasks.append(task)
        return msg_id, task, sent

    def cancel(self, msg_id: str) -> None:
        """VS Code cancels the provider's token; llama.vscode does not abort its HTTP call."""
        self.cancelled.add(msg_id)
        self.measures.cancelled_by_client += 1

    async def _provide(self, msg_id: str, uri: str, line: int, column: int, sent: float) -> None:
        """Completion.getCompletionItems, from after VS Code's debounce."""
        while self.in_progress:
            await asyncio.sleep(WAIT_POLL_S)
            if msg_id in self.cancelled:
                self.measures.skipped_waiting += 1
                return
        self.in_progress = True
        try:
            request = infill_request(self.documents[uri], line, column, self.settings)
            if request is None:
                self.measures.not_asked += 1
                return
            cached = self.cache.lookup(request)
            if cached is not None:
                self.measures.client_cache += 1
                self._answered(msg_id, sent, cached)
                return
            if msg_id in self.cancelled:
                return
            self.measures.posted += 1
            try:
                response = await self.http.post(f"{self.url}/infill", json=request.body)
                response.raise_for_status()
            except httpx.HTTPError as error:
                print(f"llama-server: {error}", file=sys.stderr)
                self.measures.errors += 1
                return
            data = response.json()
            self.measures.timings.append(
                {**data.get("timings", {}), "tokens_cached": data.get("tokens_cached")}
            )
            kept = suggestion(str(data.get("content", "")), self.documents[uri][line][column:])
            if kept is not None:
                # Stored even when the token was cancelled meanwhile, as llama.vscode does.
                self.cache.put(request.key, [kept])
            self._answered(msg_id, sent, [kept] if kept is not None else [])
        finally:
            self.in_progress = False

    def _answered(self, msg_id: str, sent: float, items: list[str]) -> None:
        if msg_id in self.cancelled:
            return  # VS Code dropped the answer
        self.measures.answered.append((time.perf_counter() - sent) * 1000)
        if items:
            self.measures.with_items += 1

    async def close(self) -> None:
        await asyncio.wait_for(asyncio.gather(*self.tasks, return_exceptions=True), 600)
        await self.http.aclose()


def start_llama_server(bin_dir: Path, gguf: Path, threads: int, port: int) -> subprocess.Popen[Any]:
    """llama-server as llama.vscode launches a completion model; waits for /health."""
    server = subprocess.Popen(
        [str(bin_dir / "llama-server"), "-m", str(gguf), *LAUNCH_FLAGS]
        + ["-t", str(threads), "-tb", str(threads), "--port", str(port), "--host", "127.0.0.1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(1200):
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        if server.poll() is not None:
            raise SystemExit(f"llama-server exited with {server.returncode}")
        time.sleep(0.5)
    server.terminate()
    raise SystemExit("llama-server did not become ready")


async def run_llama(
    args: argparse.Namespace, bin_dir: Path, gguf: Path, tasks: list[replay.Task]
) -> dict[str, Any]:
    settings = VscodeSettings(n_predict=args.max_new_tokens, n_cmpl=1, top_k=1)
    print(f"[llama.cpp {gguf.name}] starting llama-server ...", file=sys.stderr, flush=True)
    server = start_llama_server(bin_dir, gguf, args.threads, args.port)
    try:
        editor = LlamaVscode(f"http://127.0.0.1:{args.port}", settings)
        print(f"[llama.cpp] typing for up to {args.duration:.0f} s ...", file=sys.stderr)
        typed_s = await replay.type_session(
            editor, tasks, args.seed, args.duration, 50, args.patient
        )
        await editor.close()
        rss = peers.peak_rss_mb(server.pid)
    finally:
        server.terminate()
        server.wait(30)
    return {"typed_s": typed_s, "measures": editor.measures, "peak_rss_mb": rss}


async def run_ours(
    args: argparse.Namespace, entry: str, tasks: list[replay.Task]
) -> dict[str, Any]:
    options = {
        "backend": "local",
        "registry": str(args.cache / "registry"),
        "model": entry,
        "maxNewTokens": args.max_new_tokens,
        "contextTokens": args.context_tokens,
        "snippetTokens": 0,
        "timeoutMs": 0,
        "debounceMs": 0,  # what the VS Code extension sends: the client debounces
        "threads": args.threads,
    }
    bench_args = argparse.Namespace(
        duration=args.duration,
        debounce_ms=50,
        overhead_requests=0,
        details=False,
        seed=args.seed,
        patient=args.patient,
    )
    result: dict[str, Any] = await replay.run_mode(bench_args, "nocontext", tasks, options)
    return result


# ---- the table --------------------------------------------------------------------------


UNFINISHED = ("cancelled", "deadline")


def mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def summary_llama(result: dict[str, Any]) -> dict[str, float]:
    measures: InfillMeasures = result["measures"]
    timings = measures.timings
    return {
        "sent": measures.sent,
        "reached": measures.posted,
        "generations": len(timings),
        "answered": len(measures.answered),
        "with_items": measures.with_items,
        "cancelled": measures.cancelled_by_client,
        "p50": replay.percentile(measures.answered, 0.5),
        "p95": replay.percentile(measures.answered, 0.95),
        "prompt": mean([t.get("prompt_n", 0) + t.get("cache_n", 0) for t in timings]),
        "prefilled": mean([t.get("prompt_n", 0) for t in timings]),
        "generated": mean([t.get("predicted_n", 0) for t in timings]),
        "prefill_ms": replay.percentile([t.get("prompt_ms", 0.0) for t in timings], 0.5),
        "peak_rss_mb": result["peak_rss_mb"],
    }


def summary_ours(result: dict[str, Any]) -> dict[str, float]:
    measures: replay.Measures = result["measures"]
    stats = result["stats"]
    count = stats["generations"]
    generations = stats["recent_generations"]

    def per(key: str) -> float:
        return float(stats[key] / count) if count else float("nan")

    return {
        "sent": measures.sent,
        "reached": stats["model_requests"],
        "generations": count,
        "answered": len(measures.answered),
        "with_items": measures.with_items,
        "cancelled": measures.cancelled_by_client,
        "p50": replay.percentile(measures.answered, 0.5),
        "p95": replay.percentile(measures.answered, 0.95),
        "prompt": per("prompt_tokens"),
        "prefilled": per("prefilled_tokens"),
        "generated": per("generated_tokens"),
        # A generation cancelled mid-prefill timed only the chunks it fed: not comparable.
        "prefill_ms": replay.percentile(
            [g["prefill_ms"] for g in generations if g["finish_reason"] not in UNFINISHED], 0.5
        ),
        "peak_rss_mb": float("nan"),
    }


ROWS = (
    ("completion requests (editor -> provider)", "sent", "{:.0f}"),
    ("requests that reached the server's model path", "reached", "{:.0f}"),
    ("generations run (prefill started)", "generations", "{:.0f}"),
    ("answered before the next keystroke", "answered", "{:.0f}"),
    ("... with a completion shown", "with_items", "{:.0f}"),
    ("cancelled by the next keystroke", "cancelled", "{:.0f}"),
    ("latency p50 ms, answered (request -> answer)", "p50", "{:.0f}"),
    ("latency p95 ms, answered", "p95", "{:.0f}"),
    ("prompt tokens per generation (mean)", "prompt", "{:.0f}"),
    ("tokens to prefill per generation (prompt - reused; mean)", "prefilled", "{:.1f}"),
    ("tokens generated per generation (mean)", "generated", "{:.1f}"),
    ("prefill ms per finished prefill (median)", "prefill_ms", "{:.0f}"),
)


def table(pair: tuple[str, str], theirs: dict[str, float], ours: dict[str, float]) -> str:
    precision, gguf_type = pair
    lines = [
        f"| | llama-server {gguf_type} (llama.vscode client) | acepilot serve {precision} "
        "| llama.cpp / ours |",
        "|---|---|---|---|",
    ]
    for label, key, fmt in ROWS:
        a, b = theirs[key], ours[key]
        cells = ["-" if v != v else fmt.format(v) for v in (a, b)]  # NaN: none
        ratio = f"{a / b:.2f}" if a == a and b == b and b else "-"
        lines.append(f"| {label} | {cells[0]} | {cells[1]} | {ratio} |")
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> int:
    bin_dir = peers.ensure_llama_cpp(args.cache)
    checkpoint = peers.ensure_checkpoint(args.cache, args.model)
    tasks = replay.pick_tasks(args.files, args.per_file, random.Random(args.seed))
    load = f"{os.getloadavg()[0]:.2f}"
    outputs = []
    for pair in args.pairs:
        precision, gguf_type = pair
        entry = peers.ensure_ours(args.cache, checkpoint, args.model, precision)
        gguf = peers.ensure_gguf(args.cache, bin_dir, checkpoint, args.model, gguf_type)
        ours = summary_ours(await run_ours(args, entry.parent.name, tasks))
        theirs_result = await run_llama(args, bin_dir, gguf, tasks)
        theirs = summary_llama(theirs_result)
        measures: InfillMeasures = theirs_result["measures"]
        outputs.append(
            table(pair, theirs, ours)
            + f"\n\nllama.vscode client: {measures.skipped_waiting} requests given up while "
            f"waiting for the previous one, {measures.not_asked} not asked (line suffix), "
            f"{measures.client_cache} answered by its LRU; llama-server peak RSS "
            f"{theirs['peak_rss_mb']:.0f} MB; errors {measures.errors}."
        )
        print(json.dumps({"pair": pair, "llama": theirs, "ours": ours}), file=sys.stderr)
    print(
        f"Model: {args.model} shapes (random weights), {args.threads} thread(s) each, "
        f"max new tokens {args.max_new_tokens}, {len(tasks)} functions typed back, up to "
        f"{args.duration:.0f} s per server, seed {args.seed}, load average {load} at start, "
        f"{os.getloadavg()[0]:.2f} at end ({os.cpu_count()} cores)\n"
    )
    print("\n\n".join(outputs))
    return 0


def pair(text: str) -> tuple[str, str]:
    precision, _, gguf_type = text.partition(":")
    if precision not in ("int4", "int8") or gguf_type not in peers.GGUF_TYPES:
        raise argparse.ArgumentTypeError(f"expected e.g. int4:Q4_0 or int8:Q8_0, got {text!r}")
    return precision, gguf_type


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="qwen2.5-coder-0.5b", choices=peers.MODELS)
    parser.add_argument(
        "--pairs", nargs="+", type=pair, default=[("int4", "Q4_0")], help="ours:GGUF (int4:Q4_0)"
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--duration", type=float, default=120, help="seconds of typing per server")
    parser.add_argument("--files", type=int, default=3)
    parser.add_argument("--per-file", type=int, default=3)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--context-tokens", type=int, default=1024, help="ours' contextTokens")
    parser.add_argument(
        "--patient",
        type=float,
        metavar="SECONDS",
        help="the typist waits for the answer at every pause of at least SECONDS "
        "(where neither server answers between keystrokes); use with a long --duration",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--port", type=int, default=18090)
    parser.add_argument("--cache", type=Path, default=peers.DEFAULT_CACHE)
    return asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
