"""The server's settings: defaults, and validation of what the client sends.

Settings arrive from the editor (initializationOptions, workspace/configuration,
didChangeConfiguration) and are untrusted: every value is checked, and an
invalid one raises a ConfigError whose message names the setting
(`acepilot.maxNewTokens: ...`). The caller then keeps its previous valid
configuration: an update applies completely or not at all.

Keys are camelCase as in VS Code's settings (`acepilot.maxNewTokens`); an
update overlays the current configuration, and null restores a default.
Unknown keys are ignored (a newer client may send settings this server does
not know). The remote settings may also come nested, as VS Code writes
`acepilot.remote.fim`: `{"remote": {"url", "token", "model", "fim"}}` is the
same as `remoteUrl`, `remoteToken`, `remoteModel`, `remoteFim`.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

SECTION = "acepilot"
BACKENDS = ("local", "remote")
FIM_MODES = ("auto", "on", "off")
NESTED = {
    "remote": {
        "url": "remoteUrl",
        "token": "remoteToken",
        "model": "remoteModel",
        "fim": "remoteFim",
    }
}
DEFAULT_DISABLED = {"plaintext": False, "markdown": False, "scminput": False}


class ConfigError(ValueError):
    """One or more invalid settings; `problems` has one message per setting."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Config:
    """Validated settings (see the module docstring; docs/lsp.md lists them)."""

    enable: bool = True  # completions at all
    model: str | None = None  # registry name or entry directory; None: $ACEPILOT_MODEL / only one
    registry: str | None = None  # registry directory; None: $ACEPILOT_REGISTRY / default
    backend: str = "local"  # "local": the engine in-process; "remote": an OpenAI-compatible URL
    remote_url: str | None = None  # e.g. http://gpu-box:8000/v1
    remote_token: str | None = field(default=None, repr=False)  # bearer token; never logged
    remote_model: str | None = None  # the "model" field of remote requests
    remote_fim: str = "auto"  # send `suffix`: "auto" (GET /v1/models says), "on", "off"
    telemetry: bool = True  # forward shown/accepted counts to the remote (team) server
    kv_reuse: bool = True  # local engine: one KV cache per document (off: every prompt cold)
    max_new_tokens: int = 64
    temperature: float = 0.0  # 0 is greedy
    top_p: float = 1.0
    context_tokens: int = 1024  # prompt budget: header + snippets + prefix (+ FIM suffix)
    snippet_tokens: int = 256  # of which snippets from other open documents (0: none)
    workspace_context: bool = True  # index the workspace folders for cross-file context
    workspace_context_tokens: int = (
        384  # of which workspace context (0: none; see lsp/workspace.py)
    )
    idle_prefill_ms: int = 300  # pause before prefilling the next prompt's head (local; 0: off)
    max_lines: int = 16  # most lines of a multi-line completion
    debounce_ms: int = 40  # wait for typing to pause before asking the model
    timeout_ms: int = 10_000  # generation deadline (0: none)
    threads: int | None = None  # onnxruntime intra-op threads (at most the cores); None: all
    languages: Mapping[str, bool] = field(default_factory=lambda: dict(DEFAULT_DISABLED))

    def enabled_for(self, language_id: str) -> bool:
        return self.enable and self.languages.get(language_id, True)

    def backend_key(self) -> tuple[Any, ...]:
        """Settings whose change needs a new backend (reload the model)."""
        return (
            self.backend,
            self.model,
            self.registry,
            self.threads,
            self.remote_url,
            self.remote_token,
            self.remote_model,
            self.remote_fim,
            self.telemetry,
        )

    def public(self) -> dict[str, Any]:
        """For logs and status: the settings without the token."""
        values = dataclasses.asdict(self)
        values["remote_token"] = "***" if self.remote_token else None
        return values


# camelCase key -> (field name, checker); a checker returns the value or raises ValueError.
def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"must be true or false, got {_show(value)}")
    return value


def _int_range(low: int, high: int) -> Any:
    def check(value: Any) -> int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"must be an integer, got {_show(value)}")
        if not low <= value <= high:
            raise ValueError(f"must be between {low} and {high}, got {value}")
        return value

    return check


def _float_range(low: float, high: float, *, open_low: bool = False) -> Any:
    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"must be a number, got {_show(value)}")
        number = float(value)
        below = number <= low if open_low else number < low
        if math.isnan(number) or below or number > high:
            bracket = "(" if open_low else "["
            raise ValueError(f"must be in {bracket}{low}, {high}], got {value}")
        return number

    return check


def _text(max_length: int = 4096) -> Any:
    def check(value: Any) -> str:
        if not isinstance(value, str):
            raise ValueError(f"must be a string, got {_show(value)}")
        if not value.strip():
            raise ValueError("must not be empty (use null for the default)")
        if len(value) > max_length or "\0" in value:
            raise ValueError("is not a plausible value (too long, or a NUL character)")
        return value

    return check


def _threads(value: Any) -> int:
    """1..1024, then at most the machine's cores: more threads only contend (1,024 of them
    made one completion take 13 s), and settings synced from a bigger machine still work."""
    number: int = _int_range(1, 1024)(value)
    return min(number, os.cpu_count() or 1)


def _backend(value: Any) -> str:
    if value not in BACKENDS:
        raise ValueError(f"must be one of {', '.join(BACKENDS)}, got {_show(value)}")
    return str(value)


def _fim(value: Any) -> str:
    if value not in FIM_MODES:
        raise ValueError(f"must be one of {', '.join(FIM_MODES)}, got {_show(value)}")
    return str(value)


def _url(value: Any) -> str:
    text: str = _text()(value)
    parts = urlsplit(text.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"must be an http:// or https:// URL, got {_show(value)}")
    return text.strip()


def _token(value: Any) -> str:
    text: str = _text()(value)
    if any(char in text for char in "\r\n"):
        raise ValueError("must be one line")  # it becomes an HTTP header
    return text.strip()


def _languages(value: Any) -> dict[str, bool]:
    if not isinstance(value, Mapping):
        raise ValueError(f'must be an object such as {{"markdown": false}}, got {_show(value)}')
    result = dict(DEFAULT_DISABLED)
    for key, enabled in value.items():
        if not isinstance(key, str) or not isinstance(enabled, bool):
            raise ValueError(
                f"must map language ids to true/false, got {_show(key)}: {_show(enabled)}"
            )
        result[key] = enabled
    return result


CHECKS: dict[str, tuple[str, Any]] = {
    "enable": ("enable", _bool),
    "model": ("model", _text()),
    "registry": ("registry", _text()),
    "backend": ("backend", _backend),
    "remoteUrl": ("remote_url", _url),
    "remoteToken": ("remote_token", _token),
    "remoteModel": ("remote_model", _text(256)),
    "remoteFim": ("remote_fim", _fim),
    "telemetry": ("telemetry", _bool),
    "kvReuse": ("kv_reuse", _bool),
    "maxNewTokens": ("max_new_tokens", _int_range(1, 2048)),
    "temperature": ("temperature", _float_range(0.0, 2.0)),
    "topP": ("top_p", _float_range(0.0, 1.0, open_low=True)),
    "contextTokens": ("context_tokens", _int_range(16, 32768)),
    "snippetTokens": ("snippet_tokens", _int_range(0, 16384)),
    "workspaceContext": ("workspace_context", _bool),
    "workspaceContextTokens": ("workspace_context_tokens", _int_range(0, 16384)),
    "idlePrefillMs": ("idle_prefill_ms", _int_range(0, 60_000)),
    "maxLines": ("max_lines", _int_range(1, 500)),
    "debounceMs": ("debounce_ms", _int_range(0, 5000)),
    "timeoutMs": ("timeout_ms", _int_range(0, 600_000)),
    "threads": ("threads", _threads),
    "languages": ("languages", _languages),
}


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def settings_section(raw: Any) -> Any:
    """The `acepilot` settings inside what a client sent.

    Accepted shapes: the settings themselves, `{"acepilot": {...}}` (VS Code's
    didChangeConfiguration), or `{"settings": {...}}` (the Python tools
    extension template's initializationOptions).
    """
    if isinstance(raw, Mapping):
        if isinstance(raw.get(SECTION), Mapping):
            return raw[SECTION]
        if isinstance(raw.get("settings"), Mapping):
            return settings_section(raw["settings"])
    return raw


def flatten(raw: Mapping[str, Any]) -> dict[str, Any]:
    """`{"remote": {"fim": "on"}}` -> `{"remoteFim": "on"}` (see the module docstring)."""
    flat = dict(raw)
    for group, keys in NESTED.items():
        nested = flat.pop(group, None)
        if isinstance(nested, Mapping):
            for key, value in nested.items():
                if key in keys and keys[key] not in flat:
                    flat[keys[key]] = value
    return flat


def update(base: Config, raw: Any) -> Config:
    """`base` overlaid with the settings in `raw`; ConfigError names every bad one."""
    if raw is None:
        return base
    if not isinstance(raw, Mapping):
        raise ConfigError([f"{SECTION}: settings must be an object, got {_show(raw)}"])
    raw = flatten(raw)
    changes: dict[str, Any] = {}
    problems: list[str] = []
    defaults = Config()
    for key, value in raw.items():
        if key not in CHECKS:
            continue
        name, check = CHECKS[key]
        if value is None:
            changes[name] = getattr(defaults, name)
            continue
        try:
            changes[name] = check(value)
        except ValueError as exc:
            problems.append(f"{SECTION}.{key}: {exc}")
    if problems:
        raise ConfigError(problems)
    config = dataclasses.replace(base, **changes)
    if config.backend == "remote" and not config.remote_url:
        raise ConfigError([f"{SECTION}.remoteUrl: required when {SECTION}.backend is remote"])
    if config.snippet_tokens >= config.context_tokens:
        raise ConfigError(
            [
                f"{SECTION}.snippetTokens: must be below {SECTION}.contextTokens ({config.context_tokens})"
            ]
        )
    return config
