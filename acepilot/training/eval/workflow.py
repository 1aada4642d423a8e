"""Glue shared by `acepilot gate` and `acepilot pipeline`: results for a model, the policy.

`results_for` accepts either an evaluation results directory (summary.json)
or a model; a model is evaluated into `work_dir/<label>` unless results made
there earlier for the same model files and settings can be reused (so a gate
rerun, or a resumed pipeline, does not evaluate the production model again).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from acepilot.server.errors import AcepilotError
from acepilot.server.registry import Registry
from acepilot.training.eval.gate import GatePolicy, Results, from_humaneval, merge
from acepilot.training.eval.humaneval import (
    SUMMARY,
    HumanEvalConfig,
    evaluate,
    load_summary,
    settings_key,
)
from acepilot.training.eval.indomain import (
    COMPLETION_FILE,
    CompletionSettings,
    completion_metrics,
    evaluate_completion,
)
from acepilot.training.eval.models import make_generator, resolve_entry

POLICIES = Path(__file__).with_name("policies")  # named policies: --policy default, vue


class GateError(AcepilotError):
    """Gate inputs are missing or not comparable."""


def label_of(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._@-]+", "_", text.strip("/").split("/")[-1]) or "model"


def is_results(path: str) -> bool:
    return (Path(path).expanduser() / SUMMARY).is_file() or (
        Path(path).name == SUMMARY and Path(path).is_file()
    )


def cached(out_dir: Path, model: str, registry: Registry, config: HumanEvalConfig) -> bool:
    """Results in out_dir were made for this model's files with these settings."""
    try:
        summary = load_summary(out_dir)
    except ValueError:
        return False
    if summary.get("settings_key") != settings_key(config):
        return False
    if model == "canonical":
        return summary["model"].get("kind") == "canonical"
    try:
        entry = resolve_entry(model, registry)
    except AcepilotError:
        return False
    if entry is None:
        return False  # checkpoints are cheap to mistake; evaluate again
    return bool(summary["model"].get("files") == entry.files)


def results_for(
    ref: str,
    label: str,
    registry: Registry,
    config: HumanEvalConfig,
    work_dir: Path,
    *,
    threads: int | None = None,
    completion: CompletionSettings | None = None,
) -> Results:
    """A results directory as given, or a model evaluated (or reused) in work_dir/label.
    With `completion`, in-domain line-completion metrics are added (see indomain.py)."""
    if is_results(ref):
        path = Path(ref).expanduser()
        path = path if path.is_dir() else path.parent
        try:
            summary = load_summary(path)
        except ValueError as exc:
            raise GateError(str(exc)) from None
        results = from_humaneval(summary, label, str(path))
        if completion is not None:
            file = path / COMPLETION_FILE
            if not file.is_file():
                raise GateError(f"{path}: no {COMPLETION_FILE}; evaluate the model instead")
            data = json.loads(file.read_text(encoding="utf-8"))
            if data.get("settings_key") != completion.key():
                raise GateError(f"{file}: made with other line-completion settings")
            results = merge(results, Results(label, completion_metrics(data)))
        return results
    out_dir = work_dir / label_of(label)
    if not cached(out_dir, ref, registry, config):
        generator = make_generator(ref, registry, threads)
        evaluate(generator, config, out_dir)
    results = from_humaneval(load_summary(out_dir), label, str(out_dir))
    if completion is not None:
        entry = resolve_entry(ref, registry)
        if entry is None:
            raise GateError(
                f"{ref}: in-domain completion is measured on a built model (registry entry); "
                "build the checkpoint first"
            )
        data = evaluate_completion(entry, completion, out_dir, progress=config.progress)
        results = merge(results, Results(label, completion_metrics(data)))
    return results


def production_ref(registry: Registry, name: str) -> str:
    """`production` -> NAME@vN (so the label says which version was compared)."""
    version = registry.production(name)
    if version is None:
        raise GateError(
            f"model {name!r} has no production version in {registry.root}: "
            "compare against an explicit model or results directory"
        )
    return f"{name}@{version}"


def load_policy(files: Sequence[str], overrides: Sequence[str]) -> GatePolicy:
    """Policy config files (plain assignments) then key=value overrides, type-checked."""
    from acepilot.training.config import ConfigError, configure

    named = [str(POLICIES / f"{f}.py") if (POLICIES / f"{f}.py").is_file() else f for f in files]
    settings = named + [o if o.startswith("--") else f"--{o}" for o in overrides]
    try:
        policy = configure(GatePolicy(), settings)
        policy.check()
    except (ConfigError, ValueError) as exc:
        raise GateError(f"gate policy: {exc}") from None
    return policy


def describe(results: Results) -> dict[str, Any]:
    return {"label": results.label, "source": results.source, "metrics": sorted(results.metrics)}


def dump(data: Any) -> str:
    return json.dumps(data, indent=2)
