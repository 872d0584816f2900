"""RepositoryModelLoad with model files in the request (`file:<path>` parameters), as Triton
takes them: a model that is not in the repository loads from them, and a serving model is
swapped to them without a failed request."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as triton
import tritonclient.http as triton_http
from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2 as mc
from tritonclient.utils import InferenceServerException

from tests.support import model_factory as mf
from tests.support.server_process import ServerProcess

COLUMNS = mf.ADD_SUB_ELEMENT_COUNT


def _model_files(tmp_path: Path, offset: float) -> tuple[dict[str, bytes], str]:
    """The files of an add_sub model whose OUTPUT0 is INPUT0 + INPUT1 + offset, and its config
    as JSON (the `config` load parameter)."""
    written = mf.write_add_sub_model(tmp_path / f"staging_{offset}", "m", offset=offset)
    assert written.config_path is not None
    config = text_format.Parse(written.config_path.read_text(), mc.ModelConfig())
    return {"file:1/model.onnx": written.model_path.read_bytes()}, json_format.MessageToJson(config)


def _infer(client: triton.InferenceServerClient, model: str) -> np.ndarray:
    ones = np.ones((1, COLUMNS), np.float32)
    inputs = [triton.InferInput(name, [1, COLUMNS], "FP32") for name in ("INPUT0", "INPUT1")]
    for tensor in inputs:
        tensor.set_data_from_numpy(ones)
    return client.infer(model, inputs).as_numpy("OUTPUT0")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    repo = tmp_path_factory.mktemp("load_files")
    mf.write_add_sub_model(repo, "simple")
    process = ServerProcess(repo, ["--model-control-mode", "explicit", "--load-model", "simple"])
    try:
        yield process
    finally:
        process.stop()


def test_a_model_not_in_the_repository_loads_from_the_request(
    client: triton.InferenceServerClient, tmp_path: Path
) -> None:
    files, config = _model_files(tmp_path, offset=10.0)
    client.load_model("uploaded", config=config.replace('"m"', '"uploaded"'), files=files)
    assert client.is_model_ready("uploaded")
    np.testing.assert_allclose(_infer(client, "uploaded"), np.full((1, COLUMNS), 12.0))
    client.unload_model("uploaded")
    assert not client.is_model_ready("uploaded")


def test_a_serving_model_is_swapped_to_the_files_without_a_failed_request(
    client: triton.InferenceServerClient, server: ServerProcess, tmp_path: Path
) -> None:
    files, config = _model_files(tmp_path, offset=5.0)
    loaded = threading.Event()
    failures: list[Exception] = []
    answers: list[float] = []

    def hammer() -> None:
        with triton.InferenceServerClient(server.url) as own:
            after = 0
            while after < 20:  # keep calling until 20 calls after the swap returned
                try:
                    answers.append(float(_infer(own, "simple")[0, 0]))
                except InferenceServerException as error:
                    failures.append(error)
                if loaded.is_set():
                    after += 1

    threads = [threading.Thread(target=hammer) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        client.load_model("simple", config=config.replace('"m"', '"simple"'), files=files)
    finally:
        loaded.set()
        for thread in threads:
            thread.join(timeout=60)
    assert failures == []
    assert answers[-1] == 7.0  # 1 + 1 + 5: the uploaded version answers now
    assert set(answers) <= {2.0, 7.0}


@pytest.mark.parametrize("path", ["../escape.onnx", "/etc/model.onnx", "1/../../x.onnx", ""])
def test_a_file_path_that_would_leave_the_model_directory_is_refused(
    client: triton.InferenceServerClient, path: str
) -> None:
    with pytest.raises(InferenceServerException) as info:
        client.load_model("sneaky", files={f"file:{path}": b"not a model"})
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert info.value.message().startswith("failed to load 'sneaky'")
    assert "inside the model's directory" in info.value.message()


def test_files_that_are_not_a_model_fail_the_load_and_leave_the_serving_version(
    client: triton.InferenceServerClient,
) -> None:
    before = _infer(client, "simple")
    with pytest.raises(InferenceServerException) as info:
        client.load_model("simple", files={"file:1/model.onnx": b"not an onnx model"})
    assert info.value.message().startswith("failed to load 'simple'")
    np.testing.assert_array_equal(_infer(client, "simple"), before)


def test_http_takes_the_files_in_base64(server: ServerProcess, tmp_path: Path) -> None:
    files, config = _model_files(tmp_path, offset=3.0)
    http = triton_http.InferenceServerClient(server.http_url)
    try:
        http.load_model("over_http", config=config.replace('"m"', '"over_http"'), files=files)
        assert http.is_model_ready("over_http")
    finally:
        http.close()
    with triton.InferenceServerClient(server.url) as client:
        np.testing.assert_allclose(_infer(client, "over_http"), np.full((1, COLUMNS), 5.0))
        client.unload_model("over_http")


def test_a_file_the_file_system_cannot_hold_fails_the_load_as_in_triton(
    client: triton.InferenceServerClient,
) -> None:
    # simple_grpc_model_control: a path component longer than NAME_MAX is refused, the server
    # goes on, and the message is Triton's.
    with pytest.raises(InferenceServerException) as info:
        client.load_model("simple", config="{}", files={"file:" + "A" * 256: b"a"})
    assert info.value.status() == "StatusCode.INTERNAL"
    assert "failed to poll from model repository" in info.value.message()
    assert "File name too long" in info.value.message()
    assert client.is_model_ready("simple")
