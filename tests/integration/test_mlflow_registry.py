"""Serving from a real MLflow Model Registry (`--mlflow-tracking-uri`).

A real tracking server (SQLite backend, artifact serving; tests/support/mlflow_server.py) runs on
loopback; models are registered through MLflow's own client, both as the `onnx` flavor and as a
plain directory holding model.onnx and config.pbtxt; tensorgate is driven through tritonclient.
Each model version adds its own offset (OUTPUT0 = INPUT0 + INPUT1 + offset), so every answer
tells which registry version gave it.
"""

from __future__ import annotations

import contextlib
import shutil
import threading
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import mlflow
import mlflow.onnx
import numpy as np
import onnx
import pytest
import tritonclient.grpc as triton
from mlflow.tracking import MlflowClient
from tritonclient.utils import InferenceServerException

from tests.integration.conftest import wait_until_ready
from tests.support.mlflow_server import MlflowServer
from tests.support.model_factory import CORRUPT_MODEL_BYTES, write_add_sub_model
from tests.support.server_process import ServerProcess

MLFLOW_ENV = {"MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
INPUT0 = np.full((1, 16), 10.0, np.float32)
INPUT1 = np.full((1, 16), 1.0, np.float32)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    server = MlflowServer(tmp_path_factory.mktemp("mlflow"))
    server.start()
    with pytest.MonkeyPatch.context() as env:
        for key, value in MLFLOW_ENV.items():
            env.setenv(key, value)
        try:
            yield server
        finally:
            server.stop()


class Registrar:
    """Registers model versions through MLflow's client, each with its own offset."""

    def __init__(self, uri: str, scratch: Path) -> None:
        mlflow.set_tracking_uri(uri)
        self.client = MlflowClient(uri)
        self.scratch = scratch
        self.runs: dict[tuple[str, int], str] = {}

    def onnx_flavor(self, name: str, offset: float, *, served: bool = True) -> int:
        model = write_add_sub_model(self.scratch / name, name, offset=offset, with_config=False)
        with mlflow.start_run() as run:
            info = mlflow.onnx.log_model(
                onnx.load(model.model_path), name="model", registered_model_name=name
            )
        version = int(info.registered_model_version)
        if served:
            self.client.set_registered_model_tag(name, "tensorgate.serve", "true")
        self.runs[(name, version)] = run.info.run_id
        return version

    def directory(
        self, name: str, offset: float, *, corrupt: bool = False, config: str = ""
    ) -> int:
        """A plain artifact directory: model.onnx (garbage when `corrupt`) and config.pbtxt."""
        files = self.scratch / f"{name}-{offset}"
        model = write_add_sub_model(self.scratch / "models", name, offset=offset, with_config=False)
        files.mkdir()
        shutil.copy(model.model_path, files / "model.onnx")
        if corrupt:
            (files / "model.onnx").write_bytes(CORRUPT_MODEL_BYTES)
        if config:
            (files / "config.pbtxt").write_text(config)
        with mlflow.start_run() as run:
            mlflow.log_artifacts(str(files), artifact_path="model")
        if not self.client.search_registered_models(f"name = '{name}'"):
            self.client.create_registered_model(name, tags={"tensorgate.serve": "true"})
        created = self.client.create_model_version(
            name, source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id
        )
        version = int(created.version)
        self.runs[(name, version)] = run.info.run_id
        return version

    def point(self, name: str, alias: str, version: int) -> None:
        self.client.set_registered_model_alias(name, alias, str(version))


@pytest.fixture
def registrar(registry: MlflowServer, tmp_path: Path) -> Registrar:
    return Registrar(registry.uri, tmp_path)


@contextlib.contextmanager
def serving(
    registry: MlflowServer, cache: Path, *args: str
) -> Iterator[tuple[ServerProcess, triton.InferenceServerClient]]:
    """tensorgate serving from `registry`, and a client of it; both stopped at the end."""
    extra = ["--mlflow-tracking-uri", registry.uri, "--mlflow-cache-dir", str(cache), *args]
    with ServerProcess(extra_args=extra, env=MLFLOW_ENV) as server:
        wait_until_ready(server.url)
        with triton.InferenceServerClient(server.url) as client:
            yield server, client


def polling(*args: str) -> tuple[str, ...]:
    return ("--model-control-mode", "poll", "--repository-poll-secs", "0.2", *args)


def offset_of(client: triton.InferenceServerClient, model: str, version: str = "") -> float:
    """Which version answered: its offset, read from OUTPUT0."""
    inputs = []
    for name, value in (("INPUT0", INPUT0), ("INPUT1", INPUT1)):
        tensor = triton.InferInput(name, list(value.shape), "FP32")
        tensor.set_data_from_numpy(value)
        inputs.append(tensor)
    result = client.infer(model, inputs, model_version=version, client_timeout=30)
    return float(result.as_numpy("OUTPUT0")[0, 0] - 11.0)


def index(client: triton.InferenceServerClient) -> dict[tuple[str, str], tuple[str, str]]:
    answer = client.get_model_repository_index(as_json=True)
    return {
        (m["name"], m.get("version", "")): (m.get("state", ""), m.get("reason", ""))
        for m in answer.get("models", [])
    }


def ready_versions(client: triton.InferenceServerClient, model: str) -> set[str]:
    return {
        v for (name, v), (state, _) in index(client).items() if name == model and state == "READY"
    }


def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 60.0) -> None:
    """Until `condition` holds, re-checked whenever the server could have changed (each check
    is a call to it); fails with `what` after `timeout_s`."""
    event = threading.Event()
    deadline = threading.Timer(timeout_s, event.set)
    deadline.start()
    try:
        while not condition():
            if event.wait(0.1):
                pytest.fail(f"timed out waiting for {what}")
    finally:
        deadline.cancel()


class ClosedLoop:
    """Clients that each call the model again as soon as answered, counting answers by
    offset and every failure, until stopped."""

    def __init__(self, url: str, model: str, clients: int = 4) -> None:
        self.answers: dict[float, int] = {}
        self.failures: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(url, model), daemon=True)
            for _ in range(clients)
        ]
        for thread in self._threads:
            thread.start()

    def _run(self, url: str, model: str) -> None:
        with triton.InferenceServerClient(url) as client:
            while not self._stop.is_set():
                try:
                    offset = offset_of(client, model)
                except Exception as error:  # every failure counts
                    with self._lock:
                        self.failures.append(str(error))
                    continue
                with self._lock:
                    self.answers[offset] = self.answers.get(offset, 0) + 1

    def count(self, offset: float) -> int:
        with self._lock:
            return self.answers.get(offset, 0)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)


def test_serves_the_champion_moves_it_under_load_and_rolls_back(
    registry: MlflowServer, registrar: Registrar, tmp_path: Path
) -> None:
    first = registrar.onnx_flavor("adder", 1.0)
    second = registrar.onnx_flavor("adder", 2.0)
    registrar.point("adder", "champion", first)
    with serving(registry, tmp_path / "cache", *polling()) as (server, client):
        assert index(client)[("adder", str(first))][0] == "READY"
        assert offset_of(client, "adder") == 1.0
        config = client.get_model_config("adder", str(first), as_json=True)["config"]
        parameters = {k: v["string_value"] for k, v in config["parameters"].items()}
        assert parameters["mlflow.registry_version"] == str(first)
        assert parameters["mlflow.aliases"] == "champion"
        assert parameters["mlflow.run_id"] == registrar.runs[("adder", first)]
        metrics = scrape(server)
        assert 'tensorgate_model_source_up{source="mlflow"} 1.0' in metrics
        run_id = registrar.runs[("adder", first)]
        assert (
            f'tensorgate_model_source_info{{aliases="champion",model="adder",'
            f'run_id="{run_id}",source="mlflow",version="{first}"}} 1.0'
        ) in metrics

        for target, offset in ((second, 2.0), (first, 1.0)):  # roll out, then back
            load = move_champion_under_load(server.url, client, registrar, target, offset)
            assert load.failures == []
            assert offset_of(client, "adder") == offset


def test_a_challenger_is_served_by_version_and_an_invalid_artifact_never_serves(
    registry: MlflowServer, registrar: Registrar, tmp_path: Path
) -> None:
    config = (
        "max_batch_size: 4\ndynamic_batching { }\nversion_policy { latest { num_versions: 1 } }\n"
    )
    champion = registrar.directory("scorer", 5.0, config=config)
    challenger = registrar.directory("scorer", 6.0, config=config)
    registrar.point("scorer", "champion", champion)
    registrar.point("scorer", "challenger", challenger)
    second_alias = polling("--mlflow-second-alias", "challenger")
    with serving(registry, tmp_path / "cache", *second_alias) as (_, client):
        # The logged config is used (its version policy is the aliases' to decide).
        assert client.get_model_config("scorer", as_json=True)["config"]["max_batch_size"] == 4
        assert offset_of(client, "scorer", str(champion)) == 5.0
        assert offset_of(client, "scorer", str(challenger)) == 6.0
        assert offset_of(client, "scorer") == 6.0  # unnamed: the newest served version

        broken = registrar.directory("scorer", 7.0, corrupt=True)
        registrar.point("scorer", "challenger", broken)
        wait_for(
            lambda: (
                f"registry version {broken} not served"
                in index(client)[("scorer", str(champion))][1]
            ),
            "the invalid version reported",
        )
        assert "not a valid ONNX model" in index(client)[("scorer", str(champion))][1]
        assert ("scorer", str(broken)) not in index(client)
        assert offset_of(client, "scorer", str(champion)) == 5.0
        assert offset_of(client, "scorer", str(challenger)) == 6.0  # still serving


def test_a_registry_that_goes_down_takes_nothing_down_even_across_a_restart(
    tmp_path: Path,
) -> None:
    """Its own registry, stopped and started again on the same state and port."""
    own = MlflowServer(tmp_path / "own-registry")
    own.start()
    try:
        local = Registrar(own.uri, tmp_path / "scratch")
        version = local.onnx_flavor("steady", 3.0)
        local.point("steady", "champion", version)
        cache = tmp_path / "cache"
        with serving(own, cache, *polling()) as (server, client):
            assert offset_of(client, "steady") == 3.0
            own.stop()
            wait_for(
                lambda: "registry unreachable" in index(client)[("steady", str(version))][1],
                "the registry's failure reported",
            )
            assert index(client)[("steady", str(version))][0] == "READY"
            assert offset_of(client, "steady") == 3.0
            assert 'tensorgate_model_source_up{source="mlflow"} 0.0' in scrape(server)

        # Restarted while the registry is still down: serves what it fetched before.
        with serving(own, cache, *polling()) as (server, client):
            assert offset_of(client, "steady") == 3.0
            own.start()
            wait_for(
                lambda: index(client)[("steady", str(version))][1] == "",
                "the registry reachable again",
            )
    finally:
        own.stop()


def test_explicit_mode_fetches_on_demand_and_serves_untagged_models_it_is_given(
    registry: MlflowServer, registrar: Registrar, tmp_path: Path
) -> None:
    version = registrar.onnx_flavor("ondemand", 4.0, served=False)  # no tensorgate.serve tag
    explicit = ("--model-control-mode", "explicit", "--mlflow-models", "ondemand")
    with serving(registry, tmp_path / "cache", *explicit) as (_, client):
        assert not client.is_model_ready("ondemand")
        client.load_model("ondemand")
        assert client.is_model_ready("ondemand", str(version))  # newest: no alias set
        assert offset_of(client, "ondemand") == 4.0
        # Names the registry does not have: a clear refusal, and the server goes on.
        for missing in ("nowhere", "../ondemand"):
            with pytest.raises(InferenceServerException) as refused:
                client.load_model(missing)
            assert refused.value.status() == "StatusCode.NOT_FOUND", refused.value
            assert f"no model directory '{missing}'" in refused.value.message()
        assert offset_of(client, "ondemand") == 4.0


def move_champion_under_load(
    url: str,
    client: triton.InferenceServerClient,
    registrar: Registrar,
    target: int,
    offset: float,
) -> ClosedLoop:
    """Move adder's champion to `target` (answering `offset`) while clients call it; returns
    the load once the old version is retired and the clients have stopped."""
    load = ClosedLoop(url, "adder")
    try:
        wait_for(lambda: load.count(3.0 - offset) > 20, "traffic before the move")
        registrar.point("adder", "champion", target)
        wait_for(lambda: load.count(offset) > 20, f"answers from version {target}")
        wait_for(
            lambda: ready_versions(client, "adder") == {str(target)}, "the old version retired"
        )
    finally:
        load.stop()
    return load


def scrape(server: ServerProcess) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics") as answer:
        text: str = answer.read().decode()
        return text
