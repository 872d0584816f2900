"""Where Triton's message for a case is known, ours starts with Triton's words: Triton's own
client examples match on them (grpc_explicit_int_content_client, simple_grpc_model_control,
simple_grpc_health_metadata, ...). Status codes are Triton's too. Each case is sent the way the
example sends it, through tritonclient or its raw stubs, to a real server."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from tests.support import model_factory as mf
from tests.support.server_process import ServerProcess

COLUMNS = mf.ADD_SUB_ELEMENT_COUNT


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("triton_messages")
    mf.write_add_sub_model(repo, "simple")
    return repo


@pytest.fixture(scope="module")
def server(repository: Path) -> Iterator[ServerProcess]:
    args = ["--model-control-mode", "explicit", "--load-model", "simple"]
    process = ServerProcess(repository, args)
    try:
        yield process
    finally:
        process.stop()


def _mixed_request() -> service_pb2.ModelInferRequest:
    """INPUT0 in typed contents, INPUT1 in raw_input_contents (grpc_explicit_*_content_client)."""
    request = service_pb2.ModelInferRequest(model_name="simple")
    input0 = request.inputs.add(name="INPUT0", datatype="FP32", shape=[1, COLUMNS])
    input0.contents.fp32_contents.extend([1.0] * COLUMNS)
    request.inputs.add(name="INPUT1", datatype="FP32", shape=[1, COLUMNS])
    request.raw_input_contents.append(np.ones((1, COLUMNS), np.float32).tobytes())
    return request


def test_typed_contents_beside_raw_contents(server: ServerProcess) -> None:
    with grpc.insecure_channel(server.url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.ModelInfer(_mixed_request(), timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details().startswith(
        "contents field must not be specified when using raw_input_contents for 'INPUT0' for "
        "model 'simple'"
    )


@pytest.mark.parametrize("call", ["metadata", "infer"])
def test_a_version_that_is_not_a_number(client: triton.InferenceServerClient, call: str) -> None:
    with pytest.raises(InferenceServerException) as info:
        if call == "metadata":
            client.get_model_metadata("simple", model_version="wrong_specification")
        else:
            inputs = [triton.InferInput(n, [1, COLUMNS], "FP32") for n in ("INPUT0", "INPUT1")]
            for tensor in inputs:
                tensor.set_data_from_numpy(np.ones((1, COLUMNS), np.float32))
            client.infer("simple", inputs, model_version="wrong_specification")
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert info.value.message().startswith(
        "failed to get model version from specified version string 'wrong_specification'"
    )


def test_an_unknown_model(client: triton.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException) as info:
        client.get_model_metadata("wrong_model_name")
    assert info.value.status() == "StatusCode.NOT_FOUND"
    assert info.value.message() == "Request for unknown model: 'wrong_model_name' is not found"
    with pytest.raises(InferenceServerException) as info:
        client.get_model_metadata("simple", model_version="9")
    assert info.value.message() == "Request for unknown model: 'simple' version 9 is not found"


@pytest.mark.parametrize(
    ("model", "config", "status"),
    [
        ("no_such_model", None, "StatusCode.NOT_FOUND"),
        ("simple", '{"max_batch_size": "not a number"}', "StatusCode.INVALID_ARGUMENT"),
    ],
    ids=["unknown model", "malformed config override"],
)
def test_a_load_that_fails(
    client: triton.InferenceServerClient, model: str, config: str | None, status: str
) -> None:
    with pytest.raises(InferenceServerException) as info:
        client.load_model(model, config=config)
    assert info.value.status() == status
    assert info.value.message().startswith(f"failed to load '{model}'")
    assert client.is_model_ready("simple")  # the serving model is untouched


def test_http_answers_with_the_same_words(server: ServerProcess) -> None:
    url = f"http://{server.http_url}/v2/models/wrong_model_name"
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(url, timeout=10)
    assert info.value.code == 404
    assert json.loads(info.value.read()) == {
        "error": "Request for unknown model: 'wrong_model_name' is not found"
    }
    load = urllib.request.Request(
        f"http://{server.http_url}/v2/repository/models/no_such_model/load", b"{}", method="POST"
    )
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(load, timeout=10)
    assert json.loads(info.value.read())["error"].startswith("failed to load 'no_such_model'")


@pytest.mark.parametrize(
    ("model", "config_extra", "words"),
    [
        ("repeat", "model_transaction_policy { decoupled: true }", "decoupled mode"),
        ("sequence", "sequence_batching { max_sequence_idle_microseconds: 5000000 }", "sequence"),
    ],
)
def test_models_that_would_leave_a_client_waiting_are_refused_at_load(
    repository: Path,
    client: triton.InferenceServerClient,
    model: str,
    config_extra: str,
    words: str,
) -> None:
    mf.write_add_sub_model(repository, model, config_extra=config_extra)
    with pytest.raises(InferenceServerException) as info:
        client.load_model(model)
    assert info.value.message().startswith(f"failed to load '{model}'")
    assert f"{words}" in info.value.message()
    assert "is not supported" in info.value.message()
    assert not client.is_model_ready(model)
    index = {entry.name: entry for entry in client.get_model_repository_index().models}
    assert words in index[model].reason
