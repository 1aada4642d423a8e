"""In-domain line completion as paired, per-position metrics for the gate.

`acepilot eval completion` (acepilot/training/eval/line_completion.py) reports
aggregates; a gate needs each position's result on both sides to pair them.
This module runs the same positions (`sample_tasks`, seeded) through the same
predictor (`engine_predictor`) and scoring (`exact_match`, `edit_similarity`)
and keeps every position's scores, as metrics

    completion:<language>:exact_match        completion:<language>:edit_similarity
    completion:domain:<domain>:exact_match   completion:domain:<domain>:edit_similarity
    completion:<language>:log_likelihood     completion:domain:<domain>:log_likelihood

Exact match is 0/1 (the gate pairs it with McNemar); edit similarity is
continuous (paired bootstrap), and so is the log-likelihood of held-out files
(nats per character, one item per file; loglik.py says why the gate needs it).
Results are written to `completion.json` in the
model's evaluation directory and reused when the model files and the settings
match. This is what makes a domain such as Vue, which HumanEval does not cover,
a gate target: `target = "completion:vue:exact_match"`.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from acepilot.server.registry import ModelEntry

COMPLETION_FILE = "completion.json"


@dataclass(frozen=True)
class CompletionSettings:
    paths: tuple[str, ...]
    positions: int = 200
    seed: int = 0
    max_tokens: int = 48
    context_chars: int = 4000
    loglik_files: int = 16  # per language, for the log-likelihood metric (loglik.py); 0 = off
    loglik_chars: int = 1000  # characters read from the start of each of those files

    def key(self) -> str:
        record = asdict(self)
        record["paths"] = [str(Path(p).expanduser().resolve()) for p in self.paths]
        return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:16]


def evaluate_completion(
    entry: ModelEntry, settings: CompletionSettings, out_dir: Path, *, progress: bool = True
) -> dict[str, Any]:
    """Every position's exact match and edit similarity for one engine model (cached)."""
    path = out_dir / COMPLETION_FILE
    if path.is_file():
        cached: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        if cached.get("settings_key") == settings.key() and cached.get("files") == entry.files:
            return cached
    from tqdm import tqdm

    from acepilot.server.engine import Engine
    from acepilot.training.eval.line_metrics import edit_similarity, exact_match
    from acepilot.training.eval.line_predictors import engine_predictor
    from acepilot.training.eval.line_tasks import collect_files, sample_tasks

    files = collect_files([Path(p) for p in settings.paths])
    tasks = sample_tasks(
        files, settings.positions, settings.seed, context_chars=settings.context_chars
    )
    predict = engine_predictor(Engine.load(entry), settings.max_tokens)
    items = []
    for task in tqdm(tasks, desc="line completion", unit="line", disable=not progress):
        prediction = predict(task.prefix)
        items.append(
            {
                "id": f"{task.path}:{task.line}:{task.column}",
                "language": task.language,
                "domain": task.domain,
                "exact_match": float(exact_match(prediction, task.target)),
                "edit_similarity": float(edit_similarity(prediction, task.target)),
            }
        )
    loglik_items = []
    if settings.loglik_files > 0:
        from acepilot.training.eval.loglik import file_log_likelihoods, sample_files

        chosen = sample_files(files, settings.loglik_files, settings.seed)
        loglik_items = file_log_likelihoods(entry, chosen, settings.loglik_chars, progress=progress)
    result = {
        "kind": "completion",
        "settings": asdict(settings),
        "settings_key": settings.key(),
        "files": entry.files,
        "items": items,
        "loglik_items": loglik_items,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    temp = path.with_suffix(".tmp")
    temp.write_text(json.dumps(result) + "\n", encoding="utf-8")
    os.replace(temp, path)
    return result


def completion_metrics(result: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Per-position (and per-file log-likelihood) scores grouped by language and domain."""
    metrics: dict[str, dict[str, float]] = defaultdict(dict)
    for item in result["items"]:
        for group in (item["language"], f"domain:{item['domain']}"):
            for measure in ("exact_match", "edit_similarity"):
                metrics[f"completion:{group}:{measure}"][item["id"]] = item[measure]
    for item in result.get("loglik_items", []):
        for group in (item["language"], f"domain:{item['domain']}"):
            metrics[f"completion:{group}:log_likelihood"][item["id"]] = item["log_likelihood"]
    return dict(metrics)


def summary_lines(metrics: dict[str, dict[str, float]], groups: Sequence[str] = ()) -> list[str]:
    lines = []
    for name, scores in sorted(metrics.items()):
        if groups and not any(g in name for g in groups):
            continue
        mean = sum(scores.values()) / len(scores)
        lines.append(f"{name}: {mean:.3f} over {len(scores)} positions")
    return lines
