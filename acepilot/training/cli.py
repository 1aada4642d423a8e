"""Sub-commands that the training side adds to `acepilot` (via the
`acepilot.commands` entry point, so `server` never imports `training`)."""

from __future__ import annotations

import argparse
import importlib
from typing import Any

TRAINING_COMMANDS: tuple[str, ...] = (
    "acepilot.training.commands.train",
    "acepilot.training.commands.demo",
    "acepilot.training.commands.bootstrap",
    "acepilot.training.commands.eval",
    "acepilot.training.commands.gate",
    "acepilot.training.commands.promote",
    "acepilot.training.commands.pipeline",
)


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    for module_name in TRAINING_COMMANDS:
        importlib.import_module(module_name).register(subparsers)
