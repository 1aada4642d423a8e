"""Cross-file identifier recall of the context sources, and the index's cost at 10,000 files.

Recall: repositories that exist on this machine and that no test was tuned on
(pure-Python packages of the virtual environment, Go's standard library, a
JavaScript package of node_modules). A *position* is a line whose text uses a
name defined exactly once in the repository, at the top level of another file.
The line is blanked (its indentation kept) and the cursor put there, as when
the user is about to write it. Hit: a collected chunk of the defining file
covers the definition's first line. Recall = hits / positions, per source
alone and for all sources together, at several context budgets.

Open-tabs baseline (today's editor behaviour): the user is assumed to have the
three files nearest the current one in its directory open (the sorted
neighbours before and after it) — the ones most often open together.
Recent edits/views are not simulated (no editing history exists for these
repositories): the combined figure counts them out.

Tokens are estimated as characters / 3 (the server's estimate when no
tokenizer is at hand; CodeGen's BPE gives ~3-4 characters per token on code).

Cost (--scale): a 10,000-file workspace copied from the virtual environment's
site-packages, indexed in the background thread; wall time, peak RSS over the
process baseline, and the collector's per-request time (cache miss and hit),
also while indexing runs.

    .venv/bin/python -m bench.context_recall                # recall tables
    .venv/bin/python -m bench.context_recall --scale 10000  # + cost at 10k files
"""

from __future__ import annotations

import argparse
import os
import random
import re
import resource
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from acepilot.server.context import KINDS, ContextCollector, IndexLimits, WorkspaceIndex
from acepilot.server.context.chunks import identifiers
from acepilot.server.context.grammars import language_of
from acepilot.server.context.symbols import Definition

SITE = (
    Path(sys.prefix)
    / "lib"
    / f"python{sys.version_info.major}.{sys.version_info.minor}"
    / "site-packages"
)
REPOS: list[tuple[str, Path]] = [
    ("httpx", SITE / "httpx"),
    ("starlette", SITE / "starlette"),
    ("click", SITE / "click"),
    ("pygls", SITE / "pygls"),
    ("jinja2", SITE / "jinja2"),
    ("uvicorn", SITE / "uvicorn"),
    ("anyio", SITE / "anyio"),
    ("go net/http", Path("/usr/lib/go-1.19/src/net/http")),
    ("go go/*", Path("/usr/lib/go-1.19/src/go")),
    ("js eslint/lib", Path(__file__).resolve().parents[1] / "node_modules" / "eslint" / "lib"),
]
BUDGETS = (512, 1024, 2048)
SINGLE = ("imported_definition", "near_cursor_symbol", "bm25", "open_tab")
COMBINED = "combined"
IMPORT_LINE = re.compile(
    r"^\s*(from\s+\S+\s+import|import\s|#include|use\s|package\s|\"[\w./-]+\"$)"
)
OPEN_TABS = 3


def count_tokens(text: str) -> int:
    return len(text) // 3 + 1


@dataclass(frozen=True)
class Position:
    path: str
    line: int
    name: str
    definition: Definition


def unique_definitions(index: WorkspaceIndex) -> dict[str, Definition]:
    """Names defined exactly once in the repository, at the top level of a file."""
    unique: dict[str, Definition] = {}
    for name in index.names():
        found = index.definitions_named(name)
        top = [d for d in found if not d.parent]
        if len(found) == 1 and len(top) == 1 and not name.startswith("__") and len(name) > 2:
            unique[name] = top[0]
    return unique


def file_positions(
    index: WorkspaceIndex,
    rel: str,
    unique: dict[str, Definition],
    same_language: bool = False,
) -> list[Position]:
    """The lines of `rel` that use a name of `unique` defined in another file (not imports,
    not comments; with `same_language`, only in a file of rel's language): the first such
    name of each line."""
    language = language_of(rel)
    local = set(index.files[rel].definitions.names)
    text = (index.root / rel).read_text(encoding="utf-8", errors="replace")
    out: list[Position] = []
    in_import = False
    for number, line in enumerate(text.splitlines()):
        stripped = line.strip()
        if in_import:  # the names list of a multi-line import: not a use
            in_import = not stripped.startswith(")") and not stripped.endswith(")")
            continue
        if IMPORT_LINE.match(line) or stripped.startswith(("#", "//", "*", "/*")):
            in_import = stripped.endswith("(")
            continue
        for word in identifiers(line):
            defined = unique.get(word)
            if defined is None or defined.path == rel or word in local:
                continue
            if same_language and language_of(defined.path) != language:
                continue
            out.append(Position(rel, number, word, defined))
            break
    return out


def positions(index: WorkspaceIndex, per_repo: int, seed: int) -> list[Position]:
    """Lines using a name defined once, at the top level, in another file of the repository."""
    unique = unique_definitions(index)
    out = [p for rel in sorted(index.files) for p in file_positions(index, rel, unique)]
    random.Random(seed).shuffle(out)
    return out[:per_repo]


def open_tabs(index: WorkspaceIndex, rel: str) -> list[str]:
    """The baseline's open files: the current file's nearest neighbours in its directory."""
    folder = rel.rsplit("/", 1)[0] if "/" in rel else ""
    same = sorted(p for p in index.files if (p.rsplit("/", 1)[0] if "/" in p else "") == folder)
    i = same.index(rel)
    near = sorted((p for p in same if p != rel), key=lambda p: (abs(same.index(p) - i), p))
    return near[:OPEN_TABS]


def blank(text: str, line: int) -> tuple[str, int]:
    """The document with `line` emptied to its indentation, and the cursor offset there."""
    lines = text.split("\n")
    indent = lines[line][: len(lines[line]) - len(lines[line].lstrip())]
    lines[line] = indent
    offset = sum(len(x) + 1 for x in lines[:line]) + len(indent)
    return "\n".join(lines), offset


def hit(chunks: list, definition: Definition) -> bool:
    return any(
        c.path == definition.path and c.start_line <= definition.start_line <= c.end_line
        for c in chunks
    )


def recall(name: str, root: Path, per_repo: int, seed: int) -> dict[tuple[str, int], float] | None:
    if not root.is_dir():
        print(f"skip {name}: {root} not found", file=sys.stderr)
        return None
    index = WorkspaceIndex(root, IndexLimits(max_files=5000))
    index.index_all()
    sample = positions(index, per_repo, seed)
    configs = {kind: ContextCollector(index, sources=(kind,)) for kind in SINGLE}
    configs[COMBINED] = ContextCollector(index, sources=KINDS)
    hits: dict[tuple[str, int], int] = {(c, b): 0 for c in configs for b in BUDGETS}
    for position in sample:
        text = (index.root / position.path).read_text(encoding="utf-8", errors="replace")
        document, offset = blank(text, position.line)
        language = language_of(position.path)
        for config, collector in configs.items():
            collector.open_tabs.clear()
            for tab in open_tabs(index, position.path):
                collector.open(
                    tab, (index.root / tab).read_text(encoding="utf-8", errors="replace")
                )
            for budget in BUDGETS:
                collector.invalidate()
                chunks = collector.collect(
                    document, offset, position.path, language, budget, count_tokens
                )
                hits[(config, budget)] += hit(chunks, position.definition)
    print(f"{name}: {len(index.files)} files, {len(sample)} positions", file=sys.stderr)
    return {key: value / max(1, len(sample)) for key, value in hits.items()} | {
        ("n", 0): len(sample)
    }


def build_workspace(target: Path, files: int) -> int:
    """Copy the first `files` indexable files of site-packages (sorted) into target; returns the count."""
    copied = 0
    for directory, dirnames, filenames in os.walk(SITE):
        dirnames.sort()
        for name in sorted(filenames):
            if copied >= files:
                return copied
            source = Path(directory) / name
            if language_of(name) is None or not 0 < source.stat().st_size <= 256 * 1024:
                continue
            dest = target / source.relative_to(SITE)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, dest)
            copied += 1
    return copied


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def scale(files: int) -> None:
    """Index a `files`-file workspace in the background; time, memory and request latency."""
    with tempfile.TemporaryDirectory(prefix="acepilot-ctx-") as tmp:
        root = Path(tmp) / "workspace"
        copied = build_workspace(root, files)
        sample = sorted(root.rglob("*.py"))[:: max(1, copied // 200)][:200]
        documents = [
            (p.relative_to(root).as_posix(), p.read_text(errors="replace")) for p in sample
        ]
        warm = WorkspaceIndex(root)  # load grammars and bm25s before the baseline
        warm.update(documents[0][0])
        base = rss_mb()
        index = WorkspaceIndex(root, IndexLimits(max_files=files))
        collector = ContextCollector(index)
        during: list[float] = []
        start = time.perf_counter()
        index.start()
        while not index.ready:  # requests keep being served while the thread indexes
            rel, text = documents[len(during) % len(documents)]
            t = time.perf_counter()
            collector.invalidate()
            collector.collect(text, len(text) // 2, rel, "python", 1024, count_tokens)
            during.append(time.perf_counter() - t)
            time.sleep(0.05)
        elapsed = time.perf_counter() - start
        after = rss_mb()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        miss, miss_cpu, hits = [], [], []
        for rel, text in documents:
            collector.invalidate()
            t, c = time.perf_counter(), time.thread_time()
            collector.collect(text, len(text) // 2, rel, "python", 1024, count_tokens)
            miss.append(time.perf_counter() - t)
            miss_cpu.append(time.thread_time() - c)
            t = time.perf_counter()  # a keystroke later, same block: the cached choice
            collector.collect(text + " ", len(text) // 2 + 1, rel, "python", 1024, count_tokens)
            hits.append(time.perf_counter() - t)
        index.close()
        load = os.getloadavg()
        definitions = index.definition_count
        print(
            f"workspace: {len(index.files)} files indexed ({copied} copied from site-packages), "
            f"{index.total_bytes / 1e6:.0f} MB of source, {len(index.bm25)} chunks, {definitions} definitions, "
            f"{index.bm25.terms} terms"
        )
        print(
            f"indexing: wall {elapsed:.1f} s (background thread, nice +10), "
            f"CPU {index.stats.get('cpu_seconds', 0.0):.1f} s; load average "
            f"{load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f} on {os.cpu_count()} cores"
        )
        print(
            f"memory: RSS {base:.0f} MB before, {after:.0f} MB after (index {after - base:.0f} MB); "
            f"peak RSS {peak:.0f} MB"
        )
        print(
            f"collect() while indexing: p50 {statistics.median(during) * 1e3:.1f} ms, "
            f"max {max(during) * 1e3:.1f} ms over {len(during)} requests"
        )
        print(
            f"collect() after indexing, 1,024 tokens, {len(miss)} requests: cache miss p50 "
            f"{statistics.median(miss) * 1e3:.1f} ms (p90 {sorted(miss)[int(len(miss) * 0.9)] * 1e3:.1f} ms), "
            f"its CPU p50 {statistics.median(miss_cpu) * 1e3:.1f} ms; "
            f"cache hit p50 {statistics.median(hits) * 1e6:.0f} µs"
        )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--positions", type=int, default=150, help="positions sampled per repository"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--scale", type=int, default=0, help="also index a workspace of this many files"
    )
    parser.add_argument("--no-recall", action="store_true", help="only the --scale measurement")
    args = parser.parse_args()
    if not args.no_recall:
        rows = {
            name: r for name, root in REPOS if (r := recall(name, root, args.positions, args.seed))
        }
        configs = [*SINGLE, COMBINED]
        header = (
            "| repository | positions | "
            + " | ".join(f"{c} {b}" for c in configs for b in BUDGETS)
            + " |"
        )
        print(header)
        print("|" + "---|" * (2 + len(configs) * len(BUDGETS)))
        total = sum(int(r[("n", 0)]) for r in rows.values())
        for name, r in rows.items():
            cells = " | ".join(f"{100 * r[(c, b)]:.0f}%" for c in configs for b in BUDGETS)
            print(f"| {name} | {int(r[('n', 0)])} | {cells} |")
        pooled = " | ".join(
            f"{100 * sum(r[(c, b)] * r[('n', 0)] for r in rows.values()) / max(1, total):.0f}%"
            for c in configs
            for b in BUDGETS
        )
        print(f"| **all** | {total} | {pooled} |")
    if args.scale:
        scale(args.scale)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
