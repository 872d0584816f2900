"""ModelStreamInfer through the real server: tritonclient's stream API and the raw stub.

Streams carry ModelStreamInferResponse messages; each request goes through the batcher like a
unary one and its answer carries its id; an error answers its own request in error_message and
the stream goes on, unless the client sent `triton_grpc_error: true`, when it ends the stream
with a gRPC status. A client that cancels mid-stream has its queued requests dropped.
"""

from __future__ import annotations

import queue
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
WAIT_S = 30
# A queue delay far longer than any test: requests to this model wait in its queue until the
# preferred batch size (which the tests never reach) or the end of the test.
HELD_CONFIG = (
    "dynamic_batching { max_queue_delay_microseconds: 600000000 preferred_batch_size: [ 64 ] }"
)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("streaming_repo")
    mf.write_add_sub_model(
        repo,
        "add_sub",
        max_batch_size=8,
        offset=0.5,
        config_extra="dynamic_batching { max_queue_delay_microseconds: 2000 }",
    )
    mf.write_identity_model(repo, "identity_int32", "INT32", max_batch_size=8, with_config=True)
    mf.write_add_sub_model(repo, "held", max_batch_size=64, config_extra=HELD_CONFIG)
    return repo


@pytest.fixture(scope="module")
def server(repo: Path) -> Iterator[ServerProcess]:
    with ServerProcess(repo) as server:
        with grpc.insecure_channel(server.url) as channel:
            grpc.channel_ready_future(channel).result(timeout=WAIT_S)
        yield server


@pytest.fixture
def stub(server: ServerProcess) -> Iterator[service_pb2_grpc.GRPCInferenceServiceStub]:
    with grpc.insecure_channel(server.url) as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)


def _add_sub_inputs(seed: int, rows: int) -> tuple[list[triton.InferInput], np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((rows, COLUMNS), dtype=np.float32)
    b = rng.standard_normal((rows, COLUMNS), dtype=np.float32)
    tensors = []
    for name, value in (("INPUT0", a), ("INPUT1", b)):
        tensor = triton.InferInput(name, list(value.shape), "FP32")
        tensor.set_data_from_numpy(value)
        tensors.append(tensor)
    return tensors, a, b


def _identity_inputs(seed: int, rows: int) -> tuple[list[triton.InferInput], np.ndarray]:
    value = mf.make_array("INT32", (rows, mf.IDENTITY_ELEMENT_COUNT), seed=seed)
    tensor = triton.InferInput("INPUT0", list(value.shape), "INT32")
    tensor.set_data_from_numpy(value)
    return [tensor], value


def _raw_add_sub_request(
    model: str, request_id: str, rows: int = 1
) -> service_pb2.ModelInferRequest:
    request = service_pb2.ModelInferRequest(model_name=model, id=request_id)
    for name in ("INPUT0", "INPUT1"):
        tensor = request.inputs.add(name=name, datatype="FP32")
        tensor.shape.extend([rows, COLUMNS])
        request.raw_input_contents.append(np.ones((rows, COLUMNS), np.float32).tobytes())
    return request


def _statistics(client: triton.InferenceServerClient, model: str) -> tuple[int, int, int]:
    (stats,) = client.get_inference_statistics(model).model_stats
    return (
        stats.inference_count,
        stats.inference_stats.success.count,
        stats.inference_stats.fail.count,
    )


class Answers:
    """tritonclient's stream callback, collecting (result, error) pairs."""

    def __init__(self) -> None:
        self._queue: queue.Queue[tuple[object, object]] = queue.Queue()

    def __call__(self, result: object, error: object) -> None:
        self._queue.put((result, error))

    def take(self, count: int) -> list[tuple[object, object]]:
        return [self._queue.get(timeout=WAIT_S) for _ in range(count)]


# ------------------------------------------------------------------------------------------------


def test_interleaved_models_on_one_stream_each_get_their_own_answer(client):
    stats_before = {m: _statistics(client, m) for m in ("add_sub", "identity_int32")}
    answers = Answers()
    client.start_stream(callback=answers)
    expected: dict[str, tuple[str, dict[str, np.ndarray]]] = {}
    try:
        for seed in range(60):
            rows = 1 + seed % 3
            request_id = f"req-{seed}"
            if seed % 2:
                inputs, a, b = _add_sub_inputs(seed, rows)
                client.async_stream_infer("add_sub", inputs, request_id=request_id)
                outputs = {"OUTPUT0": a + b + 0.5, "OUTPUT1": a - b}
                expected[request_id] = ("add_sub", outputs)
            else:
                inputs, value = _identity_inputs(seed, rows)
                client.async_stream_infer("identity_int32", inputs, request_id=request_id)
                expected[request_id] = ("identity_int32", {"OUTPUT0": value})
        received = answers.take(len(expected))
    finally:
        client.stop_stream()

    seen = set()
    for result, error in received:
        assert error is None, error
        response = result.get_response()
        model, outputs = expected[response.id]
        assert response.model_name == model
        assert response.model_version == "1"
        for name, value in outputs.items():
            np.testing.assert_allclose(result.as_numpy(name), value, rtol=1e-6)
        seen.add(response.id)
    assert seen == set(expected)

    # Each streamed request was observed like a unary one: 30 successes per model, no failures.
    for model in ("add_sub", "identity_int32"):
        _, successes, failures = _statistics(client, model)
        assert successes - stats_before[model][1] == 30
        assert failures == stats_before[model][2]


def test_stream_answers_are_stream_messages_and_errors_do_not_end_the_stream(stub):
    bad_shape = _raw_add_sub_request("add_sub", "bad-shape")
    bad_shape.inputs[0].shape[:] = [1, COLUMNS + 1]
    requests = [
        _raw_add_sub_request("add_sub", "good-1"),
        _raw_add_sub_request("no_such_model", "unknown-model"),
        bad_shape,
        _raw_add_sub_request("add_sub", "too-many-rows", rows=9),
        _raw_add_sub_request("add_sub", "good-2"),
    ]
    responses = list(stub.ModelStreamInfer(iter(requests), timeout=WAIT_S))

    assert all(type(r) is service_pb2.ModelStreamInferResponse for r in responses)
    by_id = {r.infer_response.id: r for r in responses}
    assert sorted(by_id) == sorted(r.id for r in requests)
    for good in ("good-1", "good-2"):
        answer = by_id[good]
        assert answer.error_message == ""
        output0 = np.frombuffer(answer.infer_response.raw_output_contents[0], np.float32)
        np.testing.assert_allclose(output0, np.full(COLUMNS, 2.5, np.float32))
    assert by_id["unknown-model"].error_message == (
        "Request for unknown model: 'no_such_model' is not found"
    )
    assert by_id["bad-shape"].error_message == (
        "input 'INPUT0': raw data has 64 bytes, but shape [1, 17] of FP32 needs 68 bytes"
    )
    assert "9 rows, more than max_batch_size 8" in by_id["too-many-rows"].error_message
    assert by_id["unknown-model"].infer_response.model_name == "no_such_model"


def test_errors_mid_stream_through_tritonclient(client):
    answers = Answers()
    client.start_stream(callback=answers)
    try:
        inputs, a, b = _add_sub_inputs(1, 2)
        client.async_stream_infer("add_sub", inputs, request_id="before")
        client.async_stream_infer("no_such_model", inputs, request_id="bad")
        client.async_stream_infer("add_sub", inputs, request_id="after")
        received = answers.take(3)
    finally:
        client.stop_stream()
    errors = [error for _, error in received if error is not None]
    results = [result for result, error in received if error is None]
    assert len(errors) == 1
    assert isinstance(errors[0], InferenceServerException)
    assert "Request for unknown model: 'no_such_model' is not found" in errors[0].message()
    assert sorted(r.get_response().id for r in results) == ["after", "before"]
    for result in results:
        np.testing.assert_allclose(result.as_numpy("OUTPUT0"), a + b + 0.5, rtol=1e-6)


def test_triton_grpc_error_header_ends_the_stream_with_a_status(stub):
    requests = [
        _raw_add_sub_request("add_sub", "good"),
        _raw_add_sub_request("no_such_model", "bad"),
    ]
    responses = stub.ModelStreamInfer(
        iter(requests), timeout=WAIT_S, metadata=(("triton_grpc_error", "true"),)
    )
    with pytest.raises(grpc.RpcError) as info:
        for response in responses:
            # The good request may or may not answer before the bad one ends the stream.
            assert response.infer_response.id == "good"
            assert response.error_message == ""
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert info.value.details() == "Request for unknown model: 'no_such_model' is not found"


def test_triton_grpc_error_header_through_tritonclient(client):
    answers = Answers()
    client.start_stream(callback=answers, headers={"triton_grpc_error": "true"})
    try:
        inputs, _, _ = _add_sub_inputs(2, 1)
        inputs[0].set_shape([1, COLUMNS])
        client.async_stream_infer("add_sub", inputs[:1], request_id="missing-input")
        ((result, error),) = answers.take(1)
    finally:
        client.stop_stream()
    assert result is None
    assert isinstance(error, InferenceServerException)
    assert error.status() == "StatusCode.INVALID_ARGUMENT"
    assert "expects input 'INPUT1'" in error.message()


def test_more_requests_than_the_in_flight_limit_are_all_answered(stub):
    count = 500  # well past the per-stream limit: the server reads as it answers
    requests = (_raw_add_sub_request("add_sub", f"r{i}", rows=1 + i % 4) for i in range(count))
    ids = set()
    for response in stub.ModelStreamInfer(requests, timeout=60):
        assert response.error_message == ""
        ids.add(response.infer_response.id)
    assert ids == {f"r{i}" for i in range(count)}


def test_client_cancel_mid_stream_drops_its_queued_requests(server, client):
    before = _statistics(client, "held")
    answers = Answers()
    client.start_stream(callback=answers)
    held = 5
    for index in range(held):
        inputs, _, _ = _add_sub_inputs(index, 1)
        client.async_stream_infer("held", inputs, request_id=f"held-{index}")
    # The server reads a stream in order: once this later request is answered, the held ones
    # have been read and are waiting in their model's queue.
    inputs, a, b = _add_sub_inputs(99, 1)
    client.async_stream_infer("add_sub", inputs, request_id="marker")
    ((result, error),) = answers.take(1)
    assert error is None and result.get_response().id == "marker"

    mark = server.log_mark()
    client.stop_stream(cancel_requests=True)
    server.wait_for_log(
        rf"ModelStreamInfer cancelled by the client; {held} requests in flight dropped",
        start=mark,
        timeout_s=WAIT_S,
    )
    inferences, successes, failures = _statistics(client, "held")
    assert inferences == before[0]  # none of them ran
    assert successes == before[1]
    assert failures - before[2] == held

    # The server is unaffected: a new stream on the same client works.
    answers = Answers()
    client.start_stream(callback=answers)
    try:
        client.async_stream_infer("add_sub", inputs, request_id="after-cancel")
        ((result, error),) = answers.take(1)
    finally:
        client.stop_stream()
    assert error is None
    np.testing.assert_allclose(result.as_numpy("OUTPUT0"), a + b + 0.5, rtol=1e-6)
