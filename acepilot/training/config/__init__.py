"""Overrides for the training jobs, the nanoGPT way (its `configurator.py`).

Each job (corpus, finetune) has a flat dataclass of commented defaults. A run
is that default, then plain-Python config files from this folder (or any path)
in order, then `--key=value` arguments. Every override must name an existing
key and keep the default's type: a typo or a string where a number belongs
fails before any work starts. The files in this folder are examples a team
copies; they are plain assignments, so they can hold comments that say why.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import re
import runpy
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

from acepilot.server.errors import AcepilotError

CONFIG_DIR = Path(__file__).resolve().parent

C = TypeVar("C")
FIELD_COMMENT = re.compile(r"^\s+(\w+): [^#]*#\s*(.*)$")


class ConfigError(AcepilotError):
    """An override names no setting, or has the wrong type."""


def _coerce(key: str, value: Any, default: Any) -> Any:
    """Check the nanoGPT rule (same type as the default), with the few widenings
    a command line needs: an int where a float belongs, a bare word for a string,
    a comma list for a list."""
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
    elif isinstance(default, float):
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(default, str):
        return value if isinstance(value, str) else str(value)
    elif isinstance(default, list | tuple):
        if isinstance(value, str):
            value = [part for part in value.split(",") if part]
        if isinstance(value, list | tuple):
            return type(default)(value)
    elif isinstance(default, dict):
        if isinstance(value, dict):
            return value
    elif default is None:
        return value
    raise ConfigError(
        f"setting {key!r} must be of type {type(default).__name__} like its default "
        f"({default!r}), got {value!r}"
    )


def _parse_value(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text  # a bare word: a path, a model name


def resolve_config_file(name: str) -> Path:
    """A path as given, or a file of this folder by name (`vue` -> config/vue.py)."""
    path = Path(name)
    if path.is_file():
        return path
    for candidate in (CONFIG_DIR / name, CONFIG_DIR / f"{name}.py"):
        if candidate.is_file():
            return candidate
    raise ConfigError(f"config file {name!r} not found (nor in {CONFIG_DIR})")


def configure(defaults: C, settings: Sequence[str] = ()) -> C:
    """Return `defaults` with config files and `--key=value` overrides applied, in order."""
    assert dataclasses.is_dataclass(defaults) and not isinstance(defaults, type)
    values = dataclasses.asdict(defaults)
    for item in settings:
        if item.startswith("--"):
            key, sep, text = item[2:].partition("=")
            key = key.replace("-", "_")
            if key not in values:
                raise ConfigError(f"unknown setting {key!r}; known: {', '.join(sorted(values))}")
            # `--flag` alone switches a boolean on, as a command line reader expects
            value = _parse_value(text) if sep else True
            values[key] = _coerce(key, value, getattr(defaults, key))
        else:
            path = resolve_config_file(item)
            assigned = {
                k: v
                for k, v in runpy.run_path(str(path)).items()
                if not k.startswith("_") and not callable(v) and not isinstance(v, type(ast))
            }
            for key, value in assigned.items():
                if key not in values:
                    raise ConfigError(f"{path}: unknown setting {key!r}")
                values[key] = _coerce(key, value, getattr(defaults, key))
    return dataclasses.replace(defaults, **values)


def comments(cls: type) -> dict[str, str]:
    """The trailing comment of each field in the dataclass's source: its help text."""
    found = {}
    for line in inspect.getsource(cls).splitlines():
        match = FIELD_COMMENT.match(line)
        if match:
            found[match.group(1)] = match.group(2).strip()
    return found


def add_settings(parser: argparse.ArgumentParser, defaults: Any) -> None:
    """Config files as positionals and one `--key=value` option per setting, so
    that argparse shows them all in --help (with the comment of the default)."""
    parser.add_argument(
        "config_files",
        nargs="*",
        metavar="CONFIG",
        help="config files (path or name in acepilot/training/config/)",
    )
    notes = comments(type(defaults))
    group = parser.add_argument_group("settings (nanoGPT style: --key=value, type-checked)")
    for f in dataclasses.fields(defaults):
        default = getattr(defaults, f.name)
        group.add_argument(
            f"--{f.name}",
            dest=f"setting_{f.name}",
            metavar="V",
            nargs="?",
            const="True",  # a bare --flag switches a boolean on
            help=f"{notes.get(f.name, '')} (default: {default!r})",
        )


def settings_from(args: argparse.Namespace, defaults: Any) -> list[str]:
    """The files, then the given --key=value options, for configure()."""
    settings = list(args.config_files)
    for f in dataclasses.fields(defaults):
        value = getattr(args, f"setting_{f.name}", None)
        if value is not None:
            settings.append(f"--{f.name}={value}")
    return settings


def write_config_file(config: Any, path: Path, header: str = "") -> Path:
    """The settings as a config file of plain assignments: what the ranks read
    (launchers' own flags such as torchrun's --nproc-per-node would swallow
    abbreviated --key=value arguments) and a record of the run."""
    notes = comments(type(config))
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    for f in dataclasses.fields(config):
        note = f"  # {notes[f.name]}" if f.name in notes else ""
        lines.append(f"{f.name} = {getattr(config, f.name)!r}{note}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path
