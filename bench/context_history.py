"""Recent edits as a context source, measured on a real editing history: git commits.

bench/context_recall.py measures every source on repositories without an editing
history, so it leaves recent edits out. A repository's commits are such a history.
For each of the last `--commits` non-merge commits, the tree after the commit is
indexed; a position is a line the commit added that uses a name defined exactly
once, at the top level, in another file of the same language (context_recall's
rule, plus the language: a Python line does not call a TypeScript function); the line is
blanked and the cursor put there. The ring buffer (`RecentChunks`, as the language
server fills it on didChange) is fed, oldest first, with the windows the editor
would have reported as edited:

- `history`: every hunk of the previous `--previous` commits, typed through from
  its first to its last line (a window noted every 12 lines, each with the file's
  text in that commit; the ring keeps the newest 16 windows);
- `history + commit`: also the hunks of the same commit in the other files, as if
  they were written before this line (a commit that adds a function in one file
  and its first call in another is usually written in that order; the order
  inside a commit is not recorded, so this is the optimistic bound).

Hit: a collected chunk of the defining file contains the definition's first line
(by text: a window from an older version of the file has other line numbers).
Reported per budget: recent edits alone; all sources with the buffer filled, with
it empty (the server's own setting before any edit), and without the recent sources
at all (their shares of the budget given to the others).

    .venv/bin/python -m bench.context_history                      # this repository
    .venv/bin/python -m bench.context_history --repo DIR --commits 60
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

from acepilot.server.context import KINDS, ContextCollector, IndexLimits, WorkspaceIndex
from acepilot.server.context.grammars import language_of
from acepilot.server.context.recent import RecentChunks
from bench.context_recall import (
    BUDGETS,
    Position,
    blank,
    count_tokens,
    file_positions,
    unique_definitions,
)

HUNK = re.compile(r"^@@ -\d+(?:,\d+)? \+(\d+)(?:,(\d+))? @@")
RECENT = ("recent_edit", "recent_view")
WITHOUT_RECENT = tuple(kind for kind in KINDS if kind not in RECENT)
PER_COMMIT = 10  # positions per commit at most (a big commit would outweigh the rest)


@dataclass(frozen=True)
class Hunk:
    path: str
    line: int  # 0-based first line on the new side
    count: int  # lines added


def git(repo: Path, *args: str) -> bytes:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True).stdout


def commits(repo: Path, count: int, previous: int) -> list[str]:
    """The last `count + previous` non-merge commits, oldest first."""
    out = git(repo, "log", "--no-merges", "--format=%H", f"-n{count + previous}").decode()
    return out.split()[::-1]


def hunks(repo: Path, commit: str) -> list[Hunk]:
    """Where `commit` added lines, on its new side (zero context, renames followed)."""
    diff = git(repo, "show", "--format=", "-U0", "-M", "--no-color", commit).decode(
        errors="replace"
    )
    out: list[Hunk] = []
    path: str | None = None
    for line in diff.splitlines():
        if line.startswith("+++ "):
            path = line[6:] if line.startswith("+++ b/") else None
        elif path is not None and (match := HUNK.match(line)):
            count = int(match.group(2) or "1")
            if count:
                out.append(Hunk(path, int(match.group(1)) - 1, count))
    return out


def file_at(repo: Path, commit: str, path: str) -> str | None:
    try:
        return git(repo, "show", f"{commit}:{path}").decode("utf-8")
    except (subprocess.CalledProcessError, UnicodeDecodeError):
        return None


def checkout(repo: Path, commit: str, target: Path) -> None:
    with tarfile.open(fileobj=BytesIO(git(repo, "archive", commit)), mode="r:") as archive:
        archive.extractall(target, filter="data")


def feed(recent: RecentChunks, repo: Path, commit: str, edits: list[Hunk]) -> None:
    texts: dict[str, str | None] = {}
    for hunk in edits:
        if hunk.path not in texts:
            texts[hunk.path] = file_at(repo, commit, hunk.path)
        text = texts[hunk.path]
        if text is not None and language_of(hunk.path) is not None:
            # typing through the hunk: didChange reports the line being edited as it moves
            step = max(1, recent.window_lines // 2)
            for line in range(hunk.line, hunk.line + hunk.count, step):
                recent.note(hunk.path, text, line, "recent_edit")


def ring(repo: Path, earlier: list[str], changes: dict[str, list[Hunk]]) -> RecentChunks:
    """The ring buffer after typing through the hunks of the `earlier` commits, oldest first."""
    recent = RecentChunks()
    for commit in earlier:
        feed(recent, repo, commit, changes[commit])
    return recent


def hit(chunks: list, position: Position, definition_line: str) -> bool:
    return any(
        c.path == position.definition.path and definition_line in c.text.splitlines()
        for c in chunks
    )


def measure(repo: Path, count: int, previous: int) -> tuple[dict[tuple[str, int], int], int]:
    order = commits(repo, count, previous)
    changes = {commit: hunks(repo, commit) for commit in order}
    hits: dict[tuple[str, int], int] = {}
    total = 0
    for at, commit in enumerate(order[previous:], previous):
        added = changes[commit]
        with tempfile.TemporaryDirectory(prefix="acepilot-history-") as tmp:
            root = Path(tmp)
            checkout(repo, commit, root)
            index = WorkspaceIndex(root, IndexLimits(max_files=5000))
            index.index_all()
            unique = unique_definitions(index)
            new_lines = {(h.path, h.line + i) for h in added for i in range(h.count)}
            found = [
                p
                for rel in sorted({h.path for h in added} & set(index.files))
                for p in file_positions(index, rel, unique, same_language=True)
                if (p.path, p.line) in new_lines
            ][:PER_COMMIT]
            history = ring(repo, order[at - previous : at], changes)  # the same for each position
            for position in found:
                total += 1
                source = (root / position.path).read_text(encoding="utf-8", errors="replace")
                document, offset = blank(source, position.line)
                defining = (root / position.definition.path).read_text(
                    encoding="utf-8", errors="replace"
                )
                definition_line = defining.splitlines()[position.definition.start_line]
                language = language_of(position.path)
                with_commit = ring(repo, order[at - previous : at], changes)
                feed(with_commit, repo, commit, [h for h in added if h.path != position.path])
                setups = {
                    "recent edits alone: history": ContextCollector(
                        index, history, ("recent_edit",)
                    ),
                    "recent edits alone: history + commit": ContextCollector(
                        index, with_commit, ("recent_edit",)
                    ),
                    "all but recent edits": ContextCollector(index, RecentChunks(), WITHOUT_RECENT),
                    "all, nothing edited yet": ContextCollector(index, RecentChunks(), KINDS),
                    "all: history": ContextCollector(index, history, KINDS),
                    "all: history + commit": ContextCollector(index, with_commit, KINDS),
                }
                for label, collector in setups.items():
                    for budget in BUDGETS:
                        collector.invalidate()
                        chunks = collector.collect(
                            document, offset, position.path, language, budget, count_tokens
                        )
                        key = (label, budget)
                        hits[key] = hits.get(key, 0) + hit(chunks, position, definition_line)
        print(f"{commit[:10]}: {len(found)} positions", file=sys.stderr)
    return hits, total


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--repo", type=Path, default=Path(__file__).resolve().parents[1], help="a git repository"
    )
    parser.add_argument("--commits", type=int, default=40, help="commits measured (40)")
    parser.add_argument("--previous", type=int, default=3, help="earlier commits fed first (3)")
    args = parser.parse_args()
    if args.commits < 1 or args.previous < 0:
        parser.error("--commits must be >= 1 and --previous >= 0")
    hits, total = measure(args.repo.resolve(), args.commits, args.previous)
    print(
        f"Identifier recall at context budgets (tokens), {total} positions in the last "
        f"{args.commits} commits of {args.repo.resolve().name}, {args.previous} earlier "
        "commits' edits in the ring buffer first\n"
    )
    print("| sources | " + " | ".join(str(b) for b in BUDGETS) + " |")
    print("|---|" + "---|" * len(BUDGETS))
    labels = sorted({label for label, _ in hits}, key=lambda x: (not x.startswith("recent"), x))
    for label in labels:
        cells = [f"{hits.get((label, b), 0) / max(1, total):.1%}" for b in BUDGETS]
        print(f"| {label} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
