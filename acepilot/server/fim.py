"""Fill-in-the-middle and repository formats, read once from a model's manifest.

The one parser of `manifest["tokenizer"]["fim"]` and `["repo"]` (the schema is
in docs/model-format.md; agreed in /work/notes/FIM_SCHEMA.md). The language
server's prompt stage and the team server both use it, through the registry's
model entry (`ModelEntry.fim`, `ModelEntry.repo_format`).

API (kept stable; the team server depends on it):

    FimFormat.from_manifest(value) -> FimFormat | None
        value: the manifest's "fim" field (None, or a dict). None when the model
        has no fill-in-the-middle; a malformed value is treated the same way (a
        model served without FIM is slower to help, never wrong).
    FimFormat.render(prefix, suffix) -> str
        The prompt for the serving order: PSM = prefix+P+suffix+S+middle,
        SPM = prefix+suffix+S+middle+P (the StarCoder/santacoder variant).
    FimFormat.stop -> tuple[str, ...]
        Token strings that end the middle (the engine stops there; post-processing
        never shows them).
    RepoFormat.from_manifest(value) -> RepoFormat | None
    RepoFormat.render_file(path, content) -> str    # file_sep + path + "\\n" + content

The manifest is untrusted input: every token is a bounded string, orders are
one of psm/spm, and a legacy manifest with only prefix/suffix/middle means PSM.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

PSM = "psm"
SPM = "spm"
ORDERS = (PSM, SPM)
MAX_TOKEN_CHARS = 64  # far beyond any special token; bounds what a manifest can inject
MAX_STOP = 16


def _token(value: object, *, empty: bool) -> str | None:
    if not isinstance(value, str) or len(value) > MAX_TOKEN_CHARS or "\0" in value:
        return None
    if not value and not empty:
        return None
    return value


@dataclass(frozen=True)
class FimFormat:
    """A model's fill-in-the-middle tokens and the order serving writes them in."""

    prefix: str  # may be "" (CodeGen2 has no prefix token)
    suffix: str
    middle: str
    order: str = PSM
    orders: tuple[str, ...] = (PSM,)
    stop: tuple[str, ...] = ()

    @classmethod
    def from_manifest(cls, value: object) -> FimFormat | None:
        """The manifest's `tokenizer.fim` value -> a format, or None (no FIM, or malformed)."""
        if not isinstance(value, Mapping):
            return None
        prefix = _token(value.get("prefix"), empty=True)
        suffix = _token(value.get("suffix"), empty=True)
        middle = _token(value.get("middle"), empty=False)
        if prefix is None or suffix is None or middle is None or not (prefix or suffix):
            return None
        raw_orders = value.get("orders", [PSM])
        if not isinstance(raw_orders, list | tuple):
            return None
        orders = tuple(order for order in raw_orders if order in ORDERS)
        order = value.get("order", orders[0] if orders else PSM)
        if order not in ORDERS:
            return None
        raw_stop = value.get("stop", [])
        if not isinstance(raw_stop, list | tuple) or len(raw_stop) > MAX_STOP:
            return None
        stop = tuple(token for token in (_token(s, empty=False) for s in raw_stop) if token)
        return cls(prefix, suffix, middle, str(order), orders or (str(order),), stop)

    def render(self, prefix: str, suffix: str) -> str:
        """The model's prompt for the text before (`prefix`) and after (`suffix`) the cursor."""
        if self.order == SPM:
            return f"{self.prefix}{self.suffix}{suffix}{self.middle}{prefix}"
        return f"{self.prefix}{prefix}{self.suffix}{suffix}{self.middle}"

    def as_tuple(self) -> tuple[str, str, str]:
        """(prefix, suffix, middle), as the team server's callers used them."""
        return self.prefix, self.suffix, self.middle


@dataclass(frozen=True)
class RepoFormat:
    """Repository-level prompts: other files written before the current one."""

    file_sep: str
    repo_name: str | None = None

    @classmethod
    def from_manifest(cls, value: object) -> RepoFormat | None:
        if not isinstance(value, Mapping):
            return None
        file_sep = _token(value.get("file_sep"), empty=False)
        if file_sep is None:
            return None
        name = value.get("repo_name")
        repo_name = _token(name, empty=False) if name is not None else None
        return cls(file_sep, repo_name)

    def render_file(self, path: str, content: str) -> str:
        return f"{self.file_sep}{path}\n{content}"
