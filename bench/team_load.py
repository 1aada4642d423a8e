"""Team-server load benchmark (not a test): simulated developers typing against one server.

Why one file over 600 lines: a benchmark script a reader runs and reads alone — the load,
the attack measurement and the graph's own scaling that the results are judged against —
kept in one file like the other bench/ scripts.

Each simulated developer replays a typing session on a real source file: the
prompt is the file from a fixed start up to the cursor, the cursor advances a
few characters per keystroke burst, one completion request is sent (and
awaited) per burst, then the developer pauses. For each developer count the
load runs for a fixed duration against a real `acepilot team-server` process,
once with batching on (--max-batch = the largest count) and once with it off
(--max-batch 1); both keep per-user KV reuse, so the ratio isolates batching.

Reported per (mode, developers): completed requests/s, latency p50/p95/p99,
completion tokens/s, mean decode batch size (from the server's /metrics),
errors (non-200 answers and transport failures); then ratios batched/unbatched.
The model is the 350M-shape int4 CodeGen with random weights that
bench/engine.py builds and caches (speed does not depend on weight values).

    .venv/bin/python bench/team_load.py                        # 1 4 16 32 devs, 60 s each
    .venv/bin/python bench/team_load.py --devs 16 --duration 30 --markdown out.md

`--attack` measures instead what one token's expensive prompts do to everyone
else (issue 13): `--attack-count` concurrent prompts of `--attack-chars`
characters from one token while /healthz is probed every 50 ms and another
token sends small completions, against the same probes on the idle server.
Reported: probe and completion latency (idle and under attack), the
attacker's statuses, the server's peak resident memory growth.
`--registry DIR --model NAME` serve an existing registry entry instead of the
350M build (any model: the attack is on the tokenizer and the event loop).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx

from bench.engine import DEFAULT_CACHE, ensure_artifact, ensure_checkpoint

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Developer:
    """One simulated developer: a file, a fixed prompt start, a cursor that moves on."""

    name: str
    token: str
    text: str
    start: int
    cursor: int
    rng: random.Random

    def next_prompt(self) -> str:
        self.cursor += self.rng.randint(2, 8)  # a burst of keystrokes
        if self.cursor >= len(self.text):
            self.cursor = self.start + 200
        return self.text[self.start : self.cursor]


@dataclass
class Round:
    mode: str
    devs: int
    duration: float
    latencies: list[float] = field(default_factory=list)
    tokens: int = 0
    errors: int = 0
    error_kinds: dict[str, int] = field(default_factory=dict)
    batch_mean: float = 0.0

    def row(self) -> dict[str, float]:
        ordered = sorted(self.latencies)

        def pct(p: float) -> float:
            if not ordered:
                return float("nan")
            return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]

        return {
            "rps": len(ordered) / self.duration,
            "p50": pct(50),
            "p95": pct(95),
            "p99": pct(99),
            "tps": self.tokens / self.duration,
            "batch": self.batch_mean,
            "errors": float(self.errors),
            "requests": float(len(ordered)),
        }


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def source_texts() -> list[str]:
    """Real Python files to type: the standard library sample the tiny models train on."""
    from acepilot.training.tiny.sample import code_sample_files

    texts = []
    for path in code_sample_files().train:
        text = Path(path).read_text(errors="replace")
        if len(text) > 6000:
            texts.append(text)
    return texts


def metric_values(text: str) -> dict[str, float]:
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            values[key] = float(value)
    return values


class Server:
    """A team-server process on loopback with its own token database."""

    def __init__(
        self, registry: Path, model: str, max_batch: int, args: argparse.Namespace
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.dir = Path(tempfile.mkdtemp(prefix="team-load-"))
        self.db = self.dir / "tokens.sqlite3"
        command = [
            sys.executable, "-m", "acepilot.server.cli", "team-server",
            "--registry", str(registry), "--model", model, "--tokens-db", str(self.db),
            "--port", str(self.port), "--max-batch", str(max_batch),
            "--kv-memory", args.kv_memory, "--max-queue", "1024", "--deadline", "600",
            "--rate", "1000", "--burst", "1000", "--max-tokens", str(args.max_tokens),
        ]  # fmt: skip
        if args.threads:
            command += ["--threads", str(args.threads)]
        self.log = (self.dir / "server.log").open("wb")
        self.process = subprocess.Popen(
            command, stdout=self.log, stderr=subprocess.STDOUT, cwd=ROOT
        )

    def tokens(self, count: int) -> list[str]:
        from acepilot.server.team.tokens import TokenStore

        store = TokenStore(self.db)
        return [store.create(f"dev-{i}") for i in range(count)]

    def wait_ready(self, timeout: float = 600) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit((self.dir / "server.log").read_text()[-3000:])
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise SystemExit("the team server did not become ready")

    def metrics(self) -> dict[str, float]:
        return metric_values(httpx.get(self.url + "/metrics", timeout=30).text)

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


async def developer_loop(
    dev: Developer,
    http: httpx.AsyncClient,
    url: str,
    result: Round,
    end: float,
    args: argparse.Namespace,
) -> None:
    while time.monotonic() < end:
        prompt = dev.next_prompt()
        body = {
            "prompt": prompt,
            "max_tokens": args.max_tokens,
            "temperature": 0,
            "stop": ["\n\n"],
        }
        started = time.monotonic()
        try:
            response = await http.post(
                url + "/v1/completions",
                headers={"Authorization": f"Bearer {dev.token}"},
                json=body,
                timeout=max(1.0, end - started + args.grace),
            )
        except httpx.HTTPError as exc:
            kind = type(exc).__name__
            if time.monotonic() < end + args.grace:
                result.errors += 1
                result.error_kinds[kind] = result.error_kinds.get(kind, 0) + 1
            continue
        finished = time.monotonic()
        if response.status_code != 200:
            result.errors += 1
            key = f"HTTP {response.status_code}"
            result.error_kinds[key] = result.error_kinds.get(key, 0) + 1
        elif finished <= end:
            result.latencies.append(finished - started)
            result.tokens += int(response.json()["usage"]["completion_tokens"])
        await asyncio.sleep(dev.rng.uniform(args.pause_min, args.pause_max))


async def run_round(
    server: Server, devs: list[Developer], mode: str, args: argparse.Namespace
) -> Round:
    result = Round(mode, len(devs), args.duration)
    before = server.metrics()
    end = time.monotonic() + args.duration
    limits = httpx.Limits(max_connections=len(devs) + 4, max_keepalive_connections=len(devs) + 4)
    async with httpx.AsyncClient(limits=limits) as http:
        tasks = [
            asyncio.create_task(developer_loop(dev, http, server.url, result, end, args))
            for dev in devs
        ]
        await asyncio.sleep(args.duration)
        # Requests still running at the end are abandoned: the client closes them and the
        # server cancels them (they count neither as completed nor as errors).
        await asyncio.wait(tasks, timeout=0.5)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    after = server.metrics()
    steps = after.get("acepilot_batch_size_count", 0) - before.get("acepilot_batch_size_count", 0)
    rows = after.get("acepilot_batch_size_sum", 0) - before.get("acepilot_batch_size_sum", 0)
    result.batch_mean = rows / steps if steps else 0.0
    # Let the server drain the abandoned requests before the next round.
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        values = server.metrics()
        if not values.get("acepilot_active_requests") and not values.get(
            "acepilot_queued_requests"
        ):
            break
        await asyncio.sleep(0.2)
    return result


async def timed_get(http: httpx.AsyncClient, url: str) -> float:
    started = time.monotonic()
    response = await http.get(url, timeout=600)
    response.raise_for_status()
    return time.monotonic() - started


async def timed_completion(http: httpx.AsyncClient, url: str, token: str) -> float:
    started = time.monotonic()
    response = await http.post(
        url + "/v1/completions",
        headers={"Authorization": f"Bearer {token}"},
        json={"prompt": "def add(a, b):\n", "max_tokens": 4, "temperature": 0},
        timeout=600,
    )
    response.raise_for_status()
    return time.monotonic() - started


def rss_bytes(pid: int) -> int:
    """A process's resident memory now (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


async def peak_rss(pid: int, stop: asyncio.Event) -> int:
    """The process's peak resident memory, sampled every 10 ms until `stop` is set."""
    peak = rss_bytes(pid)
    while not stop.is_set():
        peak = max(peak, rss_bytes(pid))
        await asyncio.sleep(0.01)
    return peak


async def attack_round(server: Server, args: argparse.Namespace) -> str:
    """The --attack measurement (module docstring): a markdown table."""
    attacker, victim = server.tokens(2)
    url = server.url
    body = json.dumps({"prompt": attack_prompt(args.attack_chars), "max_tokens": 4}).encode()
    limits = httpx.Limits(max_connections=args.attack_count + 8)
    async with httpx.AsyncClient(limits=limits) as http:
        await timed_completion(http, url, victim)  # warm
        idle_probe = [await timed_get(http, url + "/healthz") for _ in range(20)]
        idle_completion = [await timed_completion(http, url, victim) for _ in range(5)]
        idle_rss = rss_bytes(server.process.pid)
        stop = asyncio.Event()
        sampler = asyncio.create_task(peak_rss(server.process.pid, stop))
        attack = [
            asyncio.create_task(
                http.post(
                    url + "/v1/completions",
                    headers={"Authorization": f"Bearer {attacker}"},
                    content=body,
                    timeout=600,
                )
            )
            for _ in range(args.attack_count)
        ]
        started = time.monotonic()
        probes: list[float] = []
        completions: list[float] = []
        while not all(task.done() for task in attack):
            probes.append(await timed_get(http, url + "/healthz"))
            completions.append(await timed_completion(http, url, victim))
            await asyncio.sleep(0.05)
        attack_s = time.monotonic() - started
        responses = await asyncio.gather(*attack)
        stop.set()
        peak = await sampler
    statuses: dict[int, int] = {}
    for response in responses:
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1

    def ms(values: list[float], how: str) -> str:
        if not values:
            return "-"
        value = max(values) if how == "max" else sorted(values)[len(values) // 2]
        return f"{value * 1000:.0f}"

    return "\n".join(
        [
            f"### team-server attack: {args.attack_count} concurrent prompts of "
            f"{args.attack_chars:,} characters from one token",
            "",
            "| | idle: p50 ms | idle: max ms | attack: p50 ms | attack: max ms |",
            "|---|---|---|---|---|",
            f"| /healthz | {ms(idle_probe, 'p50')} | {ms(idle_probe, 'max')} | "
            f"{ms(probes, 'p50')} | {ms(probes, 'max')} |",
            f"| another token's completion | {ms(idle_completion, 'p50')} | "
            f"{ms(idle_completion, 'max')} | {ms(completions, 'p50')} | {ms(completions, 'max')} |",
            "",
            f"Attack answered in {attack_s:.1f} s; its statuses: "
            + ", ".join(f"{count} x {status}" for status, count in sorted(statuses.items()))
            + f"; server resident memory {idle_rss / 2**20:.0f} MB idle, peak "
            f"{peak / 2**20:.0f} MB (+{(peak - idle_rss) / 2**20:.0f} MB).",
        ]
    )


def attack_prompt(chars: int) -> str:
    line = "def f(x):\n    return x + 1\n"
    return (line * (chars // len(line) + 1))[:chars]


async def warm_up(server: Server, devs: list[Developer], args: argparse.Namespace) -> None:
    """One unmeasured request per new developer: their first prompt is prefilled cold
    (a developer opening a file), the measured rounds then see typing on a warm cache."""
    async with httpx.AsyncClient(timeout=1800) as http:

        async def one(dev: Developer) -> None:
            response = await http.post(
                server.url + "/v1/completions",
                headers={"Authorization": f"Bearer {dev.token}"},
                json={"prompt": dev.next_prompt(), "max_tokens": 1, "temperature": 0},
            )
            response.raise_for_status()

        await asyncio.gather(*(one(dev) for dev in devs))


def graph_scaling(
    artifact: Path, sizes: list[int], threads: int | None = None, context: int = 300
) -> dict[int, float]:
    """The ceiling of batching on this machine: one decode step of the graph at batch B
    (rows holding `context` cached tokens), in ms. No server, no prefill, no scheduling:
    what any batching server could get from this model here (with the servers' threads)."""
    import numpy as np

    from acepilot.server.engine import Engine
    from acepilot.server.engine.batch import BatchEngine
    from acepilot.server.registry import ModelEntry

    engine = Engine.load(ModelEntry.load(artifact), threads, max_sessions=1)
    batch = BatchEngine(engine, max_batch=max(sizes), max_rows=max(sizes))
    try:
        ids = np.random.default_rng(0).integers(10, 4000, context).tolist()
        for row in range(max(sizes)):
            batch._run(row, [ids], [context])  # fill the rows' caches
        steps: dict[int, float] = {}
        for size in sizes:
            feeds, totals = [[7]] * size, [context + 1] * size
            batch._run(0, feeds, totals)
            start = time.perf_counter()
            repeats = 5
            for _ in range(repeats):
                batch._run(0, feeds, totals)
            steps[size] = (time.perf_counter() - start) / repeats * 1000
        return steps
    finally:
        batch.close()


def speedup_at(steps: dict[int, float], batch: float) -> float:
    """The graph's tokens/s at a (mean) batch size against batch 1, interpolating the
    step time linearly between measured sizes (beyond the largest: its per-row slope)."""
    sizes = sorted(steps)
    lo, hi = sizes[0], sizes[-1]
    for a, b in itertools.pairwise(sizes):
        lo, hi = a, b
        if batch <= b:
            break
    step = steps[lo] + (steps[hi] - steps[lo]) * (batch - lo) / (hi - lo)
    return batch * steps[sizes[0]] / step


def scaling_table(steps: dict[int, float], context: int = 300) -> str:
    lines = [
        f"Graph decode step alone ({context}-token caches): ms per step, ms per token, "
        "tokens/s vs batch 1",
        "",
        "| batch | ms/step | ms/token | speed-up per token |",
        "|---|---|---|---|",
    ]
    base = steps[min(steps)]
    for size, step in sorted(steps.items()):
        lines.append(f"| {size} | {step:.1f} | {step / size:.1f} | {base * size / step:.2f}x |")
    return "\n".join(lines)


def efficiency_table(rounds: list[Round], steps: dict[int, float]) -> str:
    """Batched/unbatched throughput against what the graph allows: at batch 16 (the
    scheduler goal's definition) and at the mean batch the load actually offered
    (developers who pause between requests cannot all be in a step at once)."""
    by_key = {(r.mode, r.devs): r for r in rounds}
    lines = [
        "| devs | throughput batched/unbatched | graph at batch 16 | share | mean batch offered "
        "| graph at that batch | share |",
        "|---|---|---|---|---|---|---|",
    ]
    top = speedup_at(steps, 16)
    for (mode, devs), on in sorted(by_key.items(), key=lambda item: item[0][1]):
        off = by_key.get(("unbatched", devs))
        if mode != "batched" or off is None or not off.tokens:
            continue
        ratio = (on.tokens / on.duration) / (off.tokens / off.duration)
        offered = speedup_at(steps, max(1.0, on.batch_mean))
        lines.append(
            f"| {devs} | {ratio:.2f}x | {top:.2f}x | {ratio / top:.0%} | {on.batch_mean:.1f} "
            f"| {offered:.2f}x | {ratio / offered:.0%} |"
        )
    return "\n".join(lines)


def make_developers(
    tokens: list[str], texts: list[str], args: argparse.Namespace
) -> list[Developer]:
    devs = []
    for index, token in enumerate(tokens):
        rng = random.Random(1000 + index)
        text = texts[index % len(texts)]
        start = rng.randrange(0, max(1, len(text) - args.context_chars - 2000))
        devs.append(Developer(f"dev-{index}", token, text, start, start + args.context_chars, rng))
    return devs


def table(rounds: list[Round], args: argparse.Namespace, model: str) -> str:
    by_key = {(r.mode, r.devs): r.row() for r in rounds}
    lines = [
        f"### team-server load: {model}, {args.duration:.0f} s per point, max_tokens "
        f"{args.max_tokens}, pauses {args.pause_min}-{args.pause_max} s, "
        f"{os.cpu_count()} CPUs",
        "",
        "| devs | mode | req/s | p50 s | p95 s | p99 s | tokens/s | mean batch | errors |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for devs in args.devs:
        for mode in ("batched", "unbatched"):
            row = by_key.get((mode, devs))
            if row is None:
                continue
            lines.append(
                f"| {devs} | {mode} | {row['rps']:.2f} | {row['p50']:.2f} | {row['p95']:.2f} | "
                f"{row['p99']:.2f} | {row['tps']:.1f} | {row['batch']:.1f} | {row['errors']:.0f} |"
            )
    lines += [
        "",
        "| devs | throughput batched/unbatched | tokens/s batched/unbatched | p95 batched/unbatched |",
        "|---|---|---|---|",
    ]
    for devs in args.devs:
        on, off = by_key.get(("batched", devs)), by_key.get(("unbatched", devs))
        if not on or not off:
            continue

        def ratio(a: float, b: float) -> str:
            return f"{a / b:.2f}x" if b and a == a and b == b else "-"

        lines.append(
            f"| {devs} | {ratio(on['rps'], off['rps'])} | {ratio(on['tps'], off['tps'])} | "
            f"{ratio(on['p95'], off['p95'])} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--devs", nargs="+", type=int, default=[1, 4, 16, 32])
    parser.add_argument("--duration", type=float, default=60.0, help="seconds per point")
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--context-chars", type=int, default=800, help="initial prompt size")
    parser.add_argument("--pause-min", type=float, default=0.3)
    parser.add_argument("--pause-max", type=float, default=1.0)
    parser.add_argument("--grace", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, help="server onnxruntime threads")
    parser.add_argument("--kv-memory", default="12G")
    parser.add_argument("--modes", nargs="+", default=["batched", "unbatched"])
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--markdown", type=Path, help="append the tables to this file")
    parser.add_argument("--attack", action="store_true", help="the attack measurement instead")
    parser.add_argument("--attack-count", type=int, default=30)
    parser.add_argument("--attack-chars", type=int, default=920_000)
    parser.add_argument("--registry", type=Path, help="serve this registry (with --model)")
    parser.add_argument("--model", help="the registry model to serve (default: the 350M build)")
    parser.add_argument(
        "--no-graph-scaling",
        action="store_true",
        help="skip the closing measurement of one graph step at batch 1, 4, 16",
    )
    args = parser.parse_args()

    if args.registry and args.model:
        registry, model = args.registry, args.model
    else:
        args.cache.mkdir(parents=True, exist_ok=True)
        checkpoint = ensure_checkpoint(args.cache, "350M")
        artifact = ensure_artifact(args.cache, checkpoint, "350M", "int4")
        registry, model = artifact.parent.parent, artifact.parent.name
    if args.attack:
        return attack(registry, model, args)
    texts = source_texts()
    rounds: list[Round] = []
    # Both servers stay up; each point runs batched then unbatched back to back, so the
    # two sides of a ratio see the same machine load (this machine is shared).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the servers on SIGTERM
    servers: dict[str, Server] = {}
    devs: dict[str, list[Developer]] = {}
    try:
        for mode in args.modes:
            max_batch = max(args.devs) if mode == "batched" else 1
            log(f"[{mode}] starting the server (max batch {max_batch}) ...")
            servers[mode] = Server(registry, model, max_batch, args)
        for mode, server in servers.items():
            server.wait_ready()
            devs[mode] = make_developers(server.tokens(max(args.devs)), texts, args)
        warmed = 0
        for count in args.devs:
            for mode, server in servers.items():
                if count > warmed:
                    log(f"[{mode}] warming {count - warmed} new sessions ...")
                    asyncio.run(warm_up(server, devs[mode][warmed:count], args))
            warmed = max(warmed, count)
            for mode, server in servers.items():
                log(f"[{mode}] {count} developers for {args.duration:.0f} s ...")
                result = asyncio.run(run_round(server, devs[mode][:count], mode, args))
                row = result.row()
                log(
                    f"[{mode}] {count} devs: {row['rps']:.2f} req/s, p95 {row['p95']:.2f} s, "
                    f"{row['tps']:.1f} tokens/s, batch {row['batch']:.1f}, "
                    f"errors {result.errors} {result.error_kinds or ''}"
                )
                rounds.append(result)
    finally:
        for server in servers.values():
            server.stop()
    label = model if args.registry else f"{model} (350M shapes, int4, random weights)"
    output = table(rounds, args, label)
    if not args.no_graph_scaling and not args.registry:
        log("measuring the graph's own batch scaling ...")
        steps = graph_scaling(artifact, [1, 2, 4, 8, 12, 16, 24, 32], args.threads)
        output += "\n\n" + scaling_table(steps) + "\n\n" + efficiency_table(rounds, steps)
    print(output)
    if args.markdown:
        with args.markdown.open("a") as handle:
            handle.write(output + "\n\n")
    return 0


def attack(registry: Path, model: str, args: argparse.Namespace) -> int:
    server = Server(registry, model, 16, args)
    try:
        server.wait_ready()
        output = asyncio.run(attack_round(server, args))
    finally:
        server.stop()
    print(output)
    if args.markdown:
        with args.markdown.open("a") as handle:
            handle.write(output + "\n\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
