"""HumanEval-X's reference programs as source files, for per-language line completion.

A tiny model passes no HumanEval-X problem in any language, so pass@1 cannot show how
a fine-tune changed it per language; finishing the lines of the same problems' reference
solutions can. This writes each problem's prompt followed by its canonical solution
(for Rust, whose prompt is the comment alone: prompt, declaration, solution) as one file,
`<out>/humaneval-<language>/<Task>_<n>.<ext>`, so `acepilot eval completion` and the
gate's in-domain completion (`completion_paths` of a pipeline) measure exact match and
edit similarity per HumanEval-X language — the extension names the language, the folder
the domain. The files are the evaluation set itself: never put them in a corpus (the
corpus build refuses them anyway, see its eval-leak check).

    python -m acepilot.training.eval.humaneval_files DATA_DIR OUT [--limit N]
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from acepilot.training.eval.data import load_problems

EXTENSIONS = {
    "python": ".py",
    "cpp": ".cpp",
    "java": ".java",
    "js": ".js",
    "go": ".go",
    "rust": ".rs",
}


def program_text(problem: dict[str, str], language: str) -> str:
    """The reference program a reader sees: the prompt and the canonical solution."""
    if language == "rust":
        return problem["prompt"] + problem.get("declaration", "") + problem["canonical_solution"]
    return problem["prompt"] + problem["canonical_solution"]


def write_files(
    data: str | Path, out: Path, languages: Sequence[str] = tuple(EXTENSIONS), limit: int = 0
) -> dict[str, int]:
    """Write the files (the first `limit` problems per language; 0 = all); returns the
    count per language. Rewrites files in place, so a second run gives the same tree."""
    counts = {}
    for language in languages:
        problems = load_problems(data, language)[: limit or None]
        folder = out / f"humaneval-{language}"
        folder.mkdir(parents=True, exist_ok=True)
        for problem in problems:
            stem = problem["task_id"].replace("/", "_")
            text = program_text(problem, language)
            (folder / f"{stem}{EXTENSIONS[language]}").write_text(text, encoding="utf-8")
        counts[language] = len(problems)
    return counts


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", help="HumanEval-X directory (humaneval_<lang>.jsonl[.gz])")
    parser.add_argument("out", type=Path)
    parser.add_argument("--limit", type=int, default=0, help="problems per language (0 = all)")
    args = parser.parse_args(argv)
    counts = write_files(args.data, args.out.expanduser(), limit=args.limit)
    print(", ".join(f"{language}: {n} files" for language, n in counts.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
