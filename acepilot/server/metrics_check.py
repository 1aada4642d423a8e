"""Non-finite numbers in measured results: a NaN must fail a check, never pass it.

Every comparison with NaN is false, so `error > threshold` lets a NaN error
through; and `json.dumps` writes it as a bare `NaN`, which strict JSON
parsers reject. The parity gate, the evaluation gate and the registry's
manifests use these helpers to treat NaN and infinity as failures.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any


def nonfinite_fields(value: Any, prefix: str = "") -> list[tuple[str, float]]:
    """(dotted path, value) of every NaN or infinite float inside `value`.

    Walks dicts, lists and tuples without recursion (depth is not bounded by the
    Python stack); booleans and integers are always finite.
    """
    found: list[tuple[str, float]] = []
    stack: list[tuple[str, Any]] = [(prefix, value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, Mapping):
            stack.extend((f"{path}.{key}" if path else str(key), v) for key, v in item.items())
        elif isinstance(item, list | tuple):
            stack.extend((f"{path}[{index}]", v) for index, v in enumerate(item))
        elif (isinstance(item, float) or _is_numpy_float(item)) and not math.isfinite(item):
            found.append((path, float(item)))
    return sorted(found)


def _is_numpy_float(item: Any) -> bool:
    """numpy scalars without importing numpy (the serving side may not need it here)."""
    return type(item).__module__ == "numpy" and hasattr(item, "dtype") and item.dtype.kind == "f"


def nonfinite_failures(results: Mapping[str, Any]) -> list[str]:
    """One failure message per NaN or infinite metric (empty when all are finite)."""
    return [
        f"{path} is not a finite number ({value}): the check cannot pass on it"
        for path, value in nonfinite_fields(results)
    ]


def require_finite(results: Mapping[str, Any], what: str = "results") -> None:
    """Raise ValueError naming every NaN or infinite metric in `results`."""
    failures = nonfinite_failures(results)
    if failures:
        raise ValueError(f"{what}: " + "; ".join(failures))


def reject_constant(constant: str) -> float:
    """`json.loads(..., parse_constant=reject_constant)`: strict JSON has no NaN/Infinity."""
    raise ValueError(f"{constant} is not strict JSON (a NaN or infinite number)")
