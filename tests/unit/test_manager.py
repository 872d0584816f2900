"""ModelManager on real (tiny) ONNX models: loads, swaps, failed loads, unloads and drains."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from pathlib import Path

import numpy as np
import pytest
from grpc_health.v1 import health_pb2
from grpc_health.v1._async import HealthServicer

from runtimes.errors import ModelLoadError
from server.dataplane.errors import ModelNotFoundError, ModelNotReadyError
from server.dataplane.inference import InferenceRequest
from server.models.loader import LoadOptions
from server.models.manager import ModelManager
from server.models.registry import ModelRegistry, ModelState
from tests.support.model_factory import write_add_sub_model, write_config, write_corrupt_model

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SLOW_BATCHING = "dynamic_batching { max_queue_delay_microseconds: 60000000 }"


def async_test(test: Callable[..., Coroutine]) -> Callable[..., None]:
    @functools.wraps(test)
    def wrapper(*args: object, **kwargs: object) -> None:
        asyncio.run(asyncio.wait_for(test(*args, **kwargs), timeout=60))

    return wrapper


class Setup:
    def __init__(self, repo: Path) -> None:
        self.repo = repo
        self.registry = ModelRegistry()
        self.health = HealthServicer()
        self.manager = ModelManager(self.registry, self.health, LoadOptions(), repo)

    async def health_of(self, name: str) -> int:
        request = health_pb2.HealthCheckRequest(service=name)
        return (await self.health.Check(request, None)).status

    async def infer(self, name: str = "m", version: str = "") -> tuple[int, float]:
        """(version that answered, the offset it added)."""
        model = self.registry.resolve(name, version)
        inputs = {"INPUT0": np.ones((1, 16), np.float32), "INPUT1": np.ones((1, 16), np.float32)}
        outputs = await model.infer(InferenceRequest(name, version, "", inputs))
        return model.version, float(outputs["OUTPUT0"][0, 0] - 2.0)

    def state(self, version: int, name: str = "m") -> tuple[ModelState, str]:
        entry = self.registry.entries(name)[version]
        return entry.state, entry.reason


@async_test
async def test_a_new_version_is_published_then_the_old_one_retired(tmp_path: Path) -> None:
    setup = Setup(tmp_path)
    write_add_sub_model(tmp_path, "m", version=1, offset=1.0)
    await setup.manager.load("m")
    assert await setup.infer() == (1, 1.0)
    assert await setup.health_of("m") == SERVING

    write_add_sub_model(tmp_path, "m", version=2, offset=2.0)
    await setup.manager.load("m")
    assert await setup.infer() == (2, 2.0)
    assert setup.state(1) == (ModelState.UNAVAILABLE, "unloaded")
    with pytest.raises(ModelNotReadyError, match=r"version 1 is not ready .*unloaded"):
        setup.registry.resolve("m", "1")


@async_test
async def test_loading_an_unchanged_model_again_keeps_the_running_instance(tmp_path: Path) -> None:
    setup = Setup(tmp_path)
    write_add_sub_model(tmp_path, "m", version=1)
    await setup.manager.load("m")
    running = setup.registry.resolve("m")
    await setup.manager.load("m")
    assert setup.registry.resolve("m") is running


@async_test
async def test_a_changed_version_directory_is_reloaded_and_the_old_load_drained(
    tmp_path: Path,
) -> None:
    setup = Setup(tmp_path)
    write_add_sub_model(tmp_path, "m", version=1, offset=1.0)
    await setup.manager.load("m")
    old = setup.registry.resolve("m")
    write_add_sub_model(tmp_path, "m", version=1, offset=5.0)  # same version, new file
    await setup.manager.load("m")
    assert await setup.infer() == (1, 5.0)
    assert setup.registry.resolve("m") is not old
    with pytest.raises(Exception, match="shutting down"):
        await old.scheduler.submit({}, [])


@async_test
async def test_a_broken_new_version_leaves_the_old_one_serving_and_says_why(
    tmp_path: Path,
) -> None:
    setup = Setup(tmp_path)
    write_add_sub_model(tmp_path, "m", version=1, offset=1.0)
    await setup.manager.load("m")
    write_corrupt_model(tmp_path, "m", version=2)
    with pytest.raises(ModelLoadError, match=r"version 2: .*could not load.*versions serving: 1"):
        await setup.manager.load("m")
    assert await setup.infer() == (1, 1.0)
    state, reason = setup.state(2)
    assert state is ModelState.UNAVAILABLE
    assert "could not load" in reason
    assert await setup.health_of("m") == SERVING


@async_test
async def test_a_failed_reload_keeps_the_previous_load_with_the_reason(tmp_path: Path) -> None:
    setup = Setup(tmp_path)
    write_add_sub_model(tmp_path, "m", version=1, offset=1.0)
    await setup.manager.load("m")
    write_corrupt_model(tmp_path, "m", version=1)
    with pytest.raises(ModelLoadError):
        await setup.manager.load("m")
    assert await setup.infer() == (1, 1.0)
    state, reason = setup.state(1)
    assert state is ModelState.READY
    assert reason.startswith("reload failed, still serving the previous load")


@async_test
async def test_a_bad_config_keeps_what_serves(tmp_path: Path) -> None:
    setup = Setup(tmp_path)
    write_add_sub_model(tmp_path, "m", version=1, offset=1.0)
    await setup.manager.load("m")
    write_config(tmp_path, "m", "max_batch_size: [ oops")
    with pytest.raises(ModelLoadError, match="not a valid model config"):
        await setup.manager.load("m")
    assert await setup.infer() == (1, 1.0)
    assert "config.pbtxt is not a valid model config" in setup.state(1)[1]


@async_test
async def test_a_model_that_never_loaded_is_unavailable_with_its_reason(tmp_path: Path) -> None:
    setup = Setup(tmp_path)
    write_corrupt_model(tmp_path, "m")
    with pytest.raises(ModelLoadError):
        await setup.manager.load("m")
    assert setup.state(1)[0] is ModelState.UNAVAILABLE
    assert await setup.health_of("m") == NOT_SERVING
    with pytest.raises(ModelNotFoundError, match="no model directory 'nope'"):
        await setup.manager.load("nope")


@async_test
async def test_unload_finishes_queued_requests_then_refuses_new_ones(tmp_path: Path) -> None:
    setup = Setup(tmp_path)
    write_add_sub_model(tmp_path, "m", version=1, offset=1.0, config_extra=SLOW_BATCHING)
    await setup.manager.load("m")
    queued = [asyncio.create_task(setup.infer()) for _ in range(3)]
    await asyncio.sleep(0)  # let them reach the queue (no time passes)
    assert setup.registry.resolve("m").scheduler.queued_requests == 3
    await setup.manager.unload("m")
    assert await asyncio.gather(*queued) == [(1, 1.0)] * 3
    with pytest.raises(ModelNotReadyError, match=r"no ready version .*unloaded"):
        await setup.infer()
    assert await setup.health_of("m") == NOT_SERVING
    assert setup.registry.is_unloaded("m")


@async_test
async def test_concurrent_load_and_unload_of_one_model_are_serialised(tmp_path: Path) -> None:
    setup = Setup(tmp_path)
    write_add_sub_model(tmp_path, "m", version=1)
    await setup.manager.load("m")
    await asyncio.gather(setup.manager.unload("m"), setup.manager.load("m"))
    assert setup.state(1)[0] is ModelState.READY  # unload ran, then load
    await asyncio.gather(setup.manager.load("m"), setup.manager.unload("m"))
    assert setup.state(1) == (ModelState.UNAVAILABLE, "unloaded")


@async_test
async def test_the_index_lists_every_model_on_disk_and_every_known_version(tmp_path: Path) -> None:
    setup = Setup(tmp_path)
    write_add_sub_model(tmp_path, "loaded", version=1)
    write_add_sub_model(tmp_path, "idle", version=1)
    await setup.manager.load("loaded")
    index = [(e.name, e.version, e.state, e.reason) for e in setup.manager.index(False)]
    assert index == [("idle", "", "UNAVAILABLE", "not loaded"), ("loaded", "1", "READY", "")]
    assert [e.name for e in setup.manager.index(ready_only=True)] == ["loaded"]
