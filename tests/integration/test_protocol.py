"""The v2 protocol as tritonclient sees it: metadata, config, results, versions and statistics.

Bundled example models are compared with onnxruntime run in this process on the same file; the
other tests use repositories built with tests/support/model_factory.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as triton
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2
from tritonclient.utils import InferenceServerException

from tests.support import model_factory as mf
from tests.support.server_process import REPO_ROOT, ServerProcess

EXAMPLE_MODELS = REPO_ROOT / "server" / "example_models"
PLATFORM = "onnxruntime_onnx"


def _serve(repo: Path) -> ServerProcess:
    server = ServerProcess(repo)
    try:
        with grpc.insecure_channel(server.url) as channel:
            grpc.channel_ready_future(channel).result(timeout=30)
    except BaseException:
        server.stop()
        raise
    return server


def _session(model: str) -> ort.InferenceSession:
    path = EXAMPLE_MODELS / model / "1" / "model.onnx"
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _input(name: str, array: np.ndarray) -> triton.InferInput:
    tensor = triton.InferInput(name, list(array.shape), _datatype(array))
    tensor.set_data_from_numpy(array)
    return tensor


def _datatype(array: np.ndarray) -> str:
    return {
        np.dtype(np.float32): "FP32",
        np.dtype(np.float64): "FP64",
        np.dtype(np.int64): "INT64",
        np.dtype(np.int32): "INT32",
    }[array.dtype]


def _tensors(metadata_tensors: object) -> list[tuple[str, str, list[int]]]:
    return [(t.name, t.datatype, list(t.shape)) for t in metadata_tensors]


def _config_tensors(config_tensors: object) -> list[tuple[str, str, list[int]]]:
    return [
        (t.name, model_config_pb2.DataType.Name(t.data_type), list(t.dims)) for t in config_tensors
    ]


# ------------------------------------------------------------------------------------------------
# Server metadata
# ------------------------------------------------------------------------------------------------


def test_server_metadata_names_server_and_extensions(client: triton.InferenceServerClient):
    metadata = client.get_server_metadata()
    assert metadata.name == "tensorgate"
    assert metadata.version
    # perf_analyzer reads server-side statistics only when "statistics" is listed.
    assert "statistics" in metadata.extensions
    assert "model_configuration" in metadata.extensions
    assert len(set(metadata.extensions)) == len(metadata.extensions)


def test_server_live_and_ready(client: triton.InferenceServerClient):
    assert client.is_server_live()
    assert client.is_server_ready()
    for model in ("tabular_classifier", "image_classifier", "text_encoder"):
        assert client.is_model_ready(model)
        assert client.is_model_ready(model, "1")


# ------------------------------------------------------------------------------------------------
# Metadata and config of the bundled models
# ------------------------------------------------------------------------------------------------

BUNDLED_METADATA = {
    "tabular_classifier": (
        [("features", "FP32", [-1, 16])],
        [("probabilities", "FP32", [-1, 3]), ("label", "INT64", [-1])],
    ),
    "image_classifier": (
        [("image", "FP32", [-1, 3, 64, 64])],
        [("logits", "FP32", [-1, 10])],
    ),
    "text_encoder": (
        [("input_ids", "INT64", [-1, -1]), ("attention_mask", "INT64", [-1, -1])],
        [("embedding", "FP32", [-1, 64])],
    ),
}


@pytest.mark.parametrize("model", sorted(BUNDLED_METADATA))
def test_bundled_model_metadata(client: triton.InferenceServerClient, model: str):
    metadata = client.get_model_metadata(model)
    inputs, outputs = BUNDLED_METADATA[model]
    assert metadata.name == model
    assert list(metadata.versions) == ["1"]
    assert metadata.platform == PLATFORM
    assert _tensors(metadata.inputs) == inputs
    assert _tensors(metadata.outputs) == outputs
    # Explicit version gives the same answer.
    assert client.get_model_metadata(model, "1") == metadata


def test_tabular_classifier_config_is_auto_completed(client: triton.InferenceServerClient):
    assert not (EXAMPLE_MODELS / "tabular_classifier" / "config.pbtxt").exists()
    config = client.get_model_config("tabular_classifier").config
    assert config.name == "tabular_classifier"
    assert config.platform == PLATFORM
    assert config.backend == "onnxruntime"
    assert config.max_batch_size == 32
    # dims exclude the batch dimension.
    assert _config_tensors(config.input) == [("features", "TYPE_FP32", [16])]
    assert _config_tensors(config.output) == [
        ("probabilities", "TYPE_FP32", [3]),
        ("label", "TYPE_INT64", []),
    ]
    assert config.HasField("dynamic_batching")
    assert config.default_model_filename == "model.onnx"
    assert len(config.instance_group) >= 1
    assert config.instance_group[0].count >= 1


def _file_config(model: str) -> model_config_pb2.ModelConfig:
    path = EXAMPLE_MODELS / model / "config.pbtxt"
    return text_format.Parse(path.read_text(encoding="utf-8"), model_config_pb2.ModelConfig())


def _assert_served_config_keeps_file_settings(model: str, config: object) -> None:
    """What config.pbtxt says is served unchanged; the server only fills in what it leaves out."""
    given = _file_config(model)
    assert config.max_batch_size == given.max_batch_size
    assert list(config.input) == list(given.input)
    assert list(config.output) == list(given.output)
    assert config.dynamic_batching == given.dynamic_batching
    assert dict(config.parameters) == dict(given.parameters)
    if given.instance_group:
        assert list(config.instance_group) == list(given.instance_group)


def test_image_classifier_config(client: triton.InferenceServerClient):
    config = client.get_model_config("image_classifier").config
    assert config.name == "image_classifier"
    assert config.platform == PLATFORM
    assert config.max_batch_size == 32
    assert _config_tensors(config.input) == [("image", "TYPE_FP32", [3, 64, 64])]
    assert _config_tensors(config.output) == [("logits", "TYPE_FP32", [10])]
    assert config.HasField("dynamic_batching")
    assert [g.kind for g in config.instance_group] == [model_config_pb2.ModelInstanceGroup.KIND_CPU]
    _assert_served_config_keeps_file_settings("image_classifier", config)


def test_text_encoder_config_has_variable_sequence_length(client: triton.InferenceServerClient):
    config = client.get_model_config("text_encoder").config
    assert config.name == "text_encoder"
    assert config.platform == PLATFORM
    assert config.max_batch_size == 64
    assert _config_tensors(config.input) == [
        ("input_ids", "TYPE_INT64", [-1]),
        ("attention_mask", "TYPE_INT64", [-1]),
    ]
    assert _config_tensors(config.output) == [("embedding", "TYPE_FP32", [64])]
    assert config.HasField("dynamic_batching")
    _assert_served_config_keeps_file_settings("text_encoder", config)


# ------------------------------------------------------------------------------------------------
# Results equal onnxruntime in this process
# ------------------------------------------------------------------------------------------------


def _bundled_inputs(model: str, batch: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    if model == "tabular_classifier":
        return {"features": rng.standard_normal((batch, 16)).astype(np.float32)}
    if model == "image_classifier":
        return {"image": rng.standard_normal((batch, 3, 64, 64)).astype(np.float32)}
    sequence = 7 + seed
    ids = rng.integers(1, 1000, size=(batch, sequence), dtype=np.int64)
    mask = np.ones((batch, sequence), dtype=np.int64)
    mask[0, sequence - 2 :] = 0  # padded tail in the first row
    ids[mask == 0] = 0
    return {"input_ids": ids, "attention_mask": mask}


@pytest.mark.parametrize(
    ("model", "batch"),
    [
        ("tabular_classifier", 1),
        ("tabular_classifier", 5),
        ("image_classifier", 2),
        ("text_encoder", 1),
        ("text_encoder", 3),
    ],
)
def test_bundled_model_outputs_equal_onnxruntime(
    client: triton.InferenceServerClient, model: str, batch: int
):
    inputs = _bundled_inputs(model, batch, seed=batch)
    session = _session(model)
    names = [o.name for o in session.get_outputs()]
    expected = dict(zip(names, session.run(names, inputs), strict=True))

    result = client.infer(model, [_input(name, array) for name, array in inputs.items()])
    response = result.get_response()
    assert response.model_name == model
    assert response.model_version == "1"
    assert [o.name for o in response.outputs] == names
    for name, want in expected.items():
        got = result.as_numpy(name)
        assert got.dtype == want.dtype, name
        assert got.shape == want.shape, name
        if want.dtype.kind == "f":
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=name)
        else:
            np.testing.assert_array_equal(got, want, err_msg=name)


def test_text_encoder_accepts_different_sequence_lengths(client: triton.InferenceServerClient):
    session = _session("text_encoder")
    for sequence in (1, 4, 33):
        ids = np.arange(1, 2 * sequence + 1, dtype=np.int64).reshape(2, sequence)
        mask = np.ones_like(ids)
        (want,) = session.run(["embedding"], {"input_ids": ids, "attention_mask": mask})
        result = client.infer(
            "text_encoder", [_input("input_ids", ids), _input("attention_mask", mask)]
        )
        np.testing.assert_allclose(result.as_numpy("embedding"), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("model", sorted(BUNDLED_METADATA))
def test_concurrent_requests_each_equal_onnxruntime(bundled_server: ServerProcess, model: str):
    """Requests the dynamic batcher may put together (different row counts and, for
    text_encoder, different sequence lengths) each get exactly their own rows back."""
    session = _session(model)
    names = [o.name for o in session.get_outputs()]
    cases = [_bundled_inputs(model, batch=1 + i % 3, seed=i % 4) for i in range(16)]
    expected = [dict(zip(names, session.run(names, inputs), strict=True)) for inputs in cases]

    def infer(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with triton.InferenceServerClient(bundled_server.url) as client:
            tensors = [_input(name, array) for name, array in inputs.items()]
            result = client.infer(model, tensors)
            return {name: result.as_numpy(name) for name in names}

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(infer, cases))
    for index, (got, want) in enumerate(zip(results, expected, strict=True)):
        for name in names:
            assert got[name].shape == want[name].shape, (index, name)
            if want[name].dtype.kind == "f":
                np.testing.assert_allclose(
                    got[name], want[name], rtol=1e-5, atol=1e-6, err_msg=f"{index} {name}"
                )
            else:
                np.testing.assert_array_equal(got[name], want[name], err_msg=f"{index} {name}")


# ------------------------------------------------------------------------------------------------
# A repository of add_sub versions and a statistics model
# ------------------------------------------------------------------------------------------------

OFFSETS = {1: 100.0, 2: 200.0, 3: 300.0}


@pytest.fixture(scope="module")
def add_sub_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    repo = tmp_path_factory.mktemp("protocol_repo")
    for version, offset in OFFSETS.items():
        mf.write_add_sub_model(
            repo,
            "add_sub",
            version=version,
            offset=offset,
            config_extra="version_policy: { all { } }",
        )
    # No version_policy: only the highest version is served.
    for version, offset in ((1, 1.0), (2, 2.0)):
        mf.write_add_sub_model(repo, "add_sub_latest", version=version, offset=offset)
    # A model of its own for statistics, without dynamic batching.
    mf.write_add_sub_model(repo, "add_sub_stats", max_batch_size=4)
    server = _serve(repo)
    yield server
    server.stop()


@pytest.fixture
def add_sub_client(add_sub_server: ServerProcess) -> Iterator[triton.InferenceServerClient]:
    with triton.InferenceServerClient(add_sub_server.url) as client:
        yield client


def _add_sub_inputs(rows: int = 1, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((rows, mf.ADD_SUB_ELEMENT_COUNT)).astype(np.float32)
    b = rng.standard_normal((rows, mf.ADD_SUB_ELEMENT_COUNT)).astype(np.float32)
    return a, b


def _infer_add_sub(
    client: triton.InferenceServerClient,
    model: str = "add_sub",
    *,
    version: str = "",
    outputs: list[str] | None = None,
    rows: int = 1,
    request_id: str = "",
) -> tuple[triton.InferResult, np.ndarray, np.ndarray]:
    a, b = _add_sub_inputs(rows)
    requested = [triton.InferRequestedOutput(name) for name in outputs] if outputs else None
    result = client.infer(
        model,
        [_input("INPUT0", a), _input("INPUT1", b)],
        model_version=version,
        outputs=requested,
        request_id=request_id,
    )
    return result, a, b


def test_all_outputs_in_model_order_when_none_requested(
    add_sub_client: triton.InferenceServerClient,
):
    result, a, b = _infer_add_sub(add_sub_client)
    response = result.get_response()
    assert [o.name for o in response.outputs] == ["OUTPUT0", "OUTPUT1"]
    assert [(o.datatype, list(o.shape)) for o in response.outputs] == [("FP32", [1, 16])] * 2
    assert len(response.raw_output_contents) == 2
    np.testing.assert_allclose(result.as_numpy("OUTPUT0"), a + b + OFFSETS[3], rtol=1e-6)
    np.testing.assert_allclose(result.as_numpy("OUTPUT1"), a - b, rtol=1e-6)


def test_requested_output_subset(add_sub_client: triton.InferenceServerClient):
    result, a, b = _infer_add_sub(add_sub_client, outputs=["OUTPUT1"])
    response = result.get_response()
    assert [o.name for o in response.outputs] == ["OUTPUT1"]
    assert len(response.raw_output_contents) == 1
    assert result.as_numpy("OUTPUT0") is None
    np.testing.assert_allclose(result.as_numpy("OUTPUT1"), a - b, rtol=1e-6)


def test_requested_outputs_come_back_in_requested_order(
    add_sub_client: triton.InferenceServerClient,
):
    result, a, b = _infer_add_sub(add_sub_client, outputs=["OUTPUT1", "OUTPUT0"], rows=3)
    response = result.get_response()
    assert [o.name for o in response.outputs] == ["OUTPUT1", "OUTPUT0"]
    # raw_output_contents[i] belongs to outputs[i].
    first = np.frombuffer(response.raw_output_contents[0], np.float32).reshape(3, 16)
    np.testing.assert_allclose(first, a - b, rtol=1e-6)
    np.testing.assert_allclose(result.as_numpy("OUTPUT0"), a + b + OFFSETS[3], rtol=1e-6)


def test_request_id_is_echoed(add_sub_client: triton.InferenceServerClient):
    result, _, _ = _infer_add_sub(add_sub_client, request_id="req-42/ünïcode")
    assert result.get_response().id == "req-42/ünïcode"
    result, _, _ = _infer_add_sub(add_sub_client)
    assert result.get_response().id == ""


# versions ----------------------------------------------------------------------------------------


def test_version_policy_all_serves_every_version(add_sub_client: triton.InferenceServerClient):
    metadata = add_sub_client.get_model_metadata("add_sub")
    assert list(metadata.versions) == ["1", "2", "3"]
    for version in ("1", "2", "3"):
        assert add_sub_client.is_model_ready("add_sub", version)
        assert add_sub_client.get_model_metadata("add_sub", version).name == "add_sub"
    assert add_sub_client.get_model_config("add_sub").config.version_policy.HasField("all")


def test_default_version_is_the_highest(add_sub_client: triton.InferenceServerClient):
    result, a, b = _infer_add_sub(add_sub_client)
    assert result.get_response().model_version == "3"
    np.testing.assert_allclose(result.as_numpy("OUTPUT0"), a + b + 300.0, rtol=1e-6)


@pytest.mark.parametrize("version", [1, 2, 3])
def test_explicit_version_answers(add_sub_client: triton.InferenceServerClient, version: int):
    result, a, b = _infer_add_sub(add_sub_client, version=str(version))
    assert result.get_response().model_version == str(version)
    np.testing.assert_allclose(result.as_numpy("OUTPUT0"), a + b + OFFSETS[version], rtol=1e-6)
    np.testing.assert_allclose(result.as_numpy("OUTPUT1"), a - b, rtol=1e-6)


def test_unknown_version_is_not_found(add_sub_client: triton.InferenceServerClient):
    with pytest.raises(InferenceServerException) as info:
        _infer_add_sub(add_sub_client, version="4")
    assert info.value.status() == "StatusCode.NOT_FOUND"
    assert "add_sub" in info.value.message()
    assert "4" in info.value.message()
    assert not add_sub_client.is_model_ready("add_sub", "4")
    with pytest.raises(InferenceServerException) as info:
        add_sub_client.get_model_metadata("add_sub", "4")
    assert info.value.status() == "StatusCode.NOT_FOUND"


@pytest.mark.parametrize("version", ["abc", "1.0", "-1", "0"])
def test_non_numeric_version_is_invalid_argument(
    add_sub_client: triton.InferenceServerClient, version: str
):
    with pytest.raises(InferenceServerException) as info:
        _infer_add_sub(add_sub_client, version=version)
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert f"'{version}'" in info.value.message()
    assert "version" in info.value.message()


def test_default_version_policy_serves_only_the_latest(
    add_sub_client: triton.InferenceServerClient,
):
    metadata = add_sub_client.get_model_metadata("add_sub_latest")
    assert list(metadata.versions) == ["2"]
    result, a, b = _infer_add_sub(add_sub_client, "add_sub_latest")
    assert result.get_response().model_version == "2"
    np.testing.assert_allclose(result.as_numpy("OUTPUT0"), a + b + 2.0, rtol=1e-6)
    assert not add_sub_client.is_model_ready("add_sub_latest", "1")
    with pytest.raises(InferenceServerException) as info:
        _infer_add_sub(add_sub_client, "add_sub_latest", version="1")
    assert info.value.status() in ("StatusCode.NOT_FOUND", "StatusCode.UNAVAILABLE")
    assert "add_sub_latest" in info.value.message()


# statistics --------------------------------------------------------------------------------------


def test_model_statistics_count_known_traffic(add_sub_client: triton.InferenceServerClient):
    before = add_sub_client.get_inference_statistics("add_sub_stats").model_stats
    assert len(before) == 1
    assert before[0].inference_count == 0
    assert before[0].execution_count == 0
    assert before[0].last_inference == 0

    # Sequential requests: no two can share a batch. 1 + 2 + 2 + 3 = 8 rows in 4 executions.
    for rows in (1, 2, 2, 3):
        _infer_add_sub(add_sub_client, "add_sub_stats", rows=rows)
    # A request that fails validation (5 rows > max_batch_size 4) counts as a failure only.
    with pytest.raises(InferenceServerException):
        _infer_add_sub(add_sub_client, "add_sub_stats", rows=5)

    stats = add_sub_client.get_inference_statistics("add_sub_stats", "1").model_stats
    assert len(stats) == 1
    (model,) = stats
    assert model.name == "add_sub_stats"
    assert model.version == "1"
    assert model.inference_count == 8
    assert model.execution_count == 4
    assert model.last_inference > 0
    inference = model.inference_stats
    assert inference.success.count == 4
    assert inference.success.ns > 0
    assert inference.fail.count == 1
    assert inference.queue.count == 4
    assert inference.compute_infer.count == 4
    assert inference.compute_infer.ns > 0
    assert inference.compute_input.count == 4
    assert inference.compute_output.count == 4
    by_size = {b.batch_size: b.compute_infer.count for b in model.batch_stats}
    assert by_size == {1: 1, 2: 2, 3: 1}


def test_model_statistics_of_all_models(add_sub_client: triton.InferenceServerClient):
    stats = add_sub_client.get_inference_statistics().model_stats
    served = sorted((s.name, s.version) for s in stats)
    assert served == [
        ("add_sub", "1"),
        ("add_sub", "2"),
        ("add_sub", "3"),
        ("add_sub_latest", "2"),
        ("add_sub_stats", "1"),
    ]
    by_name = add_sub_client.get_inference_statistics("add_sub").model_stats
    assert sorted(s.version for s in by_name) == ["1", "2", "3"]


def test_model_statistics_of_unknown_model_is_not_found(
    add_sub_client: triton.InferenceServerClient,
):
    with pytest.raises(InferenceServerException) as info:
        add_sub_client.get_inference_statistics("no_such_model")
    assert info.value.status() == "StatusCode.NOT_FOUND"
    assert "no_such_model" in info.value.message()
