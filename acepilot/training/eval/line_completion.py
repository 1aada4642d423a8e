"""In-domain line completion: exact match, edit similarity and perplexity on held-out code.

Why one module over 600 lines (a split is due): positions, predictors (model,
FIM, n-gram, repeat-line), scoring and the CLI still live together; the planned
split is predictors and scoring into their own modules (issue 14's note).

What a Copilot user feels is "did the ghost text finish my line". This module
measures exactly that on code the model never saw: it picks cursor positions
in held-out files (deterministically, from a seed), gives each predictor the
file's text before the cursor and compares what it writes up to the end of
the line with what the file really has there.

- Positions: a line with at least `MIN_LINE_CHARS` non-blank characters; the
  cursor is placed uniformly among the offsets between the end of its
  indentation and its last character that are not inside a word (see
  `cursor_positions`), so the target (the rest of the line) is never empty
  and ranges from "finish this call" to "write the whole statement".
- Exact match: prediction == target, ignoring trailing whitespace only
  (leading whitespace after a mid-line cursor matters: `x =` + ` 1`).
- Edit similarity: 1 - Levenshtein(prediction, target) / max(len), the
  CodeXGLUE / Copilot-paper measure; 1.0 for two empty strings.
- Results overall, per language (by file extension) and per domain (the
  first directory under the evaluated root, e.g. a repository or package).
- Perplexity of a built (ONNX) model: teacher-forced, one token at a time
  through the same graph the server runs, so it is the served artifact's.

Every predictor gets the prompt cut back to its last non-blank character and
must first write the whitespace that was cut (`split_trailing_whitespace`:
BPE tokenizers glue whitespace to the next word, so a prompt ending in
indentation ends in a token the model rarely saw there).

Two reference predictors make the numbers meaningful: "repeat the previous
line" (code is repetitive; an editor-free heuristic) and a token bigram model
trained on the training side with the model's own tokenizer.

`acepilot eval completion MODEL PATH...` runs it on a registry model
(`add_parser` registers it under `acepilot eval`); `acepilot/training/bootstrap/evaluate.py`
calls the same functions for acepilot-tiny, with `FimPredictor` for the same
positions with the text after the line as a fill-in-the-middle suffix.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from acepilot.server.commands.options import add_registry

if TYPE_CHECKING:
    from acepilot.server.engine import Engine
    from acepilot.server.registry import ModelEntry

MIN_LINE_CHARS = 4
SKIP_DIRS = frozenset({".git", "__pycache__", "node_modules", ".venv", "venv", ".tox", "dist"})
MAX_FILE_BYTES = 1_000_000

# A predictor takes the text before the cursor and returns the rest of the line.
Predictor = Callable[[str], str]


# ---------------------------------------------------------------------------
# Metrics


def levenshtein(a: str, b: str) -> int:
    """Edit distance (insertions, deletions, substitutions of characters)."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, 1):
        current = [i]
        for j, char_b in enumerate(b, 1):
            current.append(
                min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (char_a != char_b))
            )
        previous = current
    return previous[-1]


def normalize(text: str) -> str:
    """What is compared: the first line, without trailing whitespace."""
    return text.split("\n", 1)[0].rstrip()


def exact_match(prediction: str, target: str) -> bool:
    return normalize(prediction) == normalize(target)


def edit_similarity(prediction: str, target: str) -> float:
    """1 - edit distance / the longer length, on normalized text; in [0, 1]."""
    a, b = normalize(prediction), normalize(target)
    longest = max(len(a), len(b))
    if longest == 0:
        return 1.0
    return 1.0 - levenshtein(a, b) / longest


# ---------------------------------------------------------------------------
# Held-out positions


@dataclass(frozen=True)
class LineTask:
    """One cursor position: the text before it and the rest of its line."""

    path: str  # relative to the evaluated root
    language: str
    domain: str
    line: int  # 1-based
    column: int  # 1-based cursor column
    prefix: str
    target: str
    suffix: str = ""  # the text after the line (from its newline on), for FIM predictors


def language_of(path: str) -> str | None:
    from acepilot.training.corpus.filters import language_of as corpus_language

    return corpus_language(path)


def collect_files(paths: Sequence[Path]) -> list[tuple[Path, Path]]:
    """(root, file) for every code file under `paths` (files or directories), sorted.

    Only files whose extension names a language, skipping VCS/build/vendor
    folders. The root is the directory given (a file's root is its folder),
    so domains are the first component below what the user pointed at.
    """
    found: list[tuple[Path, Path]] = []
    for given in paths:
        given = given.expanduser()
        if given.is_file():
            found.append((given.parent, given))
            continue
        if not given.is_dir():
            raise FileNotFoundError(f"{given}: no such file or directory")
        for dirpath, dirnames, filenames in os.walk(given):
            dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and d[0] != ".")
            for name in sorted(filenames):
                path = Path(dirpath, name)
                if language_of(name) is not None and path.is_file():
                    found.append((given, path))
    return found


def domain_of(relative: str) -> str:
    parts = relative.split("/")
    return parts[0] if len(parts) > 1 else "(top level)"


def sample_tasks(
    files: Sequence[tuple[Path, Path]],
    n: int,
    seed: int,
    *,
    context_chars: int = 4000,
    suffix_chars: int = 0,
) -> list[LineTask]:
    """`n` cursor positions spread over `files` ((root, file) pairs), seeded.

    Every eligible line of every file is a candidate; `n` are drawn without
    replacement (all of them when there are fewer), then sorted by file and
    line so the output is stable. The prefix is at most `context_chars`
    characters (cut at a line start): long files would otherwise cost the
    predictors unboundedly, and models truncate anyway. The suffix (for
    fill-in-the-middle predictors) is at most `suffix_chars` characters after
    the line, cut at a line end; the same cursor positions whatever its size.
    """
    if n < 1:
        raise ValueError(f"the number of positions must be at least 1, got {n}")
    candidates: list[tuple[str, str, str, int, int, int]] = []  # rel, lang, text-key...
    texts: dict[str, tuple[str, str]] = {}
    for root, path in files:
        try:
            data = path.read_bytes()
            if len(data) > MAX_FILE_BYTES:
                continue
            text = data.decode("utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        relative = path.relative_to(root).as_posix()
        key = f"{root.as_posix()}::{relative}"
        language = language_of(path.name) or "unknown"
        texts[key] = (relative, text)
        offset = 0
        for number, line in enumerate(text.split("\n"), 1):
            content = line.strip()
            if len(content) >= MIN_LINE_CHARS:
                indent = len(line) - len(line.lstrip())
                end = len(line.rstrip())
                candidates.append((key, language, relative, number, offset + indent, offset + end))
            offset += len(line) + 1
    if not candidates:
        raise ValueError("no eligible lines in the given files")
    rng = random.Random(seed)
    chosen = rng.sample(candidates, min(n, len(candidates)))
    chosen.sort(key=lambda c: (c[0], c[3]))
    tasks = []
    for key, language, relative, number, start, end in chosen:
        text = texts[key][1]
        cursor = rng.choice(cursor_positions(text, start, end))
        line_start = text.rfind("\n", 0, cursor) + 1
        context_start = max(0, cursor - context_chars)
        if context_start > 0:
            newline = text.find("\n", context_start, line_start)
            context_start = newline + 1 if newline >= 0 else line_start
        line_end = text.find("\n", cursor)
        suffix = ""
        if line_end >= 0 and suffix_chars > 0:
            suffix = text[line_end : line_end + suffix_chars]
            if line_end + suffix_chars < len(text) and "\n" in suffix[1:]:
                suffix = suffix[: suffix.rfind("\n")]
        tasks.append(
            LineTask(
                path=relative,
                language=language,
                domain=domain_of(relative),
                line=number,
                column=cursor - line_start + 1,
                prefix=text[context_start:cursor],
                target=text[cursor : line_end if line_end >= 0 else len(text)],
                suffix=suffix,
            )
        )
    return tasks


def cursor_positions(text: str, start: int, end: int) -> list[int]:
    """Offsets in [start, end) that are not inside a word (identifier or number).

    A cursor between two word characters splits what the tokenizer sees as
    one token, which penalizes every subword model in a way that says more
    about token healing than about the model; completions are asked for at
    word boundaries, as an editor usually does after a keystroke such as
    space, `.` or `(`.
    """
    return [
        offset
        for offset in range(start, end)
        if offset == start or not (is_word(text[offset - 1]) and is_word(text[offset]))
    ]


def is_word(char: str) -> bool:
    return char.isalnum() or char == "_"


# ---------------------------------------------------------------------------
# Predictors


def repeat_previous_line(prefix: str) -> str:
    """Baseline: the current line will be the previous non-blank line again.

    Returns the previous non-blank line from the cursor's column on (the
    part of it "under and after" the cursor); empty when there is none.
    """
    lines = prefix.split("\n")
    typed = lines[-1]
    for previous in reversed(lines[:-1]):
        if previous.strip():
            return previous[len(typed) :]
    return ""


class BigramModel:
    """Token bigram counts with add-one unigram back-off, for greedy lines and perplexity.

    Uses the evaluated model's own tokenizer, so perplexities are per the
    same tokens. Greedy completion follows the most frequent successor of
    the last token until a newline (or `max_tokens`).
    """

    def __init__(self, train_ids: Sequence[int] | np.ndarray, vocab: int) -> None:
        train = np.asarray(train_ids, dtype=np.int64)
        if len(train) < 2:
            raise ValueError("the bigram model needs at least two training tokens")
        if train.max() >= vocab or train.min() < 0:
            raise ValueError(f"token ids must be in [0, {vocab})")
        self.vocab = vocab
        self.train = train
        counts = np.bincount(train, minlength=vocab).astype(np.float64)
        self.unigram = (counts + 1.0) / (len(train) + vocab)
        codes, pair_counts = np.unique(train[:-1] * vocab + train[1:], return_counts=True)
        self.pair_counts = dict(zip(codes.tolist(), pair_counts.tolist(), strict=True))
        self.context_counts = np.bincount(train[:-1], minlength=vocab)
        # most frequent successor per token: sort by (prev, count) and keep each prev's last
        order = np.lexsort((pair_counts, codes // vocab))
        prev = (codes // vocab)[order]
        last = np.r_[prev[1:] != prev[:-1], True]
        self.successor = np.full(vocab, int(np.argmax(counts)), dtype=np.int64)
        self.successor[prev[last]] = (codes % vocab)[order][last]

    def greedy(self, last_token: int, steps: int) -> list[int]:
        out = []
        token = last_token
        for _ in range(steps):
            token = int(self.successor[token])
            out.append(token)
        return out

    def cross_entropy(self, windows: Sequence[Sequence[int]]) -> float:
        """Nats per predicted token on `windows`, bigram interpolated with the unigram.

        The interpolation weight is picked on these very tokens from a grid
        (see acepilot.training.tiny.ngram_baselines), which flatters the baseline.
        """
        from acepilot.training.tiny import ngram_baselines

        # ngram_baselines only calls np.asarray on it: an array is as good as a list
        train = cast("Sequence[int]", self.train)
        return ngram_baselines(train, windows, self.vocab)["bigram"]


def split_trailing_whitespace(prefix: str) -> tuple[str, str]:
    """(prompt, heal): the prefix cut back to its last non-blank character, and the cut.

    Why: byte-level BPE tokenizers (GPT-2, CodeGen, acepilot-tiny) glue a
    run of whitespace to the word after it (`"\\n       "` + `" return"`),
    so a prompt that ends in whitespace ends in a token the model has almost
    never seen at that place, and it writes nonsense. Cutting the prompt back
    and requiring the model to write the cut whitespace first ("token
    healing" for whitespace) asks the question the model was trained on.
    """
    cut = len(prefix.rstrip())
    return prefix[:cut], prefix[cut:]


class HealedLine:
    """Accumulates generated text; decides when the rest of the line is known.

    The text must begin with `heal` (the whitespace cut from the prompt); the
    line ends at the first newline after it. A model that writes other
    whitespace first (a wrong indentation) predicts nothing.
    """

    def __init__(self, heal: str) -> None:
        self.heal = heal
        self.text = ""

    def add(self, delta: str) -> bool:
        """Add generated text; True when no more is needed."""
        self.text += delta
        if len(self.text) < len(self.heal):
            return not self.heal.startswith(self.text)
        return not self.text.startswith(self.heal) or "\n" in self.text[len(self.heal) :]

    def line(self) -> str:
        if not self.text.startswith(self.heal):
            return ""
        return self.text[len(self.heal) :].split("\n", 1)[0]


def bigram_predictor(
    model: BigramModel, tokenizer: Any, max_tokens: int = 32, *, heal_whitespace: bool = True
) -> Predictor:
    """Greedy bigram continuation of the prompt's last token, to the end of the line.

    `tokenizer` is a `tokenizers.Tokenizer` (encode(...).ids, decode(ids)).
    The same whitespace healing as the model's predictor, so both answer the
    same question.
    """

    def predict(prefix: str) -> str:
        prompt, heal = split_trailing_whitespace(prefix) if heal_whitespace else (prefix, "")
        ids = tokenizer.encode(prompt[-200:]).ids if prompt else []
        if not ids:
            return ""
        # the prompt's last token may be half a word: decode it with its continuation
        head = tokenizer.decode([ids[-1]])
        state = HealedLine(heal)
        generated: list[int] = []
        token = ids[-1]
        shown = 0
        for _ in range(max_tokens + 4):
            token = int(model.successor[token])
            generated.append(token)
            text: str = tokenizer.decode([ids[-1], *generated])
            text = text[len(head) :] if text.startswith(head) else text
            if state.add(text[shown:]):
                break
            shown = len(text)
        return state.line()

    return predict


def engine_predictor(
    engine: Engine, max_tokens: int = 48, *, heal_whitespace: bool = True
) -> Predictor:
    """The served model, greedy, stopped at the end of the line (whitespace healed)."""
    import threading

    from acepilot.server.engine import GenerationParams

    params = GenerationParams(max_new_tokens=max_tokens + 4)

    def predict(prefix: str) -> str:
        prompt, heal = split_trailing_whitespace(prefix) if heal_whitespace else (prefix, "")
        state = HealedLine(heal)
        done = threading.Event()

        def on_token(delta: str) -> None:
            if state.add(delta):
                done.set()

        engine.generate(prompt, params, cancel=done, on_token=on_token)
        return state.line()

    return predict


class FimPredictor:
    """The served model with the text after the line in its prompt (fill-in-the-middle).

    The prompt is the model's FIM layout (`order` psm or spm) in token ids:
    each side tokenized on its own, as in training, the prefix cut from the
    left and the suffix from the right so that the three sentinels always
    fit. The middle ends at the model's end-of-text token or the newline.
    """

    def __init__(
        self,
        engine: Engine,
        sentinels: tuple[int, int, int],
        *,
        order: str = "psm",
        max_tokens: int = 48,
        suffix_tokens: int = 256,
    ) -> None:
        if order not in ("psm", "spm"):
            raise ValueError(f"order must be psm or spm, got {order!r}")
        self.engine, self.sentinels, self.order = engine, sentinels, order
        self.max_tokens, self.suffix_tokens = max_tokens, suffix_tokens

    def __call__(self, prefix: str, suffix: str) -> str:
        import threading

        from acepilot.server.engine import GenerationParams

        prompt, heal = split_trailing_whitespace(prefix)
        pre, suf, mid = self.sentinels
        suffix_ids = self.engine.encode(suffix)[: self.suffix_tokens] if suffix else []
        budget = self.engine.max_length - self.max_tokens - 8 - len(suffix_ids) - 3
        prefix_ids = self.engine.encode(prompt)[-budget:] if prompt and budget > 0 else []
        if self.order == "spm":
            ids = [pre, suf, *suffix_ids, mid, *prefix_ids]
        else:
            ids = [pre, *prefix_ids, suf, *suffix_ids, mid]
        state = HealedLine(heal)
        done = threading.Event()

        def on_token(delta: str) -> None:
            if state.add(delta):
                done.set()

        params = GenerationParams(max_new_tokens=self.max_tokens + 4)
        self.engine.generate(ids, params, cancel=done, on_token=on_token)
        return state.line()


# ---------------------------------------------------------------------------
# Scoring


@dataclass
class Scores:
    """Sums for one group of positions; `summary` gives the means."""

    n: int = 0
    exact: int = 0
    similarity: float = 0.0

    def add(self, prediction: str, target: str) -> None:
        self.n += 1
        self.exact += exact_match(prediction, target)
        self.similarity += edit_similarity(prediction, target)

    def summary(self) -> dict[str, float | int]:
        return {
            "n": self.n,
            "exact_match": self.exact / self.n if self.n else math.nan,
            "edit_similarity": self.similarity / self.n if self.n else math.nan,
        }


@dataclass
class PredictorReport:
    overall: Scores = field(default_factory=Scores)
    languages: dict[str, Scores] = field(default_factory=lambda: defaultdict(Scores))
    domains: dict[str, Scores] = field(default_factory=lambda: defaultdict(Scores))
    examples: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.overall.summary(),
            "languages": {k: v.summary() for k, v in sorted(self.languages.items())},
            "domains": {k: v.summary() for k, v in sorted(self.domains.items())},
        }


def evaluate(
    tasks: Sequence[LineTask],
    predictors: Mapping[str, Predictor | FimPredictor],
    *,
    progress: bool = True,
    keep_examples: int = 0,
) -> dict[str, PredictorReport]:
    """Run every predictor on every task; the first `keep_examples` predictions are kept."""
    from tqdm import tqdm

    reports = {name: PredictorReport() for name in predictors}
    for index, task in enumerate(
        tqdm(tasks, desc="line completion", unit="line", disable=not progress)
    ):
        for name, predict in predictors.items():
            if isinstance(predict, FimPredictor):
                prediction = predict(task.prefix, task.suffix)
            else:
                prediction = predict(task.prefix)
            report = reports[name]
            for scores in (
                report.overall,
                report.languages[task.language],
                report.domains[task.domain],
            ):
                scores.add(prediction, task.target)
            if index < keep_examples:
                report.examples.append(
                    {
                        "path": task.path,
                        "line": task.line,
                        "column": task.column,
                        "target": task.target,
                        "prediction": normalize(prediction),
                    }
                )
    return reports


# ---------------------------------------------------------------------------
# Perplexity of a built model


def onnx_token_losses(
    entry: ModelEntry, windows: Iterable[Sequence[int]], *, progress: bool = True
) -> tuple[float, int]:
    """Summed next-token cross-entropy (nats) and the count, through the built graph.

    One token per step with the KV cache, as the server decodes: the graph
    returns only the last position's logits, so this is also the only way.
    """
    from tqdm import tqdm

    from acepilot.server.build.graph_io import GraphStepper, ManifestLayout

    manifest = entry.manifest
    shape = ManifestLayout.of(manifest)  # any family: KV heads may be fewer than heads
    stepper = GraphStepper(entry.graph_path, shape, manifest["graph"]["kv_dtype"], "cpu")
    total, count = 0.0, 0
    windows = list(windows)
    bar = tqdm(total=sum(len(w) - 1 for w in windows), desc="perplexity", disable=not progress)
    for window in windows:
        if len(window) > shape.max_length:
            raise ValueError(f"window of {len(window)} tokens exceeds {shape.max_length}")
        for position in range(len(window) - 1):
            logits = stepper([int(window[position])], position).astype(np.float64)
            top = logits.max()
            log_z = top + math.log(float(np.exp(logits - top).sum()))
            total += log_z - float(logits[int(window[position + 1])])
            count += 1
        bar.update(len(window) - 1)
    bar.close()
    return total, count


def token_windows(ids: Sequence[int], seq_len: int, max_tokens: int) -> list[list[int]]:
    """Consecutive windows of `seq_len` tokens covering at most `max_tokens` predictions."""
    from acepilot.training.tiny import eval_windows

    return eval_windows(list(ids), seq_len, max_tokens)


# ---------------------------------------------------------------------------
# Reporting


def format_table(results: Mapping[str, Mapping[str, Any]], group: str | None = None) -> str:
    """A plain-text table: one row per predictor (and per group member when `group` is set)."""
    header = f"{'predictor':<22} {'group':<18} {'n':>5} {'exact':>7} {'edit sim':>9}"
    rows = [header, "-" * len(header)]
    for name, result in results.items():
        members = [("all", result)] if group is None else list(result.get(group, {}).items())
        for member, scores in members:
            rows.append(
                f"{name:<22} {member[:18]:<18} {scores['n']:>5} "
                f"{scores['exact_match']:>7.1%} {scores['edit_similarity']:>9.3f}"
            )
    return "\n".join(rows)


def add_parser(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Register `completion` (under `acepilot eval`)."""
    parser = subparsers.add_parser(
        "completion",
        help="line completion (exact match, edit similarity) and perplexity on held-out code",
        description=(
            "Pick N cursor positions (seeded) in held-out code files, let the model finish "
            "each line (greedy, stopped at the newline) and report exact match and edit "
            "similarity overall, per language and per domain (first folder under each given "
            "directory), beside a 'repeat the previous line' baseline and, with --bigram-train, "
            "a token bigram baseline. Perplexity is measured through the built graph."
        ),
    )
    parser.add_argument("model", help="registry model name (production version) or entry directory")
    parser.add_argument("paths", nargs="+", type=Path, help="held-out code files or directories")
    add_registry(parser)
    parser.add_argument("-n", "--positions", type=int, default=200, help="cursor positions (200)")
    parser.add_argument("--seed", type=int, default=0, help="position sampling seed (0)")
    parser.add_argument("--max-tokens", type=int, default=48, help="most tokens per line (48)")
    parser.add_argument(
        "--context-chars", type=int, default=4000, help="characters of prompt before the cursor"
    )
    parser.add_argument(
        "--perplexity-tokens",
        type=int,
        default=4096,
        help="held-out tokens for perplexity through the graph (0 = skip; 4096)",
    )
    parser.add_argument(
        "--bigram-train",
        type=Path,
        nargs="*",
        default=[],
        help="files/directories to train the bigram baseline on (with the model's tokenizer)",
    )
    parser.add_argument("--json", type=Path, help="also write the full results here")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(func=run_completion_eval)


def run_completion_eval(args: argparse.Namespace) -> int:
    from acepilot.server.engine import Engine
    from acepilot.server.errors import AcepilotError
    from acepilot.server.registry import Registry

    if args.positions < 1:
        raise AcepilotError("--positions must be at least 1")
    registry = Registry(args.registry)
    entry = registry.resolve(args.model)
    try:
        files = collect_files(args.paths)
        tasks = sample_tasks(files, args.positions, args.seed, context_chars=args.context_chars)
    except (FileNotFoundError, ValueError) as exc:
        raise AcepilotError(str(exc)) from None
    progress = not args.no_progress
    engine = Engine.load(entry)
    predictors: dict[str, Predictor] = {
        f"{entry.name} {entry.version}": engine_predictor(engine, args.max_tokens),
        "repeat previous line": repeat_previous_line,
    }
    bigram = None
    if args.bigram_train:
        ids = encode_files(engine, [path for _, path in collect_files(args.bigram_train)])
        bigram = BigramModel(ids, engine.vocab_size)
        predictors["bigram"] = bigram_predictor(bigram, engine.tokenizer)
    reports = evaluate(tasks, predictors, progress=progress)
    results: dict[str, Any] = {name: report.to_dict() for name, report in reports.items()}
    print(format_table(results))
    print()
    print(format_table(results, "languages"))
    print()
    print(format_table(results, "domains"))
    perplexity: dict[str, float] = {}
    if args.perplexity_tokens > 0:
        held_ids = encode_files(engine, [path for _, path in files])
        seq_len = min(256, entry.manifest["graph"]["max_length"])
        windows = token_windows(held_ids, seq_len, args.perplexity_tokens)
        total, count = onnx_token_losses(entry, windows, progress=progress)
        perplexity["model"] = math.exp(total / count)
        if bigram is not None:
            perplexity["bigram"] = math.exp(bigram.cross_entropy(windows))
        print(
            "\nperplexity per token on "
            f"{count} held-out tokens: "
            + ", ".join(f"{name} {value:.2f}" for name, value in perplexity.items())
        )
    if args.json:
        args.json.write_text(
            json.dumps({"line_completion": results, "perplexity": perplexity}, indent=2) + "\n"
        )
    return 0


def encode_files(engine: Engine, paths: Sequence[Path]) -> list[int]:
    """The files' tokens in one stream, each followed by EOS (when there is one)."""
    ids: list[int] = []
    for path in paths:
        try:
            text = path.read_bytes().decode("utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        ids.extend(engine.encode(text))
        if engine.eos_token_id is not None:
            ids.append(engine.eos_token_id)
    return ids


__all__ = [
    "BigramModel",
    "FimPredictor",
    "LineTask",
    "Predictor",
    "add_parser",
    "bigram_predictor",
    "collect_files",
    "edit_similarity",
    "engine_predictor",
    "evaluate",
    "exact_match",
    "format_table",
    "levenshtein",
    "onnx_token_losses",
    "repeat_previous_line",
    "sample_tasks",
]
