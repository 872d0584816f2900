"""Every malformed or unserviceable request gets a precise status and message, and harms no other.

Requests that tritonclient's high-level API cannot produce are built with its service_pb2
messages and sent through the raw GRPCInferenceServiceStub. Statuses and the key facts of each
message (tensor name, expected vs got) are asserted.
"""

from __future__ import annotations

import queue
import struct
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from tests.support import model_factory as mf
from tests.support.server_process import ServerProcess

Tensor = service_pb2.ModelInferRequest.InferInputTensor
Requested = service_pb2.ModelInferRequest.InferRequestedOutputTensor
COLUMNS = mf.ADD_SUB_ELEMENT_COUNT
MAX_BATCH = 8
BYTES_BATCH = 4


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    repo = tmp_path_factory.mktemp("errors_repo")
    mf.write_add_sub_model(repo, "add_sub", max_batch_size=MAX_BATCH)
    mf.write_identity_model(repo, "identity_bytes", "BYTES", max_batch_size=8, with_config=True)
    mf.write_identity_model(repo, "identity_fp16", "FP16", max_batch_size=8, with_config=True)
    # A long queue delay and a small batch: concurrent requests share one batch.
    mf.write_identity_model(
        repo,
        "bytes_batched",
        "BYTES",
        max_batch_size=BYTES_BATCH,
        with_config=True,
        config_extra="dynamic_batching { max_queue_delay_microseconds: 500000 }",
    )
    mf.write_corrupt_model(repo, "corrupt")
    # A config that names an input the graph does not have.
    mf.write_add_sub_model(repo, "bad_config", with_config=False)
    wrong = mf.TensorSpec("WRONG", "FP32", (-1, COLUMNS))
    right = mf.TensorSpec("OUTPUT0", "FP32", (-1, COLUMNS))
    mf.write_config(
        repo,
        "bad_config",
        mf.render_config("bad_config", max_batch_size=8, inputs=[wrong], outputs=[right]),
    )
    server = ServerProcess(repo)
    try:
        with grpc.insecure_channel(server.url) as channel:
            grpc.channel_ready_future(channel).result(timeout=30)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def channel(server: ServerProcess) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.url) as channel:
        yield channel


@pytest.fixture(scope="module")
def stub(channel: grpc.Channel) -> service_pb2_grpc.GRPCInferenceServiceStub:
    return service_pb2_grpc.GRPCInferenceServiceStub(channel)


# helpers ---------------------------------------------------------------------------------------


def _fp32(rows: int = 1, value: float = 1.0, columns: int = COLUMNS) -> bytes:
    return np.full((rows, columns), value, dtype=np.float32).tobytes()


def _tensor(name: str, shape: Sequence[int], datatype: str = "FP32", **kwargs) -> Tensor:
    return Tensor(name=name, datatype=datatype, shape=list(shape), **kwargs)


def _add_sub_request(
    tensors: Sequence[Tensor] | None = None,
    raw: Sequence[bytes] | None = None,
    *,
    model: str = "add_sub",
    outputs: Sequence[str] = (),
    **kwargs,
) -> service_pb2.ModelInferRequest:
    """A valid one-row add_sub request unless tensors/raw say otherwise."""
    if tensors is None:
        tensors = [_tensor("INPUT0", [1, COLUMNS]), _tensor("INPUT1", [1, COLUMNS])]
    if raw is None:
        raw = [_fp32() for _ in tensors]
    return service_pb2.ModelInferRequest(
        model_name=model,
        inputs=list(tensors),
        raw_input_contents=list(raw),
        outputs=[Requested(name=name) for name in outputs],
        **kwargs,
    )


def _bytes_request(raw: bytes, shape: Sequence[int] = (1, 4), model: str = "identity_bytes"):
    return service_pb2.ModelInferRequest(
        model_name=model,
        inputs=[_tensor("INPUT0", shape, "BYTES")],
        raw_input_contents=[raw],
    )


def _encode_bytes(items: Sequence[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(item)) + item for item in items)


def _infer_error(
    stub: service_pb2_grpc.GRPCInferenceServiceStub, request: service_pb2.ModelInferRequest
) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelInfer(request, timeout=10)
    return info.value


def _assert_error(
    error: grpc.RpcError | InferenceServerException, code: grpc.StatusCode, *fragments: str
) -> None:
    if isinstance(error, InferenceServerException):
        status, details = error.status(), error.message()
        assert status == str(code), details
    else:
        status, details = error.code(), error.details()
        assert status == code, details
    for fragment in fragments:
        assert fragment in details, f"{fragment!r} not in {details!r}"


INVALID = grpc.StatusCode.INVALID_ARGUMENT


# ------------------------------------------------------------------------------------------------
# Models that do not exist or did not load
# ------------------------------------------------------------------------------------------------


def test_valid_request_succeeds(stub: service_pb2_grpc.GRPCInferenceServiceStub):
    response = stub.ModelInfer(_add_sub_request(), timeout=10)
    assert [o.name for o in response.outputs] == ["OUTPUT0", "OUTPUT1"]
    np.testing.assert_array_equal(
        np.frombuffer(response.raw_output_contents[0], np.float32), np.full(COLUMNS, 2.0)
    )


def test_unknown_model_is_not_found(
    stub: service_pb2_grpc.GRPCInferenceServiceStub, client: triton.InferenceServerClient
):
    error = _infer_error(stub, _add_sub_request(model="no_such_model"))
    _assert_error(error, grpc.StatusCode.NOT_FOUND, "'no_such_model'")
    for call in (client.get_model_metadata, client.get_model_config):
        with pytest.raises(InferenceServerException) as info:
            call("no_such_model")
        _assert_error(info.value, grpc.StatusCode.NOT_FOUND, "'no_such_model'")
    assert not client.is_model_ready("no_such_model")


def test_empty_model_name_is_not_found(stub: service_pb2_grpc.GRPCInferenceServiceStub):
    error = _infer_error(stub, _add_sub_request(model=""))
    _assert_error(error, grpc.StatusCode.NOT_FOUND, "unknown model")


def test_corrupt_model_is_unavailable_with_reason(
    stub: service_pb2_grpc.GRPCInferenceServiceStub, client: triton.InferenceServerClient
):
    assert not client.is_model_ready("corrupt")
    assert not client.is_model_ready("corrupt", "1")
    request = service_pb2.ModelInferRequest(
        model_name="corrupt", inputs=[_tensor("INPUT0", [1])], raw_input_contents=[_fp32(1, 1, 1)]
    )
    error = _infer_error(stub, request)
    _assert_error(error, grpc.StatusCode.UNAVAILABLE, "'corrupt'", "could not load", "model.onnx")
    request.model_version = "1"
    error = _infer_error(stub, request)
    _assert_error(error, grpc.StatusCode.UNAVAILABLE, "'corrupt'", "version 1", "could not load")
    with pytest.raises(InferenceServerException) as info:
        client.get_model_metadata("corrupt")
    _assert_error(info.value, grpc.StatusCode.UNAVAILABLE, "'corrupt'", "could not load")


def test_model_with_bad_config_is_unavailable_with_reason(
    stub: service_pb2_grpc.GRPCInferenceServiceStub, client: triton.InferenceServerClient
):
    assert not client.is_model_ready("bad_config")
    error = _infer_error(stub, _add_sub_request(model="bad_config"))
    _assert_error(error, grpc.StatusCode.UNAVAILABLE, "'bad_config'", "'WRONG'", "INPUT0")
    with pytest.raises(InferenceServerException) as info:
        client.get_model_config("bad_config")
    _assert_error(info.value, grpc.StatusCode.UNAVAILABLE, "'bad_config'", "'WRONG'")


def test_failed_models_are_not_serving_in_health(channel: grpc.Channel):
    health = health_pb2_grpc.HealthStub(channel)
    for name in ("corrupt", "bad_config"):
        response = health.Check(health_pb2.HealthCheckRequest(service=name), timeout=10)
        assert response.status == health_pb2.HealthCheckResponse.NOT_SERVING, name
    response = health.Check(health_pb2.HealthCheckRequest(service="add_sub"), timeout=10)
    assert response.status == health_pb2.HealthCheckResponse.SERVING


# ------------------------------------------------------------------------------------------------
# Inputs that do not match the model
# ------------------------------------------------------------------------------------------------


def test_wrong_input_name(stub: service_pb2_grpc.GRPCInferenceServiceStub):
    tensors = [_tensor("INPUT0", [1, COLUMNS]), _tensor("input1", [1, COLUMNS])]
    error = _infer_error(stub, _add_sub_request(tensors))
    _assert_error(error, INVALID, "'add_sub'", "no input 'input1'", "INPUT1")


def test_missing_input(stub: service_pb2_grpc.GRPCInferenceServiceStub):
    error = _infer_error(stub, _add_sub_request([_tensor("INPUT0", [1, COLUMNS])]))
    _assert_error(error, INVALID, "'add_sub'", "'INPUT1'")


def test_no_inputs_at_all(stub: service_pb2_grpc.GRPCInferenceServiceStub):
    error = _infer_error(stub, _add_sub_request([], []))
    _assert_error(error, INVALID, "'add_sub'", "'INPUT0'")


def test_extra_input(stub: service_pb2_grpc.GRPCInferenceServiceStub):
    tensors = [
        _tensor("INPUT0", [1, COLUMNS]),
        _tensor("INPUT1", [1, COLUMNS]),
        _tensor("INPUT2", [1, COLUMNS]),
    ]
    error = _infer_error(stub, _add_sub_request(tensors))
    _assert_error(error, INVALID, "'add_sub'", "no input 'INPUT2'")


def test_wrong_datatype(stub: service_pb2_grpc.GRPCInferenceServiceStub):
    tensors = [_tensor("INPUT0", [1, COLUMNS], "FP64"), _tensor("INPUT1", [1, COLUMNS])]
    raw = [np.ones((1, COLUMNS), np.float64).tobytes(), _fp32()]
    error = _infer_error(stub, _add_sub_request(tensors, raw))
    _assert_error(error, INVALID, "'INPUT0'", "FP64", "expects FP32")


def test_wrong_datatype_through_tritonclient(client: triton.InferenceServerClient):
    inputs = []
    for name in ("INPUT0", "INPUT1"):
        tensor = triton.InferInput(name, [1, COLUMNS], "INT32")
        tensor.set_data_from_numpy(np.ones((1, COLUMNS), np.int32))
        inputs.append(tensor)
    with pytest.raises(InferenceServerException) as info:
        client.infer("add_sub", inputs)
    _assert_error(info.value, INVALID, "'INPUT0'", "INT32", "FP32")


@pytest.mark.parametrize(
    ("shape", "expected_got"),
    [
        ([1, COLUMNS, 1], "[1, 16, 1]"),  # rank too high
        ([COLUMNS], "[16]"),  # batch dimension left out
        ([1, 15], "[1, 15]"),  # wrong dim
        ([1, 4, 4], "[1, 4, 4]"),  # same element count, other shape
    ],
)
def test_wrong_shape(
    stub: service_pb2_grpc.GRPCInferenceServiceStub, shape: list[int], expected_got: str
):
    count = int(np.prod(shape))
    tensors = [_tensor("INPUT0", shape), _tensor("INPUT1", [1, COLUMNS])]
    raw = [np.ones(count, np.float32).tobytes(), _fp32()]
    error = _infer_error(stub, _add_sub_request(tensors, raw))
    _assert_error(error, INVALID, "'INPUT0'", expected_got, "[-1, 16]")


def test_scalar_input_to_batching_model(stub: service_pb2_grpc.GRPCInferenceServiceStub):
    tensors = [_tensor("INPUT0", []), _tensor("INPUT1", [1, COLUMNS])]
    raw = [np.ones((), np.float32).tobytes(), _fp32()]
    error = _infer_error(stub, _add_sub_request(tensors, raw))
    _assert_error(error, INVALID, "'INPUT0'", "[-1, 16]")


def test_too_many_rows(stub: service_pb2_grpc.GRPCInferenceServiceStub):
    rows = MAX_BATCH + 1
    tensors = [_tensor("INPUT0", [rows, COLUMNS]), _tensor("INPUT1", [rows, COLUMNS])]
    error = _infer_error(stub, _add_sub_request(tensors, [_fp32(rows), _fp32(rows)]))
    _assert_error(error, INVALID, "'add_sub'", f"{rows} rows", f"max_batch_size {MAX_BATCH}")


def test_inputs_disagree_on_batch_size(stub: service_pb2_grpc.GRPCInferenceServiceStub):
    tensors = [_tensor("INPUT0", [2, COLUMNS]), _tensor("INPUT1", [3, COLUMNS])]
    error = _infer_error(stub, _add_sub_request(tensors, [_fp32(2), _fp32(3)]))
    _assert_error(error, INVALID, "batch size", "'INPUT0' has 2", "'INPUT1' has 3")


def test_zero_rows(stub: service_pb2_grpc.GRPCInferenceServiceStub):
    tensors = [_tensor("INPUT0", [0, COLUMNS]), _tensor("INPUT1", [0, COLUMNS])]
    error = _infer_error(stub, _add_sub_request(tensors, [b"", b""]))
    _assert_error(error, INVALID, "batch dimension", "0")


def test_negative_dim(stub: service_pb2_grpc.GRPCInferenceServiceStub):
    tensors = [_tensor("INPUT0", [-1, COLUMNS]), _tensor("INPUT1", [1, COLUMNS])]
    error = _infer_error(stub, _add_sub_request(tensors))
    _assert_error(error, INVALID, "'INPUT0'", "negative", "[-1, 16]")


def test_huge_shape_is_rejected_before_allocation(stub: service_pb2_grpc.GRPCInferenceServiceStub):
    tensors = [_tensor("INPUT0", [1 << 20, 1 << 20]), _tensor("INPUT1", [1, COLUMNS])]
    error = _infer_error(stub, _add_sub_request(tensors))
    _assert_error(error, INVALID, "'INPUT0'", "[1048576, 1048576]")


def test_unknown_datatype_string(stub: service_pb2_grpc.GRPCInferenceServiceStub):
    tensors = [_tensor("INPUT0", [1, COLUMNS], "FP8"), _tensor("INPUT1", [1, COLUMNS])]
    error = _infer_error(stub, _add_sub_request(tensors))
    _assert_error(error, INVALID, "'INPUT0'", "unknown datatype 'FP8'", "FP32")


def test_duplicate_input(stub: service_pb2_grpc.GRPCInferenceServiceStub):
    tensors = [
        _tensor("INPUT0", [1, COLUMNS]),
        _tensor("INPUT1", [1, COLUMNS]),
        _tensor("INPUT0", [1, COLUMNS]),
    ]
    error = _infer_error(stub, _add_sub_request(tensors))
    _assert_error(error, INVALID, "'INPUT0'", "more than once")


# ------------------------------------------------------------------------------------------------
# Tensor contents
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [60, 68, 0])
def test_raw_content_byte_size_mismatch(stub: service_pb2_grpc.GRPCInferenceServiceStub, size: int):
    raw = [b"\x00" * size, _fp32()]
    error = _infer_error(stub, _add_sub_request(raw=raw))
    _assert_error(error, INVALID, "'INPUT0'", f"{size} bytes", "64 bytes", "[1, 16]", "FP32")


@pytest.mark.parametrize("entries", [1, 3])
def test_raw_input_contents_count_mismatch(
    stub: service_pb2_grpc.GRPCInferenceServiceStub, entries: int
):
    error = _infer_error(stub, _add_sub_request(raw=[_fp32()] * entries))
    _assert_error(error, INVALID, "2 inputs", f"{entries} raw_input_contents")


def test_mixed_raw_and_typed_contents(stub: service_pb2_grpc.GRPCInferenceServiceStub):
    typed = service_pb2.InferTensorContents(fp32_contents=[1.0] * COLUMNS)
    tensors = [_tensor("INPUT0", [1, COLUMNS]), _tensor("INPUT1", [1, COLUMNS], contents=typed)]
    error = _infer_error(stub, _add_sub_request(tensors, [_fp32(), _fp32()]))
    _assert_error(
        error, INVALID, "'INPUT1'", "contents field must not be specified", "raw_input_contents"
    )


def test_all_typed_contents_are_accepted(stub: service_pb2_grpc.GRPCInferenceServiceStub):
    tensors = [
        _tensor(
            "INPUT0",
            [1, COLUMNS],
            contents=service_pb2.InferTensorContents(fp32_contents=[3.0] * COLUMNS),
        ),
        _tensor(
            "INPUT1",
            [1, COLUMNS],
            contents=service_pb2.InferTensorContents(fp32_contents=[1.0] * COLUMNS),
        ),
    ]
    response = stub.ModelInfer(_add_sub_request(tensors, []), timeout=10)
    got = [np.frombuffer(raw, np.float32) for raw in response.raw_output_contents]
    np.testing.assert_array_equal(got[0], np.full(COLUMNS, 4.0))
    np.testing.assert_array_equal(got[1], np.full(COLUMNS, 2.0))


def test_fp16_typed_contents_are_rejected(stub: service_pb2_grpc.GRPCInferenceServiceStub):
    # FP16 has no typed field; whatever field a client tries, it must use raw contents.
    for contents in (
        service_pb2.InferTensorContents(fp32_contents=[1.0, 2.0, 3.0, 4.0]),
        service_pb2.InferTensorContents(),
    ):
        request = service_pb2.ModelInferRequest(
            model_name="identity_fp16",
            inputs=[_tensor("INPUT0", [1, 4], "FP16", contents=contents)],
        )
        error = _infer_error(stub, request)
        _assert_error(error, INVALID, "'INPUT0'", "FP16", "raw_input_contents")


def test_fp16_raw_contents_are_accepted(stub: service_pb2_grpc.GRPCInferenceServiceStub):
    data = np.array([[1.5, -2.0, 65504.0, 0.0]], np.float16)
    request = service_pb2.ModelInferRequest(
        model_name="identity_fp16",
        inputs=[_tensor("INPUT0", [1, 4], "FP16")],
        raw_input_contents=[data.tobytes()],
    )
    response = stub.ModelInfer(request, timeout=10)
    assert response.outputs[0].datatype == "FP16"
    assert response.raw_output_contents[0] == data.tobytes()


@pytest.mark.parametrize(
    ("raw", "fragments"),
    [
        # too few bytes for even the 4-byte length prefixes of 4 elements
        (_encode_bytes([b"ok"]) + b"\x05\x00", ["has 8 bytes, too few for 4 elements"]),
        # nothing at all for 4 elements
        (b"", ["has 0 bytes, too few for 4 elements"]),
        # three good elements, then a length prefix cut to 2 of its 4 bytes
        (_encode_bytes([b"abcdefgh"] * 3) + b"\x05\x00", ["ends after 3 of 4 elements"]),
        # the first element claims 100 bytes, 13 follow
        (struct.pack("<I", 100) + b"a" * 13, ["element 0", "100 bytes", "13 remain"]),
        # a length near 2**32
        (struct.pack("<I", 0xFFFFFFFF) + b"a" * 13, ["element 0", "4294967295 bytes"]),
        # four good elements and 2 bytes more
        (_encode_bytes([b"a", b"b", b"c", b"d"]) + b"xx", ["2 bytes left over after 4"]),
    ],
    ids=[
        "too-short-for-prefixes",
        "empty",
        "truncated-prefix",
        "length-past-end",
        "huge-length",
        "trailing-bytes",
    ],
)
def test_malformed_bytes(
    stub: service_pb2_grpc.GRPCInferenceServiceStub, raw: bytes, fragments: list[str]
):
    error = _infer_error(stub, _bytes_request(raw))
    _assert_error(error, INVALID, "'INPUT0'", "BYTES", *fragments)


def test_well_formed_bytes_with_empty_elements(stub: service_pb2_grpc.GRPCInferenceServiceStub):
    raw = _encode_bytes([b"", b"x", b"", b"yz"])
    response = stub.ModelInfer(_bytes_request(raw), timeout=10)
    assert response.raw_output_contents[0] == raw


# ------------------------------------------------------------------------------------------------
# Requested outputs and parameters
# ------------------------------------------------------------------------------------------------


def test_unknown_requested_output(stub: service_pb2_grpc.GRPCInferenceServiceStub):
    error = _infer_error(stub, _add_sub_request(outputs=["OUTPUT0", "OUTPUT9"]))
    _assert_error(error, INVALID, "'add_sub'", "no output 'OUTPUT9'", "OUTPUT1")


def test_unknown_requested_output_through_tritonclient(client: triton.InferenceServerClient):
    inputs = []
    for name in ("INPUT0", "INPUT1"):
        tensor = triton.InferInput(name, [1, COLUMNS], "FP32")
        tensor.set_data_from_numpy(np.ones((1, COLUMNS), np.float32))
        inputs.append(tensor)
    with pytest.raises(InferenceServerException) as info:
        client.infer("add_sub", inputs, outputs=[triton.InferRequestedOutput("SUM")])
    _assert_error(info.value, INVALID, "no output 'SUM'")


def test_duplicate_requested_output(stub: service_pb2_grpc.GRPCInferenceServiceStub):
    error = _infer_error(stub, _add_sub_request(outputs=["OUTPUT1", "OUTPUT1"]))
    _assert_error(error, INVALID, "'OUTPUT1'", "more than once")


def _add_sub_inputs() -> list[triton.InferInput]:
    inputs = []
    for name in ("INPUT0", "INPUT1"):
        tensor = triton.InferInput(name, [1, COLUMNS], "FP32")
        tensor.set_data_from_numpy(np.ones((1, COLUMNS), np.float32))
        inputs.append(tensor)
    return inputs


@pytest.mark.parametrize("sequence_id", [5, "session-7"])
def test_sequence_id_is_unimplemented(client: triton.InferenceServerClient, sequence_id: int | str):
    # tritonclient sends an integer id as int64_param and a string id as string_param;
    # either way, sequence batching is what the server does not implement.
    with pytest.raises(InferenceServerException) as info:
        client.infer("add_sub", _add_sub_inputs(), sequence_id=sequence_id, sequence_start=True)
    _assert_error(info.value, grpc.StatusCode.UNIMPLEMENTED, "sequence")


def test_sequence_start_alone_is_unimplemented(stub: service_pb2_grpc.GRPCInferenceServiceStub):
    request = _add_sub_request()
    request.parameters["sequence_start"].bool_param = True
    error = _infer_error(stub, request)
    _assert_error(error, grpc.StatusCode.UNIMPLEMENTED, "sequence")


def test_shared_memory_input_needs_a_registered_region(
    stub: service_pb2_grpc.GRPCInferenceServiceStub,
):
    request = _add_sub_request()
    request.inputs[0].parameters["shared_memory_region"].string_param = "region0"
    request.inputs[0].parameters["shared_memory_byte_size"].int64_param = 64
    del request.raw_input_contents[0]
    error = _infer_error(stub, request)
    _assert_error(error, grpc.StatusCode.NOT_FOUND, "'INPUT0'", "'region0'", "not registered")


def test_priority_of_the_wrong_type(stub: service_pb2_grpc.GRPCInferenceServiceStub):
    request = _add_sub_request()
    request.parameters["priority"].string_param = "high"
    error = _infer_error(stub, request)
    _assert_error(error, INVALID, "'priority'", "integer")


def test_priority_out_of_range(client: triton.InferenceServerClient):
    with pytest.raises(InferenceServerException) as info:
        client.infer("add_sub", _add_sub_inputs(), priority=7)
    _assert_error(info.value, INVALID, "priority 7", "'add_sub'")


# ------------------------------------------------------------------------------------------------
# RPCs that are not implemented
# ------------------------------------------------------------------------------------------------

UNIMPLEMENTED_RPCS = [
    (
        "CudaSharedMemoryRegister",
        service_pb2.CudaSharedMemoryRegisterRequest(name="r", byte_size=64),
        "CUDA shared memory",
    ),
    ("TraceSetting", service_pb2.TraceSettingRequest(), "trace"),
    ("LogSettings", service_pb2.LogSettingsRequest(), "log settings"),
]


@pytest.mark.parametrize(
    ("rpc", "request_message", "fragment"),
    UNIMPLEMENTED_RPCS,
    ids=[rpc for rpc, _, _ in UNIMPLEMENTED_RPCS],
)
def test_unimplemented_rpc(
    stub: service_pb2_grpc.GRPCInferenceServiceStub,
    rpc: str,
    request_message: object,
    fragment: str,
):
    with pytest.raises(grpc.RpcError) as info:
        getattr(stub, rpc)(request_message, timeout=10)
    _assert_error(info.value, grpc.StatusCode.UNIMPLEMENTED, fragment, "not supported")


@pytest.mark.parametrize(
    ("rpc", "request_message"),
    [
        ("RepositoryModelLoad", service_pb2.RepositoryModelLoadRequest(model_name="add_sub")),
        ("RepositoryModelUnload", service_pb2.RepositoryModelUnloadRequest(model_name="add_sub")),
    ],
)
def test_repository_control_needs_explicit_mode(
    stub: service_pb2_grpc.GRPCInferenceServiceStub, rpc: str, request_message: object
):
    with pytest.raises(grpc.RpcError) as info:
        getattr(stub, rpc)(request_message, timeout=10)
    _assert_error(
        info.value, grpc.StatusCode.FAILED_PRECONDITION, rpc, "--model-control-mode explicit"
    )


def test_unimplemented_rpcs_through_tritonclient(client: triton.InferenceServerClient):
    calls = [
        (lambda: client.register_cuda_shared_memory("r", b"", 0, 64), "CUDA shared memory"),
        (client.get_trace_settings, "trace"),
        (client.get_log_settings, "log settings"),
    ]
    for call, fragment in calls:
        with pytest.raises(InferenceServerException) as info:
            call()
        _assert_error(info.value, grpc.StatusCode.UNIMPLEMENTED, fragment)


# ------------------------------------------------------------------------------------------------
# Bad requests do not affect others
# ------------------------------------------------------------------------------------------------


def test_bad_bytes_request_does_not_fail_its_batch(
    stub: service_pb2_grpc.GRPCInferenceServiceStub,
):
    # Three valid one-row requests and one whose bytes are not UTF-8 fill one batch of
    # bytes_batched. Only the bad one may fail; the others must get their own data back.
    good = {
        index: _encode_bytes([f"row {index} é {i}".encode() for i in range(4)])
        for index in range(BYTES_BATCH - 1)
    }
    bad = _encode_bytes([b"ok", b"\xff\xfe", b"ok", b"ok"])

    def send(raw: bytes) -> service_pb2.ModelInferResponse | grpc.RpcError:
        try:
            return stub.ModelInfer(_bytes_request(raw, model="bytes_batched"), timeout=20)
        except grpc.RpcError as error:
            return error

    with ThreadPoolExecutor(max_workers=BYTES_BATCH) as pool:
        futures = {index: pool.submit(send, raw) for index, raw in good.items()}
        bad_result = pool.submit(send, bad).result()
        results = {index: future.result() for index, future in futures.items()}

    assert isinstance(bad_result, grpc.RpcError)
    _assert_error(bad_result, INVALID, "'INPUT0'", "UTF-8")
    for index, result in results.items():
        assert not isinstance(result, grpc.RpcError), (index, result.details())
        assert result.raw_output_contents[0] == good[index]


def test_concurrent_good_and_bad_requests(stub: service_pb2_grpc.GRPCInferenceServiceStub):
    bad_requests = [
        _add_sub_request(raw=[b"\x00" * 60, _fp32()]),
        _add_sub_request([_tensor("INPUT0", [1, COLUMNS])]),
        _add_sub_request(model="corrupt"),
        _add_sub_request(outputs=["NOPE"]),
    ]

    def good(index: int) -> None:
        rows = 1 + index % 3
        tensors = [_tensor("INPUT0", [rows, COLUMNS]), _tensor("INPUT1", [rows, COLUMNS])]
        request = _add_sub_request(tensors, [_fp32(rows, float(index)), _fp32(rows, 1.0)])
        response = stub.ModelInfer(request, timeout=20)
        out0 = np.frombuffer(response.raw_output_contents[0], np.float32).reshape(rows, COLUMNS)
        np.testing.assert_array_equal(out0, np.full((rows, COLUMNS), index + 1.0))

    def bad(index: int) -> None:
        with pytest.raises(grpc.RpcError):
            stub.ModelInfer(bad_requests[index % len(bad_requests)], timeout=20)

    with ThreadPoolExecutor(max_workers=8) as pool:
        futures = [pool.submit(good if i % 2 else bad, i) for i in range(48)]
        for future in futures:
            future.result()


def test_server_still_healthy_after_all_errors(
    server: ServerProcess,
    stub: service_pb2_grpc.GRPCInferenceServiceStub,
    client: triton.InferenceServerClient,
):
    assert server.process.poll() is None
    assert client.is_server_live()
    assert client.is_model_ready("add_sub")
    response = stub.ModelInfer(_add_sub_request(raw=[_fp32(1, 5.0), _fp32(1, 2.0)]), timeout=10)
    out0, out1 = (np.frombuffer(raw, np.float32) for raw in response.raw_output_contents)
    np.testing.assert_array_equal(out0, np.full(COLUMNS, 7.0))
    np.testing.assert_array_equal(out1, np.full(COLUMNS, 3.0))
    data = np.array([[b"still", b"fine", b"", b"\xc3\xa9"]], dtype=np.object_)
    tensor = triton.InferInput("INPUT0", [1, 4], "BYTES")
    tensor.set_data_from_numpy(data)
    result = client.infer("identity_bytes", [tensor])
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), data)
    # Every error above was an expected one: nothing reached the catch-all INTERNAL path.
    assert "unexpected error" not in server.log_text
    assert "Traceback" not in server.log_text


# ------------------------------------------------------------------------------------------------
# Configurable limits
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    repo = tmp_path_factory.mktemp("limited_repo")
    mf.write_add_sub_model(repo, "add_sub", max_batch_size=MAX_BATCH)
    mf.write_identity_model(
        repo, "identity_bytes", "BYTES", max_batch_size=BYTES_BATCH, with_config=False
    )
    args = ["--max-inputs", "3", "--max-tensor-elements", "40", "--max-bytes-element", "8"]
    args += ["--max-concurrent-streams", "1"]
    with ServerProcess(repo, args) as server:
        yield server


def test_limits_answer_invalid_argument_naming_the_limit(limited: ServerProcess):
    with grpc.insecure_channel(limited.url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        too_many = service_pb2.ModelInferRequest(
            model_name="add_sub",
            inputs=[_tensor(f"IN{i}", [1, COLUMNS], "FP32") for i in range(4)],
            raw_input_contents=[np.ones((1, COLUMNS), np.float32).tobytes()] * 4,
        )
        error = _infer_error(stub, too_many)
        _assert_error(error, INVALID, "4 inputs", "limit of 3", "--max-inputs")

        three_rows = [_tensor("INPUT0", [3, COLUMNS]), _tensor("INPUT1", [3, COLUMNS])]
        raw = [np.ones((3, COLUMNS), np.float32).tobytes()] * 2
        error = _infer_error(stub, _add_sub_request(three_rows, raw))  # 48 elements > 40
        _assert_error(error, INVALID, "'INPUT0'", "48 elements", "limit of 40")

        long_element = _encode_bytes([b"short", b"much too long", b"a", b"b"])
        error = _infer_error(stub, _bytes_request(long_element))
        _assert_error(error, INVALID, "'INPUT0'", "BYTES element 1", "13 bytes", "limit of 8")

        assert stub.ModelInfer(_add_sub_request(), timeout=10).outputs


def test_streams_beyond_the_limit_are_refused_with_resource_exhausted(limited: ServerProcess):
    pending: queue.Queue[service_pb2.ModelInferRequest | None] = queue.Queue()

    def requests() -> Iterator[service_pb2.ModelInferRequest]:
        while (request := pending.get()) is not None:
            yield request

    with grpc.insecure_channel(limited.url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        first = stub.ModelStreamInfer(requests(), timeout=30)
        pending.put(_add_sub_request())
        assert next(first).infer_response.outputs  # the first stream is open and counted
        second = stub.ModelStreamInfer(iter([_add_sub_request()]), timeout=30)
        with pytest.raises(grpc.RpcError) as refused:
            list(second)
        _assert_error(refused.value, grpc.StatusCode.RESOURCE_EXHAUSTED, "--max-concurrent-streams")
        pending.put(None)
        assert list(first) == []
        # The slot is free again once the first stream ends.
        third = stub.ModelStreamInfer(iter([_add_sub_request()]), timeout=30)
        assert len(list(third)) == 1
