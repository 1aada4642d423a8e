"""Command-line options shared by Acepilot's commands (one definition, one help text each)."""

from __future__ import annotations

import argparse
from pathlib import Path

REGISTRY_HELP = (
    "registry directory (default: $ACEPILOT_REGISTRY or ~/.local/share/acepilot/registry)"
)
MODEL_HELP = (
    "registry name (its production version) or an entry directory "
    "(default: $ACEPILOT_MODEL, else the registry's only model)"
)


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def non_negative_float(text: str) -> float:
    """argparse type: a finite number >= 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0.0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text}")
    return value


def add_registry(parser: argparse.ArgumentParser, **extra: object) -> None:
    """--registry DIR (extra: argparse keywords such as default=argparse.SUPPRESS)."""
    parser.add_argument("--registry", type=Path, help=REGISTRY_HELP, **extra)  # type: ignore[arg-type]


def add_model(parser: argparse.ArgumentParser, help: str = MODEL_HELP) -> None:
    parser.add_argument("--model", help=help)
