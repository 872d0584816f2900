"""Served model versions keyed by (name, version), each with an explicit state.

Resolution turns a request's model name and version string into a ready ServedModel or a
precise error: unknown model or version NOT_FOUND, a version that is not ready UNAVAILABLE. Only
READY versions are ever handed to requests; a version being retired (UNLOADING) keeps its
ServedModel here only until it has drained.
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Iterator
from dataclasses import dataclass

from runtimes.errors import InvalidInputError
from server.dataplane.errors import ModelNotFoundError, ModelNotReadyError
from server.models.served import ServedModel

UNLOADED = "unloaded"


class ModelState(enum.Enum):
    LOADING = "LOADING"
    READY = "READY"
    UNLOADING = "UNLOADING"
    UNAVAILABLE = "UNAVAILABLE"


@dataclass
class VersionEntry:
    state: ModelState
    reason: str = ""
    model: ServedModel | None = None


class ModelRegistry:
    """The single owner of which versions exist and which serve. Changes and reads take one
    lock, so a request never sees a change half made; the hot path (resolve by name, no
    version) reads a cache without it, which a change empties under the lock, and which is
    filled only under the lock (so it never holds what a change has just replaced)."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._models: dict[str, dict[int, VersionEntry]] = {}
        # resolve(name) without a version, looked up on every request: emptied on every change.
        self._latest_ready: dict[str, ServedModel] = {}

    # changes (the model manager is the only caller) -------------------------------------------

    def mark(self, name: str, version: int, state: ModelState, reason: str = "") -> None:
        """Set a version's state; UNAVAILABLE drops its model."""
        with self._lock:
            self._latest_ready.clear()
            entry = self._models.setdefault(name, {}).setdefault(version, VersionEntry(state))
            entry.state, entry.reason = state, reason
            if state is ModelState.UNAVAILABLE:
                entry.model = None

    def note(self, name: str, version: int, reason: str) -> None:
        """Attach a reason to a version without changing its state (a failed reload)."""
        with self._lock:
            self._models[name][version].reason = reason

    def publish(self, model: ServedModel) -> ServedModel | None:
        """Make `model` the READY model of its version; return the one it replaces, if any,
        which takes no new requests from now on and must be drained by the caller."""
        with self._lock:
            self._latest_ready.clear()
            entry = self._models.setdefault(model.name, {}).setdefault(
                model.version, VersionEntry(ModelState.READY)
            )
            previous = entry.model
            entry.state, entry.reason, entry.model = ModelState.READY, "", model
            return previous

    def retire(self, name: str, version: int) -> ServedModel | None:
        """Stop handing a version to requests (UNLOADING); return its model for draining."""
        with self._lock:
            self._latest_ready.clear()
            entry = self._models.get(name, {}).get(version)
            if entry is None:
                return None
            entry.state, entry.reason = ModelState.UNLOADING, ""
            return entry.model

    # reads ------------------------------------------------------------------------------------

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._models)

    def entries(self, name: str) -> dict[int, VersionEntry]:
        with self._lock:
            return dict(sorted(self._models.get(name, {}).items()))

    def serving(self, name: str) -> dict[int, ServedModel]:
        """READY versions of a model and their models."""
        with self._lock:
            return {
                version: entry.model
                for version, entry in self.entries(name).items()
                if entry.state is ModelState.READY and entry.model is not None
            }

    def ready_models(self) -> Iterator[ServedModel]:
        for name in self.names():
            yield from self.serving(name).values()

    def is_ready(self, name: str) -> bool:
        """True when the model has at least one READY version."""
        return bool(self.serving(name))

    def is_unloaded(self, name: str) -> bool:
        """True when every version of the model was unloaded on purpose."""
        with self._lock:
            entries = self._models.get(name, {}).values()
            return bool(entries) and all(e.reason == UNLOADED for e in entries)

    def resolve(self, name: str, version: str = "") -> ServedModel:
        """The model version a request names: an explicit version, or the highest ready one."""
        if not version:
            latest = self._latest_ready.get(name)
            if latest is not None:
                return latest
        with self._lock:
            return self._resolve_locked(name, version)

    def _resolve_locked(self, name: str, version: str) -> ServedModel:
        versions = self._models.get(name)
        if versions is None:
            raise ModelNotFoundError(unknown_model(name))
        if not version:
            ready = self.serving(name)
            if not ready:
                reasons = "; ".join(
                    f"version {v} is {e.state.value}" + (f": {e.reason}" if e.reason else "")
                    for v, e in sorted(versions.items())
                )
                raise ModelNotReadyError(f"model '{name}' has no ready version ({reasons})")
            latest = self._latest_ready[name] = ready[max(ready)]
            return latest
        number = parse_version(version)
        entry = versions.get(number)
        if entry is None:
            raise ModelNotFoundError(unknown_model(name, number))
        if entry.state is not ModelState.READY or entry.model is None:
            detail = f": {entry.reason}" if entry.reason else ""
            raise ModelNotReadyError(
                f"model '{name}' version {number} is not ready ({entry.state.value}{detail})"
            )
        return entry.model


def parse_version(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or int(text) <= 0:
        raise InvalidInputError(
            f"failed to get model version from specified version string '{text}': a model "
            "version is a positive integer"
        )
    return int(text)


def unknown_model(name: str, version: int | None = None) -> str:
    """Triton's message for a model (or version) it does not have; clients match on it."""
    version_part = f" version {version}" if version is not None else ""
    return f"Request for unknown model: '{name}'{version_part} is not found"
