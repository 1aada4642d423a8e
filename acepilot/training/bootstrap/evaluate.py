"""Stage 7, evaluate: held-out line completion and perplexity, against baselines, in one run.

On the held-out packages (never seen by the tokenizer or the model):

- line completion through the built int8 artifact (acepilot/training/eval/line_completion.py):
  the same number of cursor positions per language; the model with the text
  before the cursor only, and with the text after the line as a FIM suffix in
  both orders the model was trained on (PSM and SPM: `best_fim_order` picks
  the one serving uses);
  a token bigram model (same tokenizer, trained on the training rows) and
  "repeat the previous line";
- perplexity per token (PyTorch, windows of the training length) for the model
  and the bigram, overall and per language, and a check through the ONNX graph.

The run refuses to publish a model that does not beat both baselines
(`beats_baselines`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from acepilot.training import codegen, perplexity
from acepilot.training.bootstrap.config import MODEL_NAME, BootstrapConfig
from acepilot.training.bootstrap.data import TOKENS
from acepilot.training.bootstrap.sources import SourceFile, Sources, read_code
from acepilot.training.machine import torch_threads
from acepilot.training.tokenizer import load_tokenizer

if TYPE_CHECKING:
    from acepilot.server.registry import ModelEntry

PREFIX_ONLY = MODEL_NAME
WITH_SUFFIX = f"{MODEL_NAME} + suffix (FIM)"  # prefix-suffix-middle order
WITH_SUFFIX_SPM = f"{MODEL_NAME} + suffix (FIM, SPM)"  # suffix-prefix-middle order
FIM_PREDICTORS = {"psm": WITH_SUFFIX, "spm": WITH_SUFFIX_SPM}
PREVIOUS = f"previous {MODEL_NAME} (shipped)"  # the model a new one would replace
BASELINES = ("bigram", "repeat previous line")
SUFFIX_CHARS = 1500

# Prompts whose completions go into the record (and the docs): generated, never edited.
# (language, text before the cursor, text after it)
SHOWCASE: tuple[tuple[str, str, str], ...] = (
    (
        "python",
        "import os\n\n\ndef find_python_files(root):\n"
        '    """Return the paths of the Python files under root, sorted."""\n'
        "    paths = []\n    for dirpath, dirnames, filenames in os.walk(root):\n"
        '        for name in filenames:\n            if name.endswith(".py"):\n'
        "                paths.append(",
        "\n    return sorted(paths)\n",
    ),
    (
        "python",
        "def add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n    return a - b\n\n\n"
        "def mul(a, b):\n    return a ",
        "\n",
    ),
    (
        "javascript",
        "function readConfig(path) {\n  const text = fs.readFileSync(path, ",
        "\n  return JSON.parse(text);\n}\n",
    ),
    (
        "go",
        "func (s *Stack) Pop() (int, bool) {\n\tif len(s.items) == 0 {\n\t\treturn ",
        "\n\t}\n\titem := s.items[len(s.items)-1]\n\ts.items = s.items[:len(s.items)-1]\n"
        "\treturn item, true\n}\n",
    ),
    (
        "rust",
        "fn parse_port(text: &str) -> Result<u16, String> {\n    text.trim()\n        .parse::<u16>()",
        "\n}\n",
    ),
)


def by_language(files: Sequence[SourceFile]) -> dict[str, list[SourceFile]]:
    out: dict[str, list[SourceFile]] = {}
    for file in files:
        out.setdefault(file.language, []).append(file)
    return dict(sorted(out.items()))


def line_tasks(config: BootstrapConfig, held_out: Sequence[SourceFile]) -> list[Any]:
    """The same number of positions in every language (seeded), labelled by package."""
    from acepilot.training.eval.line_tasks import sample_tasks

    groups = by_language(held_out)
    per_language = max(1, config.eval_positions // max(1, len(groups)))
    tasks: list[Any] = []
    for language, files in groups.items():
        picked = sample_tasks(
            [(Path("/"), f.path) for f in files],
            per_language,
            config.seed,
            context_chars=config.eval_context_chars,
            suffix_chars=SUFFIX_CHARS,
        )
        relabel = {f.path.as_posix().lstrip("/"): f for f in files}
        tasks.extend(
            dataclasses.replace(
                task,
                path=relabel[task.path].relative,
                language=language,
                domain=relabel[task.path].package,
            )
            for task in picked
        )
    return tasks


def perplexities(
    config: BootstrapConfig,
    sources: Sources,
    checkpoint: Path,
    bigram: Any,
    entry: ModelEntry,
    progress: bool,
) -> dict[str, Any]:
    """Per-token perplexity of the model (PyTorch) and the bigram on the same windows."""
    tokenizer = load_tokenizer(checkpoint)
    eos = tokenizer.eos_token_id
    assert isinstance(eos, int)
    per_language_ids = {
        language: perplexity.token_stream(tokenizer, [read_code(f.path) or "" for f in files], eos)
        for language, files in by_language(sources.held_out).items()
    }
    share = config.perplexity_tokens // max(1, len(per_language_ids))
    windows = []
    held_ids: list[int] = []
    for ids in per_language_ids.values():
        held_ids.extend(ids)
        windows.extend(perplexity.token_windows(ids, config.seq_len, share))
    with torch_threads():
        model = codegen.load_model(checkpoint)
        model_loss = perplexity.model_loss(model, windows)
        per_language = {}
        for language, ids in per_language_ids.items():
            lang_windows = perplexity.token_windows(ids, config.seq_len, share)
            per_language[language] = {
                "model": math.exp(perplexity.model_loss(model, lang_windows)),
                "bigram": math.exp(bigram.cross_entropy(lang_windows)),
                "tokens": sum(len(w) - 1 for w in lang_windows),
            }
        onnx_windows = perplexity.token_windows(
            held_ids, min(256, config.seq_len), config.onnx_perplexity_tokens
        )
        torch_onnx_loss = perplexity.model_loss(model, onnx_windows)
    baselines = bigram.baselines(windows)
    bigram_loss = baselines["bigram"]
    onnx_total, onnx_count = perplexity.onnx_token_losses(entry, onnx_windows, progress=progress)
    predicted = sum(len(w) - 1 for w in windows)
    chars = len(tokenizer.decode([t for w in windows for t in w[1:]]))
    return {
        "tokens": predicted,
        "model": math.exp(model_loss),
        "bigram": math.exp(bigram_loss),
        "unigram": math.exp(baselines["unigram"]),
        "model_bits_per_char": model_loss * predicted / chars / math.log(2),
        "bigram_bits_per_char": bigram_loss * predicted / chars / math.log(2),
        "per_language": per_language,
        "onnx_check": {
            "tokens": onnx_count,
            "built_artifact": math.exp(onnx_total / onnx_count),
            "pytorch": math.exp(torch_onnx_loss),
        },
    }


def fim_sentinels(engine: Any) -> tuple[int, int, int]:
    ids = [engine.encode(token) for token in (TOKENS.prefix, TOKENS.suffix, TOKENS.middle)]
    if any(len(i) != 1 for i in ids):
        raise RuntimeError(f"the FIM tokens are not single tokens of the model: {ids}")
    return ids[0][0], ids[1][0], ids[2][0]


def showcase(engine: Any, sentinels: tuple[int, int, int]) -> list[dict[str, Any]]:
    """The showcase prompts, prefix only and with their suffix, with the wall time of each."""
    from acepilot.server.engine import GenerationParams

    out = []
    params = GenerationParams(max_new_tokens=48, stop=("\n\n",))
    for language, prefix, suffix in SHOWCASE:
        began = time.monotonic()
        plain = engine.generate(prefix, params).text
        plain_ms = (time.monotonic() - began) * 1000
        pre, suf, mid = sentinels
        ids = [pre, *engine.encode(prefix), suf, *engine.encode(suffix), mid]
        began = time.monotonic()
        infill = engine.generate(ids, params).text
        fim_ms = (time.monotonic() - began) * 1000
        out.append(
            {
                "language": language,
                "prefix": prefix,
                "suffix": suffix,
                "prefix_only": plain,
                "prefix_only_ms": round(plain_ms, 1),
                "with_suffix": infill,
                "with_suffix_ms": round(fim_ms, 1),
            }
        )
    return out


def previous_model(entry: ModelEntry) -> ModelEntry | None:
    """The shipped model in this checkout, when it is another model than `entry`.

    A new default model has to beat the one it replaces, on the same positions in
    the same run, prefix only (its suffix use is measured apart).
    """
    from acepilot.server.errors import RegistryError
    from acepilot.training.bootstrap.shipped import load_shipped

    try:
        previous = load_shipped()
    except (OSError, RegistryError, ValueError):
        return None
    same = all(  # the graph and, where a build has them, its external weights
        previous.files.get(name) == entry.files.get(name)
        for name in ("model.onnx", "model.onnx.data")
    )
    return None if same else previous


def evaluate(
    config: BootstrapConfig,
    sources: Sources,
    data_dir: Path,
    checkpoint: Path,
    entry: ModelEntry,
    out: Path,
    progress: bool,
) -> dict[str, Any]:
    """Held-out line completion and perplexity: the model against both baselines."""
    import numpy as np

    from acepilot.server.engine import Engine
    from acepilot.training.eval import line_predictors as lp
    from acepilot.training.eval.line_metrics import evaluate as score_lines

    began = time.monotonic()
    tokenizer = load_tokenizer(checkpoint)
    vocab = codegen.padded_vocab(len(tokenizer))
    train_ids = np.load(data_dir / "train.npy", mmap_mode="r").reshape(-1)
    bigram = perplexity.BigramModel(np.asarray(train_ids, dtype=np.int64), vocab)
    engine = Engine.load(entry)
    sentinels = fim_sentinels(engine)

    tasks = line_tasks(config, sources.held_out)
    predictors: dict[str, lp.Predictor | lp.FimPredictor] = {
        PREFIX_ONLY: lp.engine_predictor(engine, config.eval_max_tokens),
        WITH_SUFFIX: lp.FimPredictor(engine, sentinels, max_tokens=config.eval_max_tokens),
        WITH_SUFFIX_SPM: lp.FimPredictor(
            engine, sentinels, order="spm", max_tokens=config.eval_max_tokens
        ),
        "bigram": lp.bigram_predictor(bigram, engine.tokenizer, config.eval_max_tokens),
        "repeat previous line": lp.repeat_previous_line,
    }
    previous = previous_model(entry) if config.compare_shipped else None
    if previous is not None:
        predictors[PREVIOUS] = lp.engine_predictor(Engine.load(previous), config.eval_max_tokens)
    reports = score_lines(tasks, predictors, progress=progress, keep_examples=16)
    results = {
        "held_out": {
            language: {"files": len(files), "packages": sorted({f.package for f in files})}
            for language, files in by_language(sources.held_out).items()
        },
        "perplexity": perplexities(config, sources, checkpoint, bigram, entry, progress),
        "line_completion": {name: report.to_dict() for name, report in reports.items()},
        "showcase": showcase(engine, sentinels),
        "previous": {"version": previous.version, "digest": previous.digest}
        if previous is not None
        else None,
    }
    examples = {name: report.examples for name, report in reports.items()}
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n", "utf-8")
    (out / "examples.json").write_text(json.dumps(examples, indent=2) + "\n", "utf-8")
    return {"seconds": round(time.monotonic() - began, 1)}


def best_fim_order(results: dict[str, Any]) -> str | None:
    """The FIM order with the best exact match, when it is at least the prefix alone's.

    Servers use FIM whenever the manifest offers it, so it is offered only when
    the suffix measured no worse, and in the order that measured best (ties: PSM,
    the order most servers and peers write).
    """
    lines = results.get("line_completion", {})
    plain = lines.get(PREFIX_ONLY, {}).get("exact_match")
    scores = {
        order: lines[name]["exact_match"]
        for order, name in FIM_PREDICTORS.items()
        if isinstance(lines.get(name), dict) and "exact_match" in lines[name]
    }
    if plain is None or not scores:
        return None
    best = max(scores, key=lambda order: (scores[order], order == "psm"))
    return best if scores[best] >= plain else None


def beats_baselines(results: dict[str, Any]) -> list[str]:
    """What the model fails to beat (empty: it beats both baselines on every measure)."""
    failures = []
    lines = results.get("line_completion", {})
    model = lines.get(PREFIX_ONLY, {})
    for baseline in BASELINES:
        other = lines.get(baseline, {})
        for measure in ("exact_match", "edit_similarity"):
            if not model.get(measure, 0.0) > other.get(measure, 1.0):
                failures.append(
                    f"{measure} {model.get(measure)} vs {baseline} {other.get(measure)}"
                )
    perplexity = results.get("perplexity", {})
    if not perplexity.get("model", math.inf) < perplexity.get("bigram", 0.0):
        failures.append(
            f"perplexity {perplexity.get('model')} vs bigram {perplexity.get('bigram')}"
        )
    return failures


__all__ = [
    "PREVIOUS",
    "SHOWCASE",
    "beats_baselines",
    "best_fim_order",
    "evaluate",
    "line_tasks",
    "previous_model",
]
