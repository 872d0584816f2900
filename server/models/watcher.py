"""Poll mode: rescan the repository and bring models in line with it.

A model is acted on only once its directory looks the same in two consecutive scans, so a version
directory that is still being copied is left alone until the copy is complete. Removed model
directories are unloaded.
"""

from __future__ import annotations

import logging
import threading
from typing import Protocol

from runtimes.errors import TensorgateError
from server.models import repository
from server.models.repository import ModelFingerprint

log = logging.getLogger(__name__)


class ModelControl(Protocol):
    def load(self, name: str) -> None: ...

    def unload(self, name: str) -> None: ...


class RepositoryWatcher:
    def __init__(
        self, models_on_disk: repository.ModelRepository, models: ModelControl, interval_s: float
    ) -> None:
        self._repository = models_on_disk
        self._models = models
        self._interval_s = interval_s
        # None marks a model directory that could not be read this scan: never stable, never
        # taken for removed.
        self._previous: dict[str, ModelFingerprint | None] = {}
        self._applied: dict[str, ModelFingerprint | None] = {}
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self.scans = 0

    def mark_applied(self) -> None:
        """Record the repository as it is now as loaded; call it before the start-up load, so
        that a change made while models load is seen by the first scans."""
        self._previous = self._snapshot()
        self._applied = dict(self._previous)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="repository-watcher", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float | None = None) -> None:
        """Stop polling; a scan in progress finishes first (up to timeout_s), so no load is
        cut in half."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _run(self) -> None:
        while not self._stopping.wait(self._interval_s):
            try:
                self.scan_once()
            except Exception:
                log.exception("repository scan failed; trying again next poll")

    def scan_once(self) -> None:
        """One poll: act on every model whose directory is stable and differs from what was
        applied; unload models whose directory is gone."""
        snapshot = self._snapshot()
        for name, current in snapshot.items():
            stable = current is not None and self._previous.get(name) == current
            if stable and self._applied.get(name) != current:
                self._applied[name] = current
                try:
                    self._models.load(name)
                except TensorgateError as error:
                    log.error("poll: model '%s' not loaded: %s", name, error)
        for name in set(self._applied) - set(snapshot):
            del self._applied[name]
            try:
                self._models.unload(name)
            except TensorgateError as error:
                log.error("poll: model '%s' not unloaded: %s", name, error)
        self._previous = snapshot
        self.scans += 1
        log.debug("repository scan %d done", self.scans)

    def _snapshot(self) -> dict[str, ModelFingerprint | None]:
        try:
            self._repository.poll()
            sources = self._repository.discover()
        except OSError as error:
            log.error("poll: cannot read the model repository: %s", error)
            return dict(self._previous)
        snapshot: dict[str, ModelFingerprint | None] = {}
        for name, source in sources.items():
            try:
                snapshot[name] = repository.fingerprint(source)
            except OSError as error:  # a file vanished mid-scan, or cannot be read
                log.warning("poll: model '%s' could not be read this scan: %s", name, error)
                snapshot[name] = None
        return snapshot
