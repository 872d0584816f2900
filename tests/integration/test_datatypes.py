"""Every datatype onnxruntime can run goes through the server unchanged.

One Identity model per datatype in model_factory.SUPPORTED_DATATYPES; results are compared with
the input and with onnxruntime run in this process on the same model file. Inputs go both raw
(tritonclient, as every real client does) and as typed InferTensorContents (hand-built requests)
for the datatypes that have a typed field.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as triton
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from tests.support import model_factory as mf
from tests.support.server_process import ServerProcess

ROWS = 3
COLUMNS = mf.IDENTITY_ELEMENT_COUNT

TYPED_FIELDS = mf.TYPED_FIELDS
TYPED_DATATYPES = [d for d in mf.SUPPORTED_DATATYPES if d in TYPED_FIELDS]


def _model_name(datatype: str) -> str:
    return f"identity_{datatype.lower()}"


@pytest.fixture(scope="module")
def identity_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("datatypes_repo")
    for datatype in mf.SUPPORTED_DATATYPES:
        mf.write_identity_model(
            repo, _model_name(datatype), datatype, max_batch_size=8, with_config=True
        )
    # Without a batch dimension and without config.pbtxt (completed from the graph).
    mf.write_identity_model(
        repo, "identity_fp32_nobatch", "FP32", max_batch_size=0, with_config=False
    )
    return repo


@pytest.fixture(scope="module")
def identity_server(identity_repo: Path) -> Iterator[ServerProcess]:
    server = ServerProcess(identity_repo)
    try:
        with grpc.insecure_channel(server.url) as channel:
            grpc.channel_ready_future(channel).result(timeout=30)
        yield server
    finally:
        server.stop()


@pytest.fixture
def identity_client(identity_server: ServerProcess) -> Iterator[triton.InferenceServerClient]:
    with triton.InferenceServerClient(identity_server.url) as client:
        yield client


@pytest.fixture(scope="module")
def stub(identity_server: ServerProcess) -> Iterator[service_pb2_grpc.GRPCInferenceServiceStub]:
    with grpc.insecure_channel(identity_server.url) as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)


def _onnxruntime_identity(repo: Path, datatype: str, data: np.ndarray) -> np.ndarray:
    """OUTPUT0 of the model file run in this process; BYTES as bytes objects, like the client."""
    path = repo / _model_name(datatype) / "1" / "model.onnx"
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = data
    if datatype == "BYTES":
        feed = np.vectorize(lambda b: b.decode("utf-8"), otypes=[np.object_])(data)
    (result,) = session.run(["OUTPUT0"], {"INPUT0": feed})
    if datatype == "BYTES":
        result = np.vectorize(lambda s: s.encode("utf-8"), otypes=[np.object_])(result)
    return result


def _assert_same(got: np.ndarray, want: np.ndarray) -> None:
    assert got.dtype == want.dtype
    assert got.shape == want.shape
    if want.dtype.kind == "f":
        # Bit-exact, NaN included: Identity must not touch the values.
        assert got.tobytes() == want.tobytes()
    else:
        np.testing.assert_array_equal(got, want)


def _infer_raw(
    client: triton.InferenceServerClient, model: str, datatype: str, data: np.ndarray
) -> triton.InferResult:
    tensor = triton.InferInput("INPUT0", list(data.shape), datatype)
    tensor.set_data_from_numpy(data)
    return client.infer(model, [tensor])


def _decode_bytes(raw: bytes) -> list[bytes]:
    items, offset = [], 0
    while offset < len(raw):
        (length,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        items.append(raw[offset : offset + length])
        offset += length
    return items


def _decode_raw_output(datatype: str, raw: bytes, shape: list[int]) -> np.ndarray:
    if datatype == "BYTES":
        return np.array(_decode_bytes(raw), dtype=np.object_).reshape(shape)
    return np.frombuffer(raw, dtype=mf.NUMPY_DTYPES[datatype]).reshape(shape)


# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("datatype", mf.SUPPORTED_DATATYPES)
def test_identity_metadata(identity_client: triton.InferenceServerClient, datatype: str):
    metadata = identity_client.get_model_metadata(_model_name(datatype))
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.inputs] == [
        ("INPUT0", datatype, [-1, COLUMNS])
    ]
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.outputs] == [
        ("OUTPUT0", datatype, [-1, COLUMNS])
    ]


@pytest.mark.parametrize("datatype", mf.SUPPORTED_DATATYPES)
def test_raw_round_trip_equals_onnxruntime(
    identity_client: triton.InferenceServerClient, identity_repo: Path, datatype: str
):
    data = mf.make_array(datatype, (ROWS, COLUMNS), seed=7)
    want = _onnxruntime_identity(identity_repo, datatype, data)
    _assert_same(want, data)  # the reference itself is an identity

    result = _infer_raw(identity_client, _model_name(datatype), datatype, data)
    output = result.get_output("OUTPUT0")
    assert output.datatype == datatype
    assert list(output.shape) == [ROWS, COLUMNS]
    _assert_same(result.as_numpy("OUTPUT0"), want)


@pytest.mark.parametrize("datatype", ["FP16", "FP32", "FP64"])
def test_special_float_values_pass_unchanged(
    identity_client: triton.InferenceServerClient, datatype: str
):
    dtype = mf.NUMPY_DTYPES[datatype]
    info = np.finfo(dtype)
    data = np.array(
        [[np.nan, np.inf, -np.inf, -0.0], [info.max, info.min, info.tiny, info.eps]], dtype=dtype
    )
    result = _infer_raw(identity_client, _model_name(datatype), datatype, data)
    _assert_same(result.as_numpy("OUTPUT0"), data)


@pytest.mark.parametrize(
    "datatype", ["INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"]
)
def test_integer_extremes_pass_unchanged(
    identity_client: triton.InferenceServerClient, datatype: str
):
    info = np.iinfo(mf.NUMPY_DTYPES[datatype])
    data = np.array([[info.min, info.max, 0, 1]], dtype=mf.NUMPY_DTYPES[datatype])
    result = _infer_raw(identity_client, _model_name(datatype), datatype, data)
    _assert_same(result.as_numpy("OUTPUT0"), data)


UTF8_STRINGS = [
    "",
    "plain ascii",
    "café",
    "日本語のテキスト",
    "emoji 🚀👍🏽 and a flag 🇫🇷",
    "e\u0301 combining accent",
    "שלום עולם",  # right-to-left
    "nul \x00 inside",
    "\n\t\r whitespace",
    "x" * 10_000,
    "\U0010fffd last plane",
    "4-byte prefix-looking \x05\x00\x00\x00",
]


def test_bytes_with_arbitrary_utf8_strings(
    identity_client: triton.InferenceServerClient, identity_repo: Path
):
    strings = UTF8_STRINGS
    padded = strings + [""] * (-len(strings) % COLUMNS)
    data = np.array([s.encode("utf-8") for s in padded], dtype=np.object_).reshape(-1, COLUMNS)
    want = _onnxruntime_identity(identity_repo, "BYTES", data)
    _assert_same(want, data)

    result = _infer_raw(identity_client, "identity_bytes", "BYTES", data)
    got = result.as_numpy("OUTPUT0")
    _assert_same(got, want)
    assert [b.decode("utf-8") for b in got.ravel()] == padded


def test_bytes_that_are_not_utf8_are_rejected(identity_client: triton.InferenceServerClient):
    # onnxruntime string tensors hold text; bytes that are not UTF-8 cannot pass through one.
    data = np.array([[b"ok", b"\xff\xfe", b"ok", b"ok"]], dtype=np.object_)
    with pytest.raises(InferenceServerException) as info:
        _infer_raw(identity_client, "identity_bytes", "BYTES", data)
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "'INPUT0'" in info.value.message()
    assert "UTF-8" in info.value.message()


def test_model_without_batch_dimension(identity_client: triton.InferenceServerClient):
    metadata = identity_client.get_model_metadata("identity_fp32_nobatch")
    assert [list(t.shape) for t in metadata.inputs] == [[COLUMNS]]
    assert identity_client.get_model_config("identity_fp32_nobatch").config.max_batch_size == 0
    data = mf.make_array("FP32", (COLUMNS,), seed=3)
    result = _infer_raw(identity_client, "identity_fp32_nobatch", "FP32", data)
    _assert_same(result.as_numpy("OUTPUT0"), data)


# typed contents --------------------------------------------------------------------------------


def _typed_request(datatype: str, data: np.ndarray, model: str | None = None):
    values = list(data.ravel()) if datatype == "BYTES" else data.ravel().tolist()
    contents = service_pb2.InferTensorContents(**{TYPED_FIELDS[datatype]: values})
    tensor = service_pb2.ModelInferRequest.InferInputTensor(
        name="INPUT0", datatype=datatype, shape=list(data.shape), contents=contents
    )
    return service_pb2.ModelInferRequest(
        model_name=model or _model_name(datatype), id=f"typed-{datatype}", inputs=[tensor]
    )


@pytest.mark.parametrize("datatype", TYPED_DATATYPES)
def test_typed_contents_round_trip_equals_onnxruntime(
    stub: service_pb2_grpc.GRPCInferenceServiceStub, identity_repo: Path, datatype: str
):
    data = mf.make_array(datatype, (ROWS, COLUMNS), seed=11)
    want = _onnxruntime_identity(identity_repo, datatype, data)

    response = stub.ModelInfer(_typed_request(datatype, data))
    assert response.id == f"typed-{datatype}"
    assert [(o.name, o.datatype, list(o.shape)) for o in response.outputs] == [
        ("OUTPUT0", datatype, [ROWS, COLUMNS])
    ]
    # Outputs always come back raw, whatever the request used: tritonclient reads only those.
    assert len(response.raw_output_contents) == 1
    got = _decode_raw_output(datatype, response.raw_output_contents[0], [ROWS, COLUMNS])
    _assert_same(got, want)


@pytest.mark.parametrize(
    ("datatype", "value"),
    [("INT8", 128), ("INT8", -129), ("INT16", 40_000), ("UINT8", 256), ("UINT16", 70_000)],
)
def test_typed_value_out_of_range_is_invalid_argument(
    stub: service_pb2_grpc.GRPCInferenceServiceStub, datatype: str, value: int
):
    contents = service_pb2.InferTensorContents(**{TYPED_FIELDS[datatype]: [0, 1, value, 2]})
    request = service_pb2.ModelInferRequest(
        model_name=_model_name(datatype),
        inputs=[
            service_pb2.ModelInferRequest.InferInputTensor(
                name="INPUT0", datatype=datatype, shape=[1, COLUMNS], contents=contents
            )
        ],
    )
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelInfer(request)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "'INPUT0'" in info.value.details()
    assert "out of range" in info.value.details()
    assert datatype in info.value.details()


def test_typed_contents_in_the_wrong_field_is_invalid_argument(
    stub: service_pb2_grpc.GRPCInferenceServiceStub,
):
    contents = service_pb2.InferTensorContents(fp32_contents=[1.0, 2.0, 3.0, 4.0])
    request = service_pb2.ModelInferRequest(
        model_name="identity_int32",
        inputs=[
            service_pb2.ModelInferRequest.InferInputTensor(
                name="INPUT0", datatype="INT32", shape=[1, COLUMNS], contents=contents
            )
        ],
    )
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelInfer(request)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = info.value.details()
    assert "'INPUT0'" in details
    assert "int_contents" in details
    assert "fp32_contents" in details


@pytest.mark.parametrize("count", [0, 3, 5])
def test_typed_element_count_mismatch_is_invalid_argument(
    stub: service_pb2_grpc.GRPCInferenceServiceStub, count: int
):
    contents = service_pb2.InferTensorContents(int64_contents=list(range(count)))
    request = service_pb2.ModelInferRequest(
        model_name="identity_int64",
        inputs=[
            service_pb2.ModelInferRequest.InferInputTensor(
                name="INPUT0", datatype="INT64", shape=[1, COLUMNS], contents=contents
            )
        ],
    )
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelInfer(request)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = info.value.details()
    assert "'INPUT0'" in details
    assert "4 elements" in details
    assert "[1, 4]" in details
