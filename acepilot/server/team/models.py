"""The served model and its lifecycle: follow the registry's production pointer.

A poller thread asks the shared follower (acepilot/server/production.py, the
same rules as the language server's) every `poll_s` seconds which version to
serve. When it names another version (a promotion or a rollback), that version is
loaded beside the current one (sha256 of every file checked, graph opened,
warmed up) while the current one keeps serving; then new requests go to the
new one, requests in flight finish on the old one, and the old one is freed
when its last request ends. No request fails because of a swap.

A version that fails to load or fails its sha256 check is refused: logged,
counted in /metrics (acepilot_model_refused_total{version}), and not tried
again until the production pointer is written again (the follower's rule);
the old version keeps serving.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path

from acepilot.server.engine.batch import BatchEngine
from acepilot.server.errors import RegistryError
from acepilot.server.fim import FimFormat
from acepilot.server.production import ProductionFollower
from acepilot.server.registry import ModelEntry, Registry
from acepilot.server.team.metrics import ServerMetrics
from acepilot.server.team.prompts import longest_token_chars

DEFAULT_FAMILY = "codegen"  # manifests written before the builder recorded a family

log = logging.getLogger(__name__)


@dataclass(eq=False)
class Served:
    """One loaded version: its batch engine and how many requests use it."""

    entry: ModelEntry
    batch: BatchEngine
    inflight: int = 0
    draining: bool = False

    @property
    def version(self) -> str:
        return self.entry.version

    @cached_property
    def fim(self) -> FimFormat | None:
        """The model's fill-in-the-middle format (read once, by acepilot/server/fim.py)."""
        return self.entry.fim

    @property
    def family(self) -> str:
        family = self.entry.manifest.get("family")
        return family if isinstance(family, str) and family else DEFAULT_FAMILY

    @cached_property
    def token_chars(self) -> int:
        """The most characters one token stands for (the prompt character limit's unit)."""
        return longest_token_chars(self.batch.engine.tokenizer)


Loader = Callable[[ModelEntry], BatchEngine]


class ModelManager:
    """Holds the serving version, loads new ones, drains and frees old ones."""

    def __init__(
        self,
        registry: Registry,
        name: str,
        loader: Loader,
        metrics: ServerMetrics,
        poll_s: float = 2.0,
    ) -> None:
        self.registry = registry
        self.name = name
        self.loader = loader
        self.metrics = metrics
        self.poll_s = poll_s
        self.current: Served | None = None
        self.follower = ProductionFollower(registry, name)
        self._old: list[Served] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="acepilot-model-poll", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        with self._lock:
            served = [s for s in [self.current, *self._old] if s is not None]
            self.current = None
            self._old = []
        for item in served:
            item.batch.close()

    @property
    def ready(self) -> bool:
        return self.current is not None

    def acquire(self) -> Served | None:
        """The version for a new request (counted in flight until `release`)."""
        with self._lock:
            served = self.current
            if served is not None:
                served.inflight += 1
            return served

    def release(self, served: Served) -> None:
        with self._lock:
            served.inflight -= 1
            free = served.draining and served.inflight == 0 and served in self._old
            if free:
                self._old.remove(served)
        if free:
            self._free(served)

    # ---- internals -------------------------------------------------------

    def _free(self, served: Served) -> None:
        log.info("freeing %s %s (drained)", self.name, served.version)
        # close() joins the scheduler thread: never on the caller's (event loop) thread.
        threading.Thread(target=served.batch.close, name="acepilot-free", daemon=True).start()
        self._update_gauges()

    def _update_gauges(self) -> None:
        with self._lock:
            current = self.current
            loaded = len(self._old) + (1 if current else 0)
        self.metrics.model.clear()
        if current is not None:
            self.metrics.model.set(1, model=self.name, version=current.version)
        self.metrics.loaded.set(loaded)

    def _poll(self) -> None:
        while not self._stop.is_set():
            try:
                self.check()
            except Exception:  # keep polling whatever happens; the old version keeps serving
                log.exception("checking the registry failed")
            self._stop.wait(self.poll_s)

    def check(self) -> None:
        """One poll: load and switch to the production version if it changed."""
        try:
            entry = self.follower.poll()
        except RegistryError as exc:  # said once per pointer write (the follower's rule)
            log.error("cannot resolve %s in the registry: %s", self.name, exc)
            return
        if entry is None:
            return
        current = self.current
        log.info("loading %s %s", self.name, entry.version)
        try:
            batch = self.loader(entry)
        except Exception as exc:  # RegistryError (sha256, files), onnxruntime errors
            self.follower.refuse(entry)
            self.metrics.refused.inc(version=entry.version)
            log.error(
                "refused %s %s (%s); %s",
                self.name,
                entry.version,
                exc,
                f"still serving {current.version}" if current else "nothing to serve",
            )
            return
        self.follower.accept(entry)
        new = Served(entry, batch)
        new.token_chars  # noqa: B018 - computed here, on the poller thread, not by a request
        with self._lock:
            old = self.current
            self.current = new
            if old is not None:
                old.draining = True
                self._old.append(old)
                free = old.inflight == 0
                if free:
                    self._old.remove(old)
            else:
                free = False
        if old is not None:
            self.metrics.swaps.inc()
            log.info("now serving %s %s (was %s)", self.name, new.version, old.version)
            if free:
                self._free(old)
        else:
            log.info("now serving %s %s", self.name, new.version)
        self._update_gauges()


def entry_created(entry: ModelEntry) -> int:
    """The entry's creation time as a Unix timestamp (for /v1/models)."""
    try:
        created = datetime.strptime(str(entry.manifest.get("created")), "%Y-%m-%dT%H:%M:%SZ")
    except ValueError:
        return int(Path(entry.path).stat().st_mtime)
    return int(created.replace(tzinfo=UTC).timestamp())
