"""Line completion with each context source on and off: exact match and edit similarity (issue 17).

Positions: those of bench/context_recall.py (repositories on this machine that
no test tuned on; a line that uses a name defined once, at the top level of
another file of the same repository; the line is emptied to its indentation and
the cursor put there). The reference is the line's original text.

The prompt is the editor's (acepilot/server/lsp/prompt.py `build_prompt`) with
the server's default settings and budgets (`prompt_budget`, `workspace_budget`:
contextTokens 1,024 within the model's window, snippetTokens 256,
workspaceContextTokens 384), in the model's repository format when its
manifest has one. Sources:

  open_tab             the server's open-tab snippets (lsp/prompt.py `select_snippets`) from the
                       three files nearest the current one in its directory (as context_recall.py)
  imported_definition  \
  near_cursor_symbol    > the workspace index's sources (acepilot/server/context/)
  bm25                 /

Recent edits/views need an editor's history and are not simulated. Each
configuration: none, each source alone, all four (what the server does by
default), all but one. The model completes greedily (the engine the server
runs, session-less: cold) up to the end of the line (48 tokens at most);
exact match and edit similarity as `acepilot eval completion` scores them
(acepilot/training/eval/line_metrics.py).

The model: the default one, the shipped acepilot-tiny (registered in a
registry under the cache directory as `acepilot demo` does), or
`--model NAME --registry DIR` (e.g. a better default model when it ships).

    .venv/bin/python -m bench.context_completion                 # ~10 min on one core
    .venv/bin/python -m bench.context_completion --positions 10  # a quick look
    .venv/bin/python -m bench.context_completion --model-writes-indent  # prompt ends at the break
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from acepilot.server.context import ContextCollector, IndexLimits, WorkspaceIndex
from acepilot.server.context.grammars import language_of
from acepilot.server.engine import Engine, GenerationParams
from acepilot.server.lsp.backends import LocalBackend
from acepilot.server.lsp.config import Config
from acepilot.server.lsp.languages import language
from acepilot.server.lsp.pipeline import prompt_budget, workspace_budget
from acepilot.server.lsp.prompt import (
    QUERY_LINES,
    Neighbour,
    PromptInput,
    TokenCounter,
    build_prompt,
    select_snippets,
)
from acepilot.server.registry import ModelEntry, Registry
from acepilot.training.eval.line_metrics import edit_similarity, exact_match
from bench.context_recall import REPOS, blank, open_tabs, positions

WORKSPACE_SOURCES = ("imported_definition", "near_cursor_symbol", "bm25")
ALL = ("open_tab", *WORKSPACE_SOURCES)
MAX_NEW_TOKENS = 48
DEFAULT_CACHE = Path(
    os.environ.get("ACEPILOT_BENCH_CACHE", Path.home() / ".cache" / "acepilot-bench")
)


def configurations() -> dict[str, tuple[str, ...]]:
    configs: dict[str, tuple[str, ...]] = {"none": ()}
    configs |= {f"{source} alone": (source,) for source in ALL}
    configs["all four (the server's default)"] = ALL
    configs |= {f"all but {source}": tuple(s for s in ALL if s != source) for source in ALL}
    return configs


@dataclass
class Totals:
    n: int = 0
    exact: int = 0
    similarity: float = 0.0
    prompt_tokens: int = 0
    context_tokens: int = 0


def load_model(args: argparse.Namespace) -> ModelEntry:
    if args.model:
        return Registry(args.registry).resolve(args.model)
    from acepilot.training.commands.bootstrap import ensure_tiny

    result = ensure_tiny(registry_root=args.cache / "context-registry", progress=False, quiet=True)
    if result is None:
        raise SystemExit("no default model: pass --model NAME --registry DIR")
    return result.entry


def run_repository(
    name: str,
    root: Path,
    args: argparse.Namespace,
    backend: LocalBackend,
    totals: dict[tuple[str, str], Totals],
) -> None:
    if not root.is_dir():
        print(f"skip {name}: {root} not found", file=sys.stderr)
        return
    engine = backend.engine
    config = Config()
    count = TokenCounter(backend.count_tokens)
    budget = prompt_budget(config, backend)
    context_budget = workspace_budget(config, budget)
    index = WorkspaceIndex(root, IndexLimits(max_files=5000))
    index.index_all()
    sample = positions(index, args.positions, args.seed)
    collectors = {
        sources: ContextCollector(index, sources=sources)
        for sources in {tuple(s for s in c if s != "open_tab") for c in configurations().values()}
        if sources
    }
    params = GenerationParams(max_new_tokens=MAX_NEW_TOKENS, stop=("\n",))
    started = time.perf_counter()
    for position in sample:
        text = (index.root / position.path).read_text(encoding="utf-8", errors="replace")
        document, offset = blank(text, position.line)
        lines = document.split("\n")
        reference = text.split("\n")[position.line].strip()
        lang = language(language_id(position.path))
        group = language_of(position.path) or "other"
        data = PromptInput(
            path=position.path,
            language=lang,
            before=lines[: position.line],
            first_line=0,
            line_prefix="" if args.model_writes_indent else lines[position.line],
            line_suffix="",
            after=lines[position.line + 1 :],
        )
        tabs = [
            Neighbour.from_lines(
                tab,
                tab,
                (index.root / tab).read_text(encoding="utf-8", errors="replace").split("\n"),
            )
            for tab in open_tabs(index, position.path)
        ]
        query = list(data.before[-QUERY_LINES:]) + [data.line_prefix]
        for config_name, sources in configurations().items():
            if args.configs and config_name not in args.configs:
                continue
            snippets = (
                select_snippets(query, tabs, config.snippet_tokens, count, lang, position.path)
                if "open_tab" in sources
                else []
            )
            workspace = tuple(s for s in sources if s != "open_tab")
            chunks = (
                collectors[workspace].collect(
                    document,
                    offset,
                    position.path,
                    language_of(position.path),
                    context_budget,
                    count,
                )
                if workspace
                else []
            )
            prompt = build_prompt(
                PromptInput(**{**data.__dict__, "snippets": snippets, "context": chunks}),
                budget,
                count,
                engine.entry.fim,
                False,
                engine.entry.repo_format,
            )
            completion = engine.generate(prompt.text, params).text
            for key in ((config_name, "all"), (config_name, group)):
                total = totals[key]
                total.n += 1
                total.exact += exact_match(completion.strip(), reference)
                total.similarity += edit_similarity(completion.strip(), reference)
                total.prompt_tokens += prompt.tokens
                total.context_tokens += sum(p.tokens for p in prompt.parts if p.kind != "prefix")
    print(
        f"{name}: {len(index.files)} files, {len(sample)} positions, "
        f"{time.perf_counter() - started:.0f} s",
        file=sys.stderr,
    )


def language_id(path: str) -> str:
    found = language_of(path) or "plaintext"
    return {"tsx": "typescriptreact", "c": "c", "cpp": "cpp"}.get(found, found)


def report(
    totals: dict[tuple[str, str], Totals], entry: ModelEntry, args: argparse.Namespace
) -> str:
    configs = list(configurations())
    base = totals[("none", "all")]
    tabs = totals[("open_tab alone", "all")]
    lines = [
        f"Model: {entry.name} {entry.version}; {args.positions} positions per repository, seed "
        f"{args.seed}; greedy, up to {MAX_NEW_TOKENS} tokens, to the end of the line",
        "",
        "| context in the prompt | positions | exact match | edit similarity | EM vs none | "
        "EM vs open tabs | prompt tokens (mean) | of which not the file's own code |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in configs:
        t = totals[(name, "all")]
        if not t.n:
            continue
        em = t.exact / t.n
        vs_none = f"{em / (base.exact / base.n):.2f}x" if base.exact else "-"
        vs_tabs = f"{em / (tabs.exact / tabs.n):.2f}x" if tabs.exact else "-"
        lines.append(
            f"| {name} | {t.n} | {100 * em:.1f}% | {t.similarity / t.n:.3f} | {vs_none} | "
            f"{vs_tabs} | {t.prompt_tokens / t.n:.0f} | {t.context_tokens / t.n:.0f} |"
        )
    groups = sorted({g for _, g in totals if g != "all"})
    if len(groups) > 1:
        lines += ["", "| context | " + " | ".join(f"{g} EM / ES" for g in groups) + " |"]
        lines.append("|---|" + "---|" * len(groups))
        for name in configs:
            if not totals[(name, "all")].n:
                continue
            cells = []
            for g in groups:
                t = totals[(name, g)]
                cells.append(
                    f"{100 * t.exact / t.n:.1f}% / {t.similarity / t.n:.3f}" if t.n else "-"
                )
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--positions", type=int, default=30, help="positions per repository (30)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", help="a registry model instead of the default acepilot-tiny")
    parser.add_argument("--registry", type=Path, help="the registry of --model")
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime threads (1)")
    parser.add_argument(
        "--model-writes-indent",
        action="store_true",
        help="end the prompt at the line break and let the model write the indentation too "
        "(as `acepilot eval completion` does: BPE glues whitespace to the next word); "
        "default: the editor's prompt, which ends in the indentation",
    )
    parser.add_argument("--configs", nargs="+", help="only these configurations (names as printed)")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    args = parser.parse_args()
    if bool(args.model) != bool(args.registry):
        parser.error("--model and --registry go together")
    entry = load_model(args)
    backend = LocalBackend(Engine.load(entry, threads=args.threads))
    totals: dict[tuple[str, str], Totals] = defaultdict(Totals)
    for name, root in REPOS:
        run_repository(name, root, args, backend, totals)
    print(report(totals, entry, args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
