"""NaN and infinity fail checks: the helpers, and the parity gate on a real tiny model.

A NaN never exceeds a threshold (every comparison with it is false), so a check
written `if error > limit: fail` passes it. The parity gate is run here with a
reference-exact step function that returns NaN for one token's logits.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from acepilot.server.build.parity import EVAL_TEXT, check_parity
from acepilot.server.metrics_check import (
    nonfinite_failures,
    nonfinite_fields,
    reject_constant,
    require_finite,
)


def test_nonfinite_fields_are_found_by_path() -> None:
    results = {
        "relative_logit_error": math.nan,
        "greedy_agreement": 1.0,
        "ok": True,
        "count": 3,
        "nested": {"values": [0.5, math.inf, np.float32("nan")], "fine": 0.0},
    }
    assert [path for path, _ in nonfinite_fields(results)] == [
        "nested.values[1]",
        "nested.values[2]",
        "relative_logit_error",
    ]
    assert nonfinite_failures({"a": 1.0, "b": [2, 3]}) == []
    with pytest.raises(ValueError, match="relative_logit_error is not a finite number"):
        require_finite(results, "parity")
    with pytest.raises(ValueError, match="not strict JSON"):
        reject_constant("NaN")


def test_deep_nesting_does_not_overflow_the_stack() -> None:
    deep: object = math.nan
    for _ in range(10_000):
        deep = [deep]
    assert len(nonfinite_fields(deep)) == 1


def torch_step(model: object) -> object:
    """The PyTorch model as a StepFn (KV cache kept between calls): an exact artifact."""
    import torch

    state: dict[str, object] = {"past": None}

    def step(ids: Sequence[int], cached: int) -> np.ndarray:
        if cached == 0:
            state["past"] = None
        with torch.no_grad():
            out = model(  # type: ignore[operator]
                torch.tensor([list(ids)], dtype=torch.long),
                past_key_values=state["past"],
                use_cache=True,
            )
        state["past"] = out.past_key_values
        return np.asarray(out.logits[0, -1].float().numpy())

    return step


def test_a_nan_parity_metric_fails_the_parity_gate(random_codegen_dir: Path) -> None:
    """One token's logits are NaN: relative logit error and perplexity become NaN, which
    no threshold comparison catches; the gate must fail and say why."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(random_codegen_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(random_codegen_dir)
    exact = torch_step(model)

    def encode(text: str) -> list[int]:
        return list(tokenizer(text)["input_ids"])

    def broken(ids: Sequence[int], cached: int) -> np.ndarray:
        logits = exact(ids, cached)  # type: ignore[operator]
        if cached == 60:  # one position of the held-out text
            logits = logits.copy()
            logits[7] = np.nan
        return np.asarray(logits)

    report = check_parity("int4", model, broken, encode, 256, eval_text=EVAL_TEXT[:800])
    assert math.isnan(report.results["relative_logit_error"])
    assert not report.passed
    assert any("relative_logit_error is not a finite number" in f for f in report.failures)
    # the step is otherwise exact: the NaN is the only reason it fails
    assert all("is not a finite number" in f for f in report.failures), report.failures
