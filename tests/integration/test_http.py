"""The HTTP/REST front end through real clients: tritonclient.http for what a Triton user calls,
plain http.client for what a hand-written or hostile client sends.

One server on a repository of Identity models (every datatype) plus add_sub and a gated model
(a batch waits on a gate this module holds), shared by the tests that do not restart it.
"""

from __future__ import annotations

import gzip
import http.client
import json
import threading
import uuid
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
import tritonclient.utils.shared_memory as shm
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tritonclient.utils import InferenceServerException

from tests.support import model_factory as mf
from tests.support import probes
from tests.support import python_models as pm
from tests.support.server_process import ServerProcess

COLUMNS = mf.IDENTITY_ELEMENT_COUNT
ADD_SUB_COLUMNS = mf.ADD_SUB_ELEMENT_COUNT


def _identity(datatype: str) -> str:
    return f"identity_{datatype.lower()}"


@pytest.fixture(scope="module")
def gate() -> Iterator[pm.Gate]:
    with pm.Gate() as gate:
        yield gate


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, gate: pm.Gate) -> Iterator[ServerProcess]:
    repo = tmp_path_factory.mktemp("http_repo")
    for datatype in mf.SUPPORTED_DATATYPES:
        mf.write_identity_model(
            repo, _identity(datatype), datatype, max_batch_size=8, with_config=True
        )
    mf.write_add_sub_model(repo, "add_sub", max_batch_size=8, offset=0.5)
    # Batched: requests queued while a batch is held run together as the next batch.
    pm.write_python_model(
        repo, "gated", pm.GATED_SOURCE, pm.GATED_CONFIG % gate.port + "dynamic_batching { }\n"
    )
    with ServerProcess(repo, ["--max-message-bytes", str(1 << 20)]) as server:
        with grpc.insecure_channel(server.url) as channel:
            grpc.channel_ready_future(channel).result(timeout=30)
        yield server


@pytest.fixture
def client(server: ServerProcess) -> Iterator[triton_http.InferenceServerClient]:
    with triton_http.InferenceServerClient(server.http_url, concurrency=8) as client:
        yield client


def request(
    server: ServerProcess,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """One plain HTTP/1.1 request: status, lower-cased headers, body."""
    connection = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=30)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return (
            response.status,
            {k.lower(): v for k, v in response.getheaders()},
            response.read(),
        )
    finally:
        connection.close()


def error_of(body: bytes) -> str:
    document = json.loads(body)
    assert set(document) == {"error"}, document
    return str(document["error"])


def add_sub_body(rows: int = 1, value: float = 1.0) -> dict[str, Any]:
    data = [value] * (rows * ADD_SUB_COLUMNS)
    return {
        "inputs": [
            {"name": "INPUT0", "datatype": "FP32", "shape": [rows, ADD_SUB_COLUMNS], "data": data},
            {"name": "INPUT1", "datatype": "FP32", "shape": [rows, ADD_SUB_COLUMNS], "data": data},
        ]
    }


# health, metadata, config ----------------------------------------------------------------------


def test_health_metadata_and_config_match_the_grpc_answers(
    server: ServerProcess, client: triton_http.InferenceServerClient
) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("add_sub")
    assert not client.is_model_ready("no_such_model")
    metadata = client.get_server_metadata()
    assert metadata["name"] == "tensorgate"
    assert "binary_tensor_data" in metadata["extensions"]
    with triton_grpc.InferenceServerClient(server.url) as grpc_client:
        over_grpc = grpc_client.get_model_metadata("add_sub", as_json=True)
        config_over_grpc = grpc_client.get_model_config("add_sub", as_json=True)["config"]
    over_http = client.get_model_metadata("add_sub")
    assert over_http["name"] == "add_sub"
    assert over_http["versions"] == over_grpc["versions"]
    for field in ("inputs", "outputs"):
        assert [
            (t["name"], t["datatype"], [int(d) for d in t["shape"]]) for t in over_http[field]
        ] == [(t["name"], t["datatype"], [int(d) for d in t["shape"]]) for t in over_grpc[field]]
    config = client.get_model_config("add_sub")
    assert config["name"] == "add_sub"
    assert config["max_batch_size"] == config_over_grpc["max_batch_size"] == 8
    assert [i["name"] for i in config["input"]] == ["INPUT0", "INPUT1"]


def test_unknown_model_is_404_with_a_json_error(server: ServerProcess) -> None:
    status, headers, body = request(server, "GET", "/v2/models/nope")
    assert status == 404
    assert headers["content-type"] == "application/json"
    assert "nope" in error_of(body)
    status, _, body = request(
        server, "POST", "/v2/models/nope/infer", json.dumps(add_sub_body()).encode()
    )
    assert status == 404
    assert "nope" in error_of(body)


# inference: every datatype, JSON and binary ----------------------------------------------------


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
@pytest.mark.parametrize("datatype", mf.SUPPORTED_DATATYPES)
def test_every_datatype_round_trips(
    client: triton_http.InferenceServerClient, datatype: str, binary: bool
) -> None:
    data = mf.make_array(datatype, (3, COLUMNS), seed=11)
    tensor = triton_http.InferInput("INPUT0", list(data.shape), datatype)
    tensor.set_data_from_numpy(data, binary_data=binary)
    wanted = triton_http.InferRequestedOutput("OUTPUT0", binary_data=binary)
    result = client.infer(_identity(datatype), [tensor], outputs=[wanted])
    output = result.get_output("OUTPUT0")
    assert output["datatype"] == datatype
    assert output["shape"] == [3, COLUMNS]
    assert ("data" in output) is not binary
    got = result.as_numpy("OUTPUT0")
    if datatype == "BYTES":  # the client gives str from JSON, memoryviews from binary data
        as_bytes = [x.encode() if isinstance(x, str) else bytes(x) for x in got.ravel()]
        assert as_bytes == list(data.ravel())
    else:
        assert got.dtype == data.dtype
        np.testing.assert_array_equal(got, data)


def test_bytes_strings_in_json_are_utf8(client: triton_http.InferenceServerClient) -> None:
    strings = ["", "café", "日本語", "emoji 🚀", "nul \x00 inside", "x" * 1000, "a", "b"]
    data = np.array([s.encode() for s in strings], dtype=np.object_).reshape(2, COLUMNS)
    tensor = triton_http.InferInput("INPUT0", [2, COLUMNS], "BYTES")
    tensor.set_data_from_numpy(data, binary_data=False)
    result = client.infer(
        "identity_bytes",
        [tensor],
        outputs=[triton_http.InferRequestedOutput("OUTPUT0", binary_data=False)],
    )
    assert result.get_output("OUTPUT0")["data"] == strings


def test_binary_data_output_applies_to_every_output(server: ServerProcess) -> None:
    body = add_sub_body(rows=2, value=2.0)
    body["parameters"] = {"binary_data_output": True}
    status, headers, answer = request(
        server, "POST", "/v2/models/add_sub/infer", json.dumps(body).encode()
    )
    assert status == 200, answer
    length = int(headers["inference-header-content-length"])
    header = json.loads(answer[:length])
    sizes = [o["parameters"]["binary_data_size"] for o in header["outputs"]]
    assert sizes == [2 * ADD_SUB_COLUMNS * 4] * 2
    output0 = np.frombuffer(answer[length : length + sizes[0]], dtype=np.float32)
    output1 = np.frombuffer(answer[length + sizes[0] :], dtype=np.float32)
    np.testing.assert_array_equal(output0, np.full(2 * ADD_SUB_COLUMNS, 4.5, np.float32))
    np.testing.assert_array_equal(output1, np.zeros(2 * ADD_SUB_COLUMNS, np.float32))


def test_request_id_and_nested_json_data(server: ServerProcess) -> None:
    rows = [[float(c) for c in range(ADD_SUB_COLUMNS)] for _ in range(2)]
    body = {
        "id": "req-42",
        "inputs": [
            {"name": "INPUT0", "datatype": "FP32", "shape": [2, ADD_SUB_COLUMNS], "data": rows},
            {"name": "INPUT1", "datatype": "FP32", "shape": [2, ADD_SUB_COLUMNS], "data": rows},
        ],
        "outputs": [{"name": "OUTPUT1"}],
    }
    status, _, answer = request(
        server, "POST", "/v2/models/add_sub/infer", json.dumps(body).encode()
    )
    assert status == 200, answer
    document = json.loads(answer)
    assert document["id"] == "req-42"
    assert document["model_name"] == "add_sub"
    assert [o["name"] for o in document["outputs"]] == ["OUTPUT1"]
    assert document["outputs"][0]["data"] == [0.0] * (2 * ADD_SUB_COLUMNS)


def test_async_infer_answers_every_request_with_its_own_result(
    client: triton_http.InferenceServerClient,
) -> None:
    pending = []
    for seed in range(16):
        value = np.full((1, ADD_SUB_COLUMNS), seed, np.float32)
        inputs = []
        for name in ("INPUT0", "INPUT1"):
            tensor = triton_http.InferInput(name, [1, ADD_SUB_COLUMNS], "FP32")
            tensor.set_data_from_numpy(value)
            inputs.append(tensor)
        pending.append((seed, client.async_infer("add_sub", inputs)))
    for seed, future in pending:
        np.testing.assert_array_equal(
            future.get_result().as_numpy("OUTPUT0"),
            np.full((1, ADD_SUB_COLUMNS), 2 * seed + 0.5, np.float32),
        )


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_compressed_requests_and_answers(
    client: triton_http.InferenceServerClient, algorithm: str
) -> None:
    value = np.arange(ADD_SUB_COLUMNS, dtype=np.float32).reshape(1, -1)
    inputs = []
    for name in ("INPUT0", "INPUT1"):
        tensor = triton_http.InferInput(name, [1, ADD_SUB_COLUMNS], "FP32")
        tensor.set_data_from_numpy(value)
        inputs.append(tensor)
    result = client.infer(
        "add_sub",
        inputs,
        request_compression_algorithm=algorithm,
        response_compression_algorithm=algorithm,
    )
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), 2 * value + 0.5)


def test_the_answer_is_compressed_as_accept_encoding_asks(server: ServerProcess) -> None:
    body = json.dumps(add_sub_body()).encode()
    status, headers, answer = request(
        server, "POST", "/v2/models/add_sub/infer", body, {"Accept-Encoding": "gzip"}
    )
    assert status == 200
    assert headers["content-encoding"] == "gzip"
    assert json.loads(gzip.decompress(answer))["model_name"] == "add_sub"


# shared memory ---------------------------------------------------------------------------------


def test_system_shared_memory_inputs_and_outputs(
    client: triton_http.InferenceServerClient,
) -> None:
    byte_size = 2 * ADD_SUB_COLUMNS * 4
    key = f"/tg_http_{uuid.uuid4().hex[:12]}"
    handle = shm.create_shared_memory_region("http_io", key, 2 * byte_size)
    try:
        value = np.arange(2 * ADD_SUB_COLUMNS, dtype=np.float32).reshape(2, -1)
        shm.set_shared_memory_region(handle, [value, value])
        client.register_system_shared_memory("http_io", key, 2 * byte_size)
        assert [r["name"] for r in client.get_system_shared_memory_status()] == ["http_io"]
        inputs = []
        for index, name in enumerate(("INPUT0", "INPUT1")):
            tensor = triton_http.InferInput(name, [2, ADD_SUB_COLUMNS], "FP32")
            tensor.set_shared_memory("http_io", byte_size, offset=index * byte_size)
            inputs.append(tensor)
        output = triton_http.InferRequestedOutput("OUTPUT0")
        output.set_shared_memory("http_io", byte_size)
        result = client.infer("add_sub", inputs, outputs=[output])
        assert result.get_output("OUTPUT0")["parameters"]["shared_memory_byte_size"] == byte_size
        written = shm.get_contents_as_numpy(handle, np.float32, [2, ADD_SUB_COLUMNS])
        np.testing.assert_array_equal(written, 2 * value + 0.5)
        with pytest.raises(InferenceServerException, match="http_io"):
            client.register_system_shared_memory("http_io", key, byte_size)
    finally:
        client.unregister_system_shared_memory()
        shm.destroy_shared_memory_region(handle)
    assert client.get_system_shared_memory_status() == []


# HTTP and gRPC share one batcher ----------------------------------------------------------------


def test_http_and_grpc_requests_batch_together(
    server: ServerProcess, gate: pm.Gate, client: triton_http.InferenceServerClient
) -> None:
    """One request holds the gated model; three over gRPC and three over HTTP queue behind it
    and then run as one batch of six."""

    def gated_grpc(value: float, answers: dict[str, float]) -> None:
        tensor = triton_grpc.InferInput("INPUT0", [1, 1], "FP32")
        tensor.set_data_from_numpy(np.array([[value]], np.float32))
        with triton_grpc.InferenceServerClient(server.url) as own:
            answers[f"grpc {value}"] = float(own.infer("gated", [tensor]).as_numpy("OUTPUT0")[0, 0])

    def gated_http(value: float, answers: dict[str, float]) -> None:
        tensor = triton_http.InferInput("INPUT0", [1, 1], "FP32")
        tensor.set_data_from_numpy(np.array([[value]], np.float32))
        with triton_http.InferenceServerClient(server.http_url) as own:
            answers[f"http {value}"] = float(own.infer("gated", [tensor]).as_numpy("OUTPUT0")[0, 0])

    before = client.get_inference_statistics("gated")["model_stats"][0]
    answers: dict[str, float] = {}
    first = threading.Thread(target=gated_grpc, args=(1.0, answers))
    first.start()
    gate.wait_started()
    callers = [
        threading.Thread(target=call, args=(float(value), answers))
        for value in (2, 3, 4)
        for call in (gated_grpc, gated_http)
    ]
    for caller in callers:
        caller.start()
    probes.wait_for_gauges(server.metrics_port, lambda s: probes.queued(s, "gated") == 6)
    gate.open()
    gate.wait_started()  # the second batch: all six queued requests
    gate.open()
    for thread in [first, *callers]:
        thread.join(60)
    assert answers == {
        "grpc 1.0": 1.0,
        **{f"{kind} {v}": v for v in (2.0, 3.0, 4.0) for kind in ("grpc", "http")},
    }
    after = client.get_inference_statistics("gated")["model_stats"][0]
    assert int(after["inference_count"]) - int(before["inference_count"]) == 7
    assert int(after["execution_count"]) - int(before["execution_count"]) == 2
    sizes = {b["batch_size"]: int(b["compute_infer"]["count"]) for b in after["batch_stats"]}
    assert sizes.get(6, 0) >= 1


# statistics and metrics -------------------------------------------------------------------------


def test_statistics_count_http_requests(
    server: ServerProcess, client: triton_http.InferenceServerClient
) -> None:
    before = client.get_inference_statistics("identity_int32")["model_stats"][0]
    data = np.ones((1, COLUMNS), np.int32)
    tensor = triton_http.InferInput("INPUT0", [1, COLUMNS], "INT32")
    tensor.set_data_from_numpy(data)
    for _ in range(3):
        client.infer("identity_int32", [tensor])
    after = client.get_inference_statistics("identity_int32")["model_stats"][0]
    assert int(after["inference_count"]) - int(before["inference_count"]) == 3
    every_model = {m["name"] for m in client.get_inference_statistics()["model_stats"]}
    assert {"identity_int32", "add_sub", "gated"} <= every_model
    assert int(after["inference_stats"]["success"]["count"]) >= 3
    samples = probes.scrape(server.metrics_port)
    assert (
        probes.gauge_sum(samples, "tensorgate_http_requests_total", endpoint="infer", code="200")
        >= 3
    )


# bad input: precise statuses, never a 500 -------------------------------------------------------


def test_unknown_path_is_404_and_a_wrong_method_405(server: ServerProcess) -> None:
    status, _, body = request(server, "GET", "/v3/whatever")
    assert status == 404
    assert "/v3/whatever" in error_of(body)
    status, headers, body = request(server, "DELETE", "/v2/models/add_sub/infer")
    assert status == 405
    assert headers["allow"] == "POST"
    assert "DELETE" in error_of(body)


@pytest.mark.parametrize(
    ("body", "headers", "message"),
    [
        (b"{not json", {}, "not valid JSON"),
        (b"[]", {}, "must be a JSON object"),
        (b'{"inputs": []}', {}, "no inputs"),
        (
            b'{"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 16], "data": [1]}]}',
            {},
            "has 1 elements, but shape [1, 16] needs 16",
        ),
        (
            b'{"inputs": [{"name": "INPUT0", "datatype": "FP99", "shape": [1], "data": [1]}]}',
            {},
            "FP99",
        ),
        (
            b'{"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 16],'
            b' "parameters": {"binary_data_size": 64}}]}',
            {},
            "runs past the end of the binary data",
        ),
        (b'{"inputs": []}', {"Inference-Header-Content-Length": "999"}, "outside the body"),
        (b'{"inputs": []}', {"Inference-Header-Content-Length": "x"}, "must be a number"),
        (b"abc", {"Content-Encoding": "gzip"}, "not valid gzip"),
        (b"abc", {"Content-Encoding": "br"}, "Content-Encoding 'br' is not supported"),
    ],
)
def test_malformed_inference_bodies_are_400(
    server: ServerProcess, body: bytes, headers: dict[str, str], message: str
) -> None:
    status, _, answer = request(server, "POST", "/v2/models/add_sub/infer", body, headers)
    assert status == 400, answer
    assert message in error_of(answer)


def test_missing_input_is_400_naming_it(server: ServerProcess) -> None:
    body = add_sub_body()
    del body["inputs"][1]
    status, _, answer = request(
        server, "POST", "/v2/models/add_sub/infer", json.dumps(body).encode()
    )
    assert status == 400
    assert "INPUT1" in error_of(answer)


def test_bodies_over_the_limit_are_413_even_when_compressed(server: ServerProcess) -> None:
    big = b" " * ((1 << 20) + 1)
    status, _, answer = request(server, "POST", "/v2/models/add_sub/infer", big)
    assert status == 413
    assert "--max-message-bytes" in error_of(answer)
    bomb = zlib.compress(b" " * (8 << 20))  # ~8 KiB that inflates past the 1 MiB limit
    status, _, answer = request(
        server, "POST", "/v2/models/add_sub/infer", bomb, {"Content-Encoding": "deflate"}
    )
    assert status == 413
    assert request(server, "GET", "/v2/health/ready")[0] == 200


def test_cuda_shared_memory_register_and_trace_settings_are_501(server: ServerProcess) -> None:
    status, _, body = request(server, "POST", "/v2/cudasharedmemory/region/r/register", b"{}")
    assert status == 501
    assert "CUDA shared memory is not supported" in error_of(body)
    assert request(server, "GET", "/v2/trace/setting")[0] == 501


def test_cuda_shared_memory_cleanup_answers_as_triton(server: ServerProcess) -> None:
    assert request(server, "POST", "/v2/cudasharedmemory/unregister")[0] == 200
    assert request(server, "POST", "/v2/cudasharedmemory/region/r/unregister")[0] == 200
    status, _, body = request(server, "GET", "/v2/cudasharedmemory/status")
    assert (status, json.loads(body)) == (200, [])
    status, _, body = request(server, "GET", "/v2/cudasharedmemory/region/r/status")
    assert status == 404
    assert "'r'" in error_of(body)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    document=st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(
                st.sampled_from(
                    [
                        "inputs",
                        "outputs",
                        "name",
                        "datatype",
                        "shape",
                        "data",
                        "parameters",
                        "binary_data_size",
                        "id",
                        "INPUT0",
                        "FP32",
                        "BYTES",
                        "priority",
                        "timeout",
                    ]
                )
                | st.text(max_size=4),
                children,
                max_size=5,
            )
        ),
        max_leaves=20,
    )
)
def test_fuzzed_json_is_answered_with_a_client_error_never_a_500(
    server: ServerProcess, document: object
) -> None:
    body = json.dumps(document, allow_nan=True).encode()
    status, _, answer = request(server, "POST", "/v2/models/add_sub/infer", body)
    assert status in (200, 400), (status, answer)
    if status == 400:
        assert error_of(answer)


def test_the_server_is_healthy_after_the_bad_requests(
    client: triton_http.InferenceServerClient, server: ServerProcess
) -> None:
    assert client.is_server_ready()
    assert "Traceback" not in server.log_text
    assert "unexpected error" not in server.log_text


# repository control, auth, shutdown: servers of their own ----------------------------------------


StartServer = Callable[..., ServerProcess]


def test_model_control_over_http(tmp_path: Path, start_server: StartServer) -> None:
    mf.write_add_sub_model(tmp_path, "add_sub", max_batch_size=8)
    server = start_server(tmp_path, "--model-control-mode", "explicit")
    with triton_http.InferenceServerClient(server.http_url) as client:
        assert [m["name"] for m in client.get_model_repository_index()] == ["add_sub"]
        assert not client.is_model_ready("add_sub")
        client.load_model("add_sub")
        assert client.is_model_ready("add_sub")
        client.load_model("add_sub", config=json.dumps({"max_batch_size": 4}))
        assert client.get_model_config("add_sub")["max_batch_size"] == 4
        with pytest.raises(InferenceServerException, match="not a valid model config"):
            client.load_model("add_sub", config="{")
        with pytest.raises(InferenceServerException, match="not_there"):
            client.load_model("not_there")
        client.unload_model("add_sub")
        assert not client.is_model_ready("add_sub")
    status, _, body = request(
        server,
        "POST",
        "/v2/repository/models/add_sub/load",
        json.dumps({"parameters": {"file:../model.onnx": "AAAA"}}).encode(),
    )
    assert status == 400
    assert error_of(body).startswith(
        "failed to load 'add_sub': load parameter 'file:../model.onnx'"
    )


def test_bearer_tokens_and_scopes_over_http(tmp_path: Path, start_server: StartServer) -> None:
    mf.write_add_sub_model(tmp_path / "repo", "add_sub", max_batch_size=8)
    tokens = tmp_path / "tokens"
    tokens.write_text("reader infer tok-reader-123\nops admin tok-ops-456\n")
    server = start_server(tmp_path / "repo", "--auth-tokens-file", str(tokens))
    body = json.dumps(add_sub_body()).encode()
    infer = "/v2/models/add_sub/infer"
    status, _, answer = request(server, "POST", infer, body)
    assert status == 401
    assert "needs a valid bearer token" in error_of(answer)
    assert request(server, "POST", infer, body, {"Authorization": "Bearer wrong"})[0] == 401
    assert (
        request(server, "POST", infer, body, {"Authorization": "Bearer tok-reader-123"})[0] == 200
    )
    status, _, answer = request(
        server,
        "POST",
        "/v2/repository/models/add_sub/unload",
        b"{}",
        {"Authorization": "Bearer tok-reader-123"},
    )
    assert status == 403
    assert "lacks the 'admin' scope" in error_of(answer)
    assert request(server, "GET", "/v2/health/ready")[0] == 200  # probes stay open
    assert "tok-reader-123" not in server.log_text


def test_shutdown_answers_the_request_in_flight_and_refuses_new_ones(
    tmp_path: Path, start_server: StartServer
) -> None:
    with pm.Gate() as gate:
        pm.write_gated_model(tmp_path, "gated", gate)
        server = start_server(tmp_path, "--grace-period-secs", "30")
        held: dict[str, object] = {}

        def held_call() -> None:
            tensor = triton_http.InferInput("INPUT0", [1, 1], "FP32")
            tensor.set_data_from_numpy(np.array([[5.0]], np.float32))
            with triton_http.InferenceServerClient(server.http_url) as own:
                held["value"] = own.infer("gated", [tensor]).as_numpy("OUTPUT0")

        thread = threading.Thread(target=held_call)
        thread.start()
        gate.wait_started()
        # A connection opened before shutdown, so that the refusal is an HTTP answer.
        connection = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=30)
        connection.request("GET", "/v2/health/ready")
        ready = connection.getresponse()
        ready.read()
        assert ready.status == 200
        mark = server.log_mark()
        server.process.terminate()
        server.wait_for_log("refusing new requests; answering the 1 in flight", start=mark)
        connection.request("GET", "/v2/health/ready")
        ready = connection.getresponse()
        ready.read()
        assert ready.status == 400  # not ready while draining
        body = json.dumps(
            {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 1], "data": [1.0]}]}
        ).encode()
        connection.request("POST", "/v2/models/gated/infer", body)
        response = connection.getresponse()
        answer = response.read()
        assert response.status == 503, answer
        assert "shutting down" in error_of(answer)
        connection.close()
        gate.open()
        thread.join(60)
        np.testing.assert_array_equal(held["value"], [[5.0]])
        assert server.process.wait(30) == 0
