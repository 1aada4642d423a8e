"""Follow the registry's production pointer: a promotion or a rollback reaches
running editors without a restart (the local backend; a team server follows
the pointer itself).

Every `poll_s` seconds the pointer is read. When it names another version,
that version is loaded beside the one serving (sha256 checked, warmed up);
then the server swaps to it and the old backend finishes what it was given.
A version that cannot be loaded is refused: the user is told once, the old
version keeps serving, and it is not tried again until the pointer is
written again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from acepilot.server.errors import AcepilotError
from acepilot.server.lsp.backends import LocalBackend
from acepilot.server.lsp.config import Config

log = logging.getLogger(__name__)

POLL_S = 2.0


async def follow_production(
    backend: LocalBackend,
    config: Config,
    still_current: Callable[[], bool],
    swap: Callable[[LocalBackend], None],
    refuse: Callable[[str], None],
    poll_s: float = POLL_S,
) -> None:
    """Runs until `still_current()` is false (new settings replaced the backend)."""
    loop = asyncio.get_running_loop()
    tried: set[tuple[str, int]] = set()
    last_error = ""
    while True:
        await asyncio.sleep(poll_s)
        if not still_current():
            return
        try:
            found = await loop.run_in_executor(None, backend.newer_production)
        except AcepilotError as exc:  # a corrupt pointer: keep serving, say it once
            if str(exc) != last_error:
                log.warning("production pointer: %s", exc)
                last_error = str(exc)
            continue
        if found is None:
            continue
        entry, stamp = found
        if (entry.version, stamp) in tried:
            continue
        tried.add((entry.version, stamp))
        log.info("production of %s is now %s: loading it", entry.name, entry.version)
        try:
            new = await loop.run_in_executor(None, backend.successor, entry, config)
        except Exception as exc:  # RegistryError, or onnxruntime's own types
            refuse(
                f"{entry.name} {entry.version} (the new production version) cannot be "
                f"loaded, still serving {backend.model}: {exc}"
            )
            continue
        if not still_current():
            await new.close()
            return
        swap(new)
        backend.retire()
        backend = new
