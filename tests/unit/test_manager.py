"""ModelManager on real (tiny) ONNX models: loads, swaps, failed loads, unloads and drains."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from batching.errors import SchedulerStoppedError
from batching.waiter import Waiter
from runtimes.errors import ModelLoadError
from server.dataplane.errors import ModelNotFoundError, ModelNotReadyError
from server.models.loader import LoadOptions
from server.models.manager import ModelManager
from server.models.registry import ModelRegistry, ModelState
from server.models.repository import ModelRepository
from tests.support.fake_runtime import WAIT_S, Blocked
from tests.support.model_factory import write_add_sub_model, write_config, write_corrupt_model

SERVING, NOT_SERVING = True, False
INPUTS = {"INPUT0": np.ones((1, 16), np.float32), "INPUT1": np.ones((1, 16), np.float32)}
SLOW_BATCHING = "dynamic_batching { max_queue_delay_microseconds: 60000000 }"


class Setup:
    def __init__(self, repo: Path) -> None:
        self.repo = repo
        self.registry = ModelRegistry()
        self.readiness: dict[str, bool] = {}
        self.manager = ModelManager(
            self.registry,
            LoadOptions(),
            ModelRepository(repo),
            on_readiness=self.readiness.__setitem__,
        )

    def health_of(self, name: str) -> bool:
        """What the manager last told its readiness listener about `name`."""
        return self.readiness[name]

    def infer(
        self, name: str = "m", version: str = "", waiter: Waiter | None = None
    ) -> tuple[int, float]:
        """(version that answered, the offset it added)."""
        model = self.registry.resolve(name, version)
        answered = model.scheduler.infer(INPUTS, ["OUTPUT0"], waiter=waiter)
        assert answered.outputs is not None, answered.error
        return model.version, float(answered.outputs["OUTPUT0"][0, 0] - 2.0)

    def state(self, version: int, name: str = "m") -> tuple[ModelState, str]:
        entry = self.registry.entries(name)[version]
        return entry.state, entry.reason


def test_a_new_version_is_published_then_the_old_one_retired(tmp_path: Path) -> None:
    setup = Setup(tmp_path)
    write_add_sub_model(tmp_path, "m", version=1, offset=1.0)
    setup.manager.load("m")
    assert setup.infer() == (1, 1.0)
    assert setup.health_of("m") == SERVING

    write_add_sub_model(tmp_path, "m", version=2, offset=2.0)
    setup.manager.load("m")
    assert setup.infer() == (2, 2.0)
    assert setup.state(1) == (ModelState.UNAVAILABLE, "unloaded")
    with pytest.raises(ModelNotReadyError, match=r"version 1 is not ready .*unloaded"):
        setup.registry.resolve("m", "1")


def test_loading_an_unchanged_model_again_keeps_the_running_instance(tmp_path: Path) -> None:
    setup = Setup(tmp_path)
    write_add_sub_model(tmp_path, "m", version=1)
    setup.manager.load("m")
    running = setup.registry.resolve("m")
    setup.manager.load("m")
    assert setup.registry.resolve("m") is running


def test_a_changed_version_directory_is_reloaded_and_the_old_load_drained(
    tmp_path: Path,
) -> None:
    setup = Setup(tmp_path)
    write_add_sub_model(tmp_path, "m", version=1, offset=1.0)
    setup.manager.load("m")
    old = setup.registry.resolve("m")
    write_add_sub_model(tmp_path, "m", version=1, offset=5.0)  # same version, new file
    setup.manager.load("m")
    assert setup.infer() == (1, 5.0)
    assert setup.registry.resolve("m") is not old
    with pytest.raises(SchedulerStoppedError, match="shutting down"):
        old.scheduler.infer(INPUTS, ["OUTPUT0"])


def test_a_broken_new_version_leaves_the_old_one_serving_and_says_why(
    tmp_path: Path,
) -> None:
    setup = Setup(tmp_path)
    write_add_sub_model(tmp_path, "m", version=1, offset=1.0)
    setup.manager.load("m")
    write_corrupt_model(tmp_path, "m", version=2)
    with pytest.raises(ModelLoadError, match=r"version 2: .*could not load.*versions serving: 1"):
        setup.manager.load("m")
    assert setup.infer() == (1, 1.0)
    state, reason = setup.state(2)
    assert state is ModelState.UNAVAILABLE
    assert "could not load" in reason
    assert setup.health_of("m") == SERVING


def test_a_failed_reload_keeps_the_previous_load_with_the_reason(tmp_path: Path) -> None:
    setup = Setup(tmp_path)
    write_add_sub_model(tmp_path, "m", version=1, offset=1.0)
    setup.manager.load("m")
    write_corrupt_model(tmp_path, "m", version=1)
    with pytest.raises(ModelLoadError):
        setup.manager.load("m")
    assert setup.infer() == (1, 1.0)
    state, reason = setup.state(1)
    assert state is ModelState.READY
    assert reason.startswith("reload failed, still serving the previous load")


def test_a_bad_config_keeps_what_serves(tmp_path: Path) -> None:
    setup = Setup(tmp_path)
    write_add_sub_model(tmp_path, "m", version=1, offset=1.0)
    setup.manager.load("m")
    write_config(tmp_path, "m", "max_batch_size: [ oops")
    with pytest.raises(ModelLoadError, match="not a valid model config"):
        setup.manager.load("m")
    assert setup.infer() == (1, 1.0)
    assert "config.pbtxt is not a valid model config" in setup.state(1)[1]


def test_a_model_that_never_loaded_is_unavailable_with_its_reason(tmp_path: Path) -> None:
    setup = Setup(tmp_path)
    write_corrupt_model(tmp_path, "m")
    with pytest.raises(ModelLoadError):
        setup.manager.load("m")
    assert setup.state(1)[0] is ModelState.UNAVAILABLE
    assert setup.health_of("m") == NOT_SERVING
    with pytest.raises(ModelNotFoundError, match="no model directory 'nope'"):
        setup.manager.load("nope")


def test_unload_finishes_queued_requests_then_refuses_new_ones(tmp_path: Path) -> None:
    setup = Setup(tmp_path)
    write_add_sub_model(tmp_path, "m", version=1, offset=1.0, config_extra=SLOW_BATCHING)
    setup.manager.load("m")
    blocked = Blocked()
    answers: list[tuple[int, float]] = []
    callers = [
        threading.Thread(target=lambda: answers.append(setup.infer(waiter=Waiter(hooks=blocked))))
        for _ in range(3)
    ]
    for caller in callers:
        caller.start()
    blocked.wait_for(3)  # all three queued, waiting out the 60 s delay
    assert setup.registry.resolve("m").scheduler.queued_requests == 3
    setup.manager.unload("m")  # runs them at once, then retires the version
    for caller in callers:
        caller.join(WAIT_S)
    assert answers == [(1, 1.0)] * 3
    with pytest.raises(ModelNotReadyError, match=r"no ready version .*unloaded"):
        setup.infer()
    assert setup.health_of("m") == NOT_SERVING
    assert setup.registry.is_unloaded("m")


def test_concurrent_load_and_unload_of_one_model_are_serialised(tmp_path: Path) -> None:
    setup = Setup(tmp_path)
    write_add_sub_model(tmp_path, "m", version=1)
    setup.manager.load("m")
    for _ in range(5):
        changes = [
            threading.Thread(target=setup.manager.unload, args=("m",)),
            threading.Thread(target=setup.manager.load, args=("m",)),
        ]
        for change in changes:
            change.start()
        for change in changes:
            change.join(WAIT_S)
        # Whichever ran last, it ran whole: never a version left half loaded or half retired.
        assert setup.state(1) in ((ModelState.READY, ""), (ModelState.UNAVAILABLE, "unloaded"))
        assert setup.health_of("m") is (setup.state(1)[0] is ModelState.READY)


def test_the_index_lists_every_model_on_disk_and_every_known_version(tmp_path: Path) -> None:
    setup = Setup(tmp_path)
    write_add_sub_model(tmp_path, "loaded", version=1)
    write_add_sub_model(tmp_path, "idle", version=1)
    setup.manager.load("loaded")
    index = [(e.name, e.version, e.state, e.reason) for e in setup.manager.index(False)]
    assert index == [("idle", "", "UNAVAILABLE", "not loaded"), ("loaded", "1", "READY", "")]
    assert [e.name for e in setup.manager.index(ready_only=True)] == ["loaded"]


def test_a_reload_note_clears_once_the_model_is_back_to_what_serves(tmp_path: Path) -> None:
    setup = Setup(tmp_path)
    written = write_add_sub_model(tmp_path, "m", version=1, offset=1.0)
    assert written.config_path is not None
    good_config = written.config_path.read_text()
    setup.manager.load("m")
    write_config(tmp_path, "m", "max_batch_size: [ oops")
    with pytest.raises(ModelLoadError):
        setup.manager.load("m")
    assert "not a valid model config" in setup.state(1)[1]
    write_config(tmp_path, "m", good_config)  # fixed back to what was loaded
    setup.manager.load("m")
    assert setup.state(1) == (ModelState.READY, "")


def test_a_file_the_server_cannot_read_is_named_in_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from server.models import loader

    setup = Setup(tmp_path)
    write_add_sub_model(tmp_path, "m", version=1)
    unreadable = tmp_path / "m" / "1" / "model.onnx"

    def denied(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied", str(unreadable))

    monkeypatch.setattr(loader, "load_version", denied)
    with pytest.raises(ModelLoadError):
        setup.manager.load("m")
    state, reason = setup.state(1)
    assert state is ModelState.UNAVAILABLE
    assert reason == f"cannot read {unreadable}: Permission denied"
