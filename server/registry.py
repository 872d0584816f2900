"""Served model versions keyed by (name, version), each with an explicit state.

Resolution turns a request's model name and version string into a ready ServedModel or a
precise error: unknown model or version NOT_FOUND, a version that is not ready UNAVAILABLE.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass

from runtimes.errors import InvalidInputError, ModelNotFoundError, ModelNotReadyError
from server.model import ServedModel


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
    """The single owner of which versions exist and which serve. Used on the event loop only."""

    def __init__(self) -> None:
        self._models: dict[str, dict[int, VersionEntry]] = {}

    def set_state(self, name: str, version: int, state: ModelState, reason: str = "") -> None:
        entry = self._models.setdefault(name, {}).setdefault(version, VersionEntry(state))
        entry.state, entry.reason = state, reason
        if state is not ModelState.READY:
            entry.model = None if state is ModelState.UNAVAILABLE else entry.model

    def add_ready(self, model: ServedModel) -> None:
        self._models.setdefault(model.name, {})[model.version] = VersionEntry(
            ModelState.READY, model=model
        )

    def remove(self, name: str, version: int) -> ServedModel | None:
        entry = self._models.get(name, {}).pop(version, None)
        return entry.model if entry else None

    def names(self) -> list[str]:
        return sorted(self._models)

    def entries(self, name: str) -> dict[int, VersionEntry]:
        return dict(sorted(self._models.get(name, {}).items()))

    def ready_models(self) -> Iterator[ServedModel]:
        for versions in self._models.values():
            for entry in versions.values():
                if entry.state is ModelState.READY and entry.model is not None:
                    yield entry.model

    def is_ready(self, name: str) -> bool:
        """True when the model has at least one READY version."""
        return any(e.state is ModelState.READY for e in self._models.get(name, {}).values())

    def resolve(self, name: str, version: str = "") -> ServedModel:
        """The model version a request names: an explicit version, or the highest ready one."""
        versions = self._models.get(name)
        if versions is None:
            raise ModelNotFoundError(f"unknown model '{name}'")
        if not version:
            ready = [v for v, e in versions.items() if e.state is ModelState.READY]
            if not ready:
                reasons = "; ".join(
                    f"version {v} is {e.state.value}" + (f": {e.reason}" if e.reason else "")
                    for v, e in sorted(versions.items())
                )
                raise ModelNotReadyError(f"model '{name}' has no ready version ({reasons})")
            return versions[max(ready)].model
        number = parse_version(version)
        entry = versions.get(number)
        if entry is None:
            raise ModelNotFoundError(f"model '{name}' has no version {number}")
        if entry.state is not ModelState.READY or entry.model is None:
            detail = f": {entry.reason}" if entry.reason else ""
            raise ModelNotReadyError(
                f"model '{name}' version {number} is not ready ({entry.state.value}{detail})"
            )
        return entry.model


def parse_version(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or int(text) <= 0:
        raise InvalidInputError(f"model version must be a positive integer, got '{text}'")
    return int(text)
