"""Held-out log-likelihood as a guarded gate metric (acepilot/training/eval/loglik.py).

Real: the tiny trained CodeGen built to ONNX reads real files through its graph;
the per-file figure must be the graph's own cross-entropy (the same sum as the
perplexity path), divided by the characters predicted. Gate: a candidate that
gains on its target but loses likelihood on another language is refused, as the
Vue story's fine-tune should have been.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from engine_fixtures import built_tiny_entry, built_tiny_registry  # noqa: F401

from acepilot.server.registry import ModelEntry
from acepilot.training.eval.gate import GatePolicy, Results, decide
from acepilot.training.eval.indomain import completion_metrics
from acepilot.training.eval.loglik import file_log_likelihoods, sample_files
from acepilot.training.perplexity import onnx_token_losses

PYTHON = (
    "import os\n\n\ndef read(path):\n    with open(path) as handle:\n        return handle.read()\n"
)
JS = "function add(a, b) {\n  return a + b;\n}\n\nmodule.exports = { add };\n"


def write_tree(root: Path) -> list[tuple[Path, Path]]:
    files = {
        "app/one.py": PYTHON,
        "app/two.py": PYTHON.replace("read", "load"),
        "app/three.py": PYTHON * 3,
        "web/add.js": JS,
        "web/empty.js": "  \n",
        "notes.txt": "not code",
    }
    for relative, text in files.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text(text)
    return [(root, root / relative) for relative in sorted(files)]


def test_files_are_sampled_per_language_the_same_way_every_time(tmp_path: Path) -> None:
    files = write_tree(tmp_path)
    chosen = sample_files(files, 2, seed=0)
    assert chosen == sample_files(files, 2, seed=0)
    languages = [path.suffix for _, path in chosen]
    assert languages.count(".py") == 2 and languages.count(".js") == 2
    assert all(path.suffix != ".txt" for _, path in chosen)


def test_per_file_scores_are_the_graphs_cross_entropy_per_character(
    tmp_path: Path,
    built_tiny_entry: ModelEntry,  # noqa: F811
) -> None:
    files = write_tree(tmp_path)
    items = file_log_likelihoods(
        built_tiny_entry, sample_files(files, 10, seed=0), chars=80, progress=False
    )
    by_id = {item["id"].split("::")[1]: item for item in items}
    assert set(by_id) == {
        "app/one.py",
        "app/two.py",
        "app/three.py",
        "web/add.js",
    }  # blank file skipped
    assert by_id["web/add.js"]["language"] == "javascript"
    assert by_id["app/one.py"]["domain"] == "app"

    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(built_tiny_entry.tokenizer_path))
    head = (PYTHON * 3)[:80]
    start = built_tiny_entry.manifest["tokenizer"]["eos_token_id"]
    window = [start, *tokenizer.encode(head, add_special_tokens=False).ids]
    total, count = onnx_token_losses(built_tiny_entry, [window], progress=False)
    assert count == len(window) - 1
    assert by_id["app/three.py"]["log_likelihood"] == pytest.approx(-total / len(head))
    assert all(
        math.isfinite(item["log_likelihood"]) and item["log_likelihood"] < 0 for item in items
    )


def loglik_result(scores: dict[str, list[float]]) -> dict[str, object]:
    return {
        "items": [],
        "loglik_items": [
            {
                "id": f"{language}/f{i}",
                "language": language,
                "domain": "heldout",
                "log_likelihood": s,
            }
            for language, values in scores.items()
            for i, s in enumerate(values)
        ],
    }


def test_a_likelihood_drop_in_another_language_is_a_regression() -> None:
    rng = np.random.default_rng(0)
    base = {lang: list(-1.2 + 0.1 * rng.standard_normal(24)) for lang in ("vue", "rust", "go")}
    cand = {
        "vue": [s + 0.3 for s in base["vue"]],  # the target domain got much better
        "rust": [s - 0.2 for s in base["rust"]],  # ~22% more perplexity per character
        "go": [s - 0.01 for s in base["go"]],  # within the tolerance
    }
    base_metrics = completion_metrics(loglik_result(base))
    assert set(base_metrics) == {
        "completion:vue:log_likelihood",
        "completion:rust:log_likelihood",
        "completion:go:log_likelihood",
        "completion:domain:heldout:log_likelihood",
    }
    decision = decide(
        Results("cand", completion_metrics(loglik_result(cand)), settings_key="k"),
        Results("prod", base_metrics, settings_key="k"),
        GatePolicy(target="completion:vue:log_likelihood", delta=0.1),
    )
    rows = {row.metric: row for row in decision.rows}
    assert rows["completion:vue:log_likelihood"].verdict == "improved"
    assert rows["completion:rust:log_likelihood"].verdict == "regression"
    assert rows["completion:rust:log_likelihood"].epsilon == pytest.approx(0.03)
    assert rows["completion:go:log_likelihood"].verdict == "drop within epsilon"
    assert not decision.promote
    relaxed = GatePolicy(
        target="completion:vue:log_likelihood",
        delta=0.1,
        epsilon_per_metric={"completion:rust:log_likelihood": 0.5},
    )
    assert relaxed.epsilon_for("completion:rust:log_likelihood") == 0.5
    assert relaxed.epsilon_for("completion:go:log_likelihood") == 0.03
    assert relaxed.epsilon_for("humaneval:go") == 0.02
