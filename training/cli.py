"""Sub-commands that the training side adds to `acepilot` (via the
`acepilot.commands` entry point, so `server` never imports `training`)."""

from __future__ import annotations

import argparse
import importlib
from typing import Any

TRAINING_COMMANDS: tuple[str, ...] = (
    "training.commands.train",
    "training.commands.demo",
    "training.commands.bootstrap",
    "training.commands.eval",
    "training.commands.gate",
    "training.commands.promote",
    "training.commands.pipeline",
)


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    for module_name in TRAINING_COMMANDS:
        importlib.import_module(module_name).register(subparsers)
