"""Follow a registry model's production pointer: which version to load next.

The one follower shared by the language server (acepilot/server/session.py: an
asyncio task) and the team server (acepilot/server/team/models.py: a poller
thread). Loading and swapping are the caller's; this module decides *what* to
load, with the same rules for both:

- The version to serve is `Registry.resolve(name)`: the production pointer,
  or the latest version when no pointer was ever set (the registry's rule).
- A version that the caller could not load (`refuse`) is not tried again
  until the pointer is written again (its mtime changes): a corrupt version
  costs one attempt and one message, not one per poll.
- A registry problem (a corrupt pointer, a missing version) is raised once per
  pointer write, then `poll` returns None quietly until the pointer changes.

API (kept stable; the team server depends on it):

    follower = ProductionFollower(registry, name, serving=None)
    entry = follower.poll()      # blocking (reads the disk): ModelEntry | None
    follower.accept(entry)       # now serving it
    follower.refuse(entry)       # could not load it: skip until the pointer changes
    follower.serving             # the version being served, or None
    default_model(registry, configured, hint) -> str   # which name to serve at all
"""

from __future__ import annotations

import os

from acepilot.server.errors import RegistryError
from acepilot.server.registry import PRODUCTION, ModelEntry, Registry

POLL_S = 2.0  # how often servers read the pointer


class ProductionFollower:
    """The production version of one registry name, as it changes (see the module docstring)."""

    def __init__(self, registry: Registry, name: str, serving: str | None = None) -> None:
        self.registry = registry
        self.name = name
        self.serving = serving
        self._refused: set[tuple[str, int]] = set()  # (version, pointer mtime)
        self._reported: set[tuple[str, int]] = set()  # (error, pointer mtime)
        self._stamp = 0  # the pointer's mtime at the last poll

    def stamp(self) -> int:
        """The pointer's mtime in ns (0 when there is none): changes on every write."""
        try:
            return (self.registry.root / self.name / PRODUCTION).stat().st_mtime_ns
        except OSError:
            return 0

    def poll(self) -> ModelEntry | None:
        """The entry to load now, or None (same version, or refused at this pointer write).

        Raises RegistryError the first time a problem is seen for a pointer write.
        """
        stamp = self._stamp = self.stamp()
        try:
            entry = self.registry.resolve(self.name)
        except RegistryError as exc:
            key = (str(exc), stamp)
            if key in self._reported:
                return None
            self._reported.add(key)
            raise
        if entry.version == self.serving or (entry.version, stamp) in self._refused:
            return None
        return entry

    def accept(self, entry: ModelEntry) -> None:
        self.serving = entry.version

    def refuse(self, entry: ModelEntry) -> None:
        self._refused.add((entry.version, self._stamp))


def default_model(registry: Registry, configured: str | None, hint: str) -> str:
    """The model to serve: `configured`, else $ACEPILOT_MODEL, else the registry's only model.

    `hint` ends the error message with how this caller chooses a model
    ("pass --model", "set acepilot.model").
    """
    chosen = configured or os.environ.get("ACEPILOT_MODEL")
    if chosen:
        return chosen
    names = registry.names()
    if len(names) == 1:
        return names[0]
    if not names:
        raise RegistryError(
            f"no models in the registry {registry.root}: build one with "
            f"`acepilot model build SOURCE --precision int4`, or {hint}"
        )
    raise RegistryError(
        f"several models in the registry {registry.root} ({', '.join(names)}): {hint}"
    )
