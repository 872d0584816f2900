"""Loads model sources into the registry and keeps health in step with model states."""

from __future__ import annotations

import logging

from grpc_health.v1 import health_pb2
from grpc_health.v1._async import HealthServicer

from runtimes.errors import TensorgateError
from server import loader
from server.loader import LoadOptions
from server.registry import ModelRegistry, ModelState
from server.repository import ModelSource

log = logging.getLogger(__name__)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class ModelManager:
    """The only writer of the registry: load, unload, and the health status of each model."""

    def __init__(self, registry: ModelRegistry, health: HealthServicer, options: LoadOptions):
        self._registry = registry
        self._health = health
        self._options = options

    async def load(self, source: ModelSource) -> None:
        """Load the versions the policy selects; a failure marks the version UNAVAILABLE."""
        if not source.version_paths:
            self._registry.set_state(source.name, 1, ModelState.UNAVAILABLE, "no version found")
            log.error("model '%s': no numbered version directory found", source.name)
            await self._update_health(source.name)
            return
        try:
            given = loader.read_given_config(source)
        except TensorgateError as error:
            for version in source.version_paths:
                self._fail(source.name, version, error)
            await self._update_health(source.name)
            return
        for version in loader.select_versions(given, list(source.version_paths)):
            self._registry.set_state(source.name, version, ModelState.LOADING)
            try:
                model = await loader.load_version(source, version, given, self._options)
            except TensorgateError as error:
                self._fail(source.name, version, error)
            except Exception as error:
                log.exception(
                    "model '%s' version %d: unexpected load failure", source.name, version
                )
                self._fail(source.name, version, error)
            else:
                self._registry.add_ready(model)
        await self._update_health(source.name)

    async def unload_all(self) -> None:
        for name in self._registry.names():
            for version, entry in self._registry.entries(name).items():
                if entry.model is not None:
                    self._registry.set_state(name, version, ModelState.UNLOADING)
                    await entry.model.stop()
                    self._registry.remove(name, version)
            await self._health.set(name, NOT_SERVING)

    def _fail(self, name: str, version: int, error: BaseException) -> None:
        reason = str(error) if isinstance(error, TensorgateError) else "unexpected load failure"
        log.error("model '%s' version %d failed to load: %s", name, version, reason)
        self._registry.set_state(name, version, ModelState.UNAVAILABLE, reason)

    async def _update_health(self, name: str) -> None:
        await self._health.set(name, SERVING if self._registry.is_ready(name) else NOT_SERVING)
