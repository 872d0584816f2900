"""runtimes.onnx.OnnxRuntime on small identity models written by tests.support.model_factory."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

from runtimes import datatypes
from runtimes.base import TensorSpec
from runtimes.errors import InvalidInputError, ModelLoadError, TensorgateError
from runtimes.onnx import OnnxRuntime, OnnxRuntimeOptions
from server import codec
from server._proto import grpc_service_pb2 as pb
from tests.support import model_factory

NUMERIC_SUPPORTED = tuple(d for d in model_factory.SUPPORTED_DATATYPES if d != "BYTES")


@contextmanager
def raises(cls: type[TensorgateError], *fragments: str) -> Iterator[None]:
    with pytest.raises(TensorgateError) as info:
        yield
    assert type(info.value) is cls, f"{type(info.value).__name__}: {info.value}"
    for fragment in fragments:
        assert fragment in str(info.value), f"{fragment!r} not in {str(info.value)!r}"


def identity(tmp_path: Path, datatype: str, *, max_batch_size: int = 8) -> OnnxRuntime:
    written = model_factory.write_identity_model(
        tmp_path,
        f"id_{datatype.lower()}",
        datatype,
        max_batch_size=max_batch_size,
        with_config=False,
    )
    return OnnxRuntime(written.model_path)


def readonly(array: np.ndarray) -> np.ndarray:
    """The array as the codec hands it over: a read-only view of the raw request bytes."""
    datatype = datatypes.from_numpy(array.dtype)
    return codec.decode_raw("INPUT0", datatype, array.shape, array.tobytes())


# --------------------------------------------------------------------------------------------
# Metadata
# --------------------------------------------------------------------------------------------


def test_metadata_of_a_batchable_model(tmp_path: Path) -> None:
    runtime = identity(tmp_path, "FP32", max_batch_size=8)
    metadata = runtime.metadata()
    assert metadata.inputs == (TensorSpec("INPUT0", "FP32", (-1, 4)),)
    assert metadata.outputs == (TensorSpec("OUTPUT0", "FP32", (-1, 4)),)
    assert metadata.supports_batching is True
    assert metadata.device == "CPUExecutionProvider"


def test_metadata_of_a_fixed_shape_model(tmp_path: Path) -> None:
    metadata = identity(tmp_path, "INT64", max_batch_size=0).metadata()
    assert metadata.inputs == (TensorSpec("INPUT0", "INT64", (4,)),)
    assert metadata.outputs == (TensorSpec("OUTPUT0", "INT64", (4,)),)
    assert metadata.supports_batching is False


def test_metadata_of_a_two_input_model(tmp_path: Path) -> None:
    written = model_factory.write_add_sub_model(tmp_path, "add_sub", with_config=False)
    metadata = OnnxRuntime(written.model_path).metadata()
    assert [(s.name, s.datatype, s.shape) for s in metadata.inputs] == [
        ("INPUT0", "FP32", (-1, 16)),
        ("INPUT1", "FP32", (-1, 16)),
    ]
    assert [s.name for s in metadata.outputs] == ["OUTPUT0", "OUTPUT1"]
    assert metadata.supports_batching is True


@pytest.mark.parametrize("datatype", ["BYTES", "BF16", "FP16", "BOOL"])
def test_metadata_reports_protocol_datatype_names(tmp_path: Path, datatype: str) -> None:
    metadata = identity(tmp_path, datatype).metadata()
    assert metadata.inputs[0].datatype == datatype
    assert metadata.outputs[0].datatype == datatype


def test_bundled_example_model_loads(tmp_path: Path) -> None:
    from server.settings import BUNDLED_MODELS

    metadata = OnnxRuntime(BUNDLED_MODELS / "image_classifier" / "1" / "model.onnx").metadata()
    assert metadata.inputs[0].shape[0] == -1
    assert metadata.supports_batching is True


# --------------------------------------------------------------------------------------------
# Loading failures
# --------------------------------------------------------------------------------------------


def test_corrupt_model_file_is_a_model_load_error(tmp_path: Path) -> None:
    written = model_factory.write_corrupt_model(tmp_path, "broken")
    with raises(ModelLoadError, "onnxruntime could not load model.onnx"):
        OnnxRuntime(written.model_path)


def test_missing_model_file_is_a_model_load_error(tmp_path: Path) -> None:
    with raises(ModelLoadError, "could not load absent.onnx"):
        OnnxRuntime(tmp_path / "absent.onnx")


@pytest.mark.filterwarnings("ignore:Specified provider:UserWarning")
def test_unavailable_provider_falls_back_and_reports_the_active_device(tmp_path: Path) -> None:
    # onnxruntime falls back to the CPU provider; metadata must say what actually runs.
    written = model_factory.write_identity_model(
        tmp_path, "m", "FP32", max_batch_size=0, with_config=False
    )
    options = OnnxRuntimeOptions(providers=("NoSuchExecutionProvider",))
    with pytest.raises(ModelLoadError, match=r"NoSuchExecutionProvider is not active.*fell back"):
        OnnxRuntime(written.model_path, options)
    allowed = OnnxRuntimeOptions(providers=("NoSuchExecutionProvider",), allow_cpu_fallback=True)
    assert OnnxRuntime(written.model_path, allowed).metadata().device == (
        "CPUExecutionProvider (fallback from NoSuchExecutionProvider)"
    )


def test_thread_options_are_accepted(tmp_path: Path) -> None:
    written = model_factory.write_identity_model(
        tmp_path, "m", "FP32", max_batch_size=0, with_config=False
    )
    runtime = OnnxRuntime(
        written.model_path, OnnxRuntimeOptions(intra_op_threads=1, inter_op_threads=1)
    )
    data = np.arange(4, dtype=np.float32)
    np.testing.assert_array_equal(runtime.infer({"INPUT0": data}, ["OUTPUT0"])["OUTPUT0"], data)


# --------------------------------------------------------------------------------------------
# Inference
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("datatype", NUMERIC_SUPPORTED)
def test_identity_round_trip_for_numeric_datatypes(tmp_path: Path, datatype: str) -> None:
    runtime = identity(tmp_path, datatype)
    data = model_factory.make_array(datatype, (3, 4), seed=7)
    result = runtime.infer({"INPUT0": readonly(data)}, ["OUTPUT0"])
    assert list(result) == ["OUTPUT0"]
    assert result["OUTPUT0"].dtype == data.dtype
    assert result["OUTPUT0"].tobytes() == data.tobytes()


def test_add_sub_outputs_in_the_requested_order(tmp_path: Path) -> None:
    written = model_factory.write_add_sub_model(tmp_path, "m", offset=10.0, with_config=False)
    runtime = OnnxRuntime(written.model_path)
    a = np.full((2, 16), 3.0, dtype=np.float32)
    b = np.full((2, 16), 1.0, dtype=np.float32)
    result = runtime.infer({"INPUT0": a, "INPUT1": b}, ["OUTPUT1", "OUTPUT0"])
    assert list(result) == ["OUTPUT1", "OUTPUT0"]
    np.testing.assert_array_equal(result["OUTPUT0"], a + b + 10)
    np.testing.assert_array_equal(result["OUTPUT1"], a - b)
    assert list(runtime.infer({"INPUT0": a, "INPUT1": b}, ["OUTPUT1"])) == ["OUTPUT1"]


def test_bytes_round_trip_of_utf8_text(tmp_path: Path) -> None:
    runtime = identity(tmp_path, "BYTES")
    text = ["hello", "", "caf\u00e9", "\u65e5\u672c\u8a9e", "a b\tc", "b'x'", "\U0001f600", "\x00"]
    data = np.array([t.encode("utf-8") for t in text], dtype=object).reshape(2, 4)
    result = runtime.infer({"INPUT0": data}, ["OUTPUT0"])["OUTPUT0"]
    assert result.dtype == object
    assert result.shape == (2, 4)
    assert all(type(item) is bytes for item in result.ravel())
    assert result.ravel().tolist() == [t.encode("utf-8") for t in text]


def test_bytes_from_a_decoded_request_round_trip(tmp_path: Path) -> None:
    runtime = identity(tmp_path, "BYTES", max_batch_size=0)
    elements = [b"one", "\u00fcber".encode(), b"", b"four"]
    raw = b"".join(len(e).to_bytes(4, "little") + e for e in elements)
    request = pb.ModelInferRequest(
        inputs=[pb.ModelInferRequest.InferInputTensor(name="INPUT0", datatype="BYTES", shape=[4])],
        raw_input_contents=[raw],
    )
    decoded = codec.decode_infer_request(request)
    outputs = runtime.infer(decoded.inputs, ["OUTPUT0"])
    response = codec.encode_infer_response("m", "1", "", outputs)
    assert response.outputs[0].datatype == "BYTES"
    assert response.raw_output_contents[0] == raw


def test_non_utf8_bytes_are_invalid_input(tmp_path: Path) -> None:
    runtime = identity(tmp_path, "BYTES", max_batch_size=0)
    data = np.array([b"ok", b"\xff\xfe", b"", b"x"], dtype=object)
    with raises(InvalidInputError, "input 'INPUT0'", "UTF-8"):
        runtime.infer({"INPUT0": data}, ["OUTPUT0"])


def test_bf16_round_trip_via_ml_dtypes(tmp_path: Path) -> None:
    runtime = identity(tmp_path, "BF16")
    values = np.array(
        [[1.0, -2.5, 0.0, 3.140625], [-0.0, 65280.0, 1e-3, -7.0]], dtype=ml_dtypes.bfloat16
    )
    result = runtime.infer({"INPUT0": readonly(values)}, ["OUTPUT0"])["OUTPUT0"]
    assert result.dtype == np.dtype(ml_dtypes.bfloat16)
    assert result.shape == (2, 4)
    assert result.tobytes() == values.tobytes()
    assert datatypes.from_numpy(result.dtype).name == "BF16"


def test_bf16_fixed_shape_and_special_values(tmp_path: Path) -> None:
    runtime = identity(tmp_path, "BF16", max_batch_size=0)
    values = np.array([np.inf, -np.inf, np.nan, 1.5], dtype=ml_dtypes.bfloat16)
    result = runtime.infer({"INPUT0": values}, ["OUTPUT0"])["OUTPUT0"]
    assert result.shape == (4,)
    assert result.view(np.uint16).tolist() == values.view(np.uint16).tolist()


def test_bf16_output_encodes_as_bf16_raw(tmp_path: Path) -> None:
    runtime = identity(tmp_path, "BF16")
    values = np.array([[0.5, 1.5, -2.0, 4.0]], dtype=ml_dtypes.bfloat16)
    outputs = runtime.infer({"INPUT0": values}, ["OUTPUT0"])
    response = codec.encode_infer_response("m", "1", "", outputs)
    assert response.outputs[0].datatype == "BF16"
    assert list(response.outputs[0].shape) == [1, 4]
    assert response.raw_output_contents[0] == values.tobytes()


def test_wrong_input_shape_is_an_invalid_input(tmp_path: Path) -> None:
    # onnxruntime blames the caller's values (INVALID_ARGUMENT): the server says INVALID_ARGUMENT.
    runtime = identity(tmp_path, "FP32")
    with raises(InvalidInputError, "onnxruntime rejected the input"):
        runtime.infer({"INPUT0": np.zeros((2, 5), dtype=np.float32)}, ["OUTPUT0"])


def test_unknown_output_is_an_invalid_input(tmp_path: Path) -> None:
    runtime = identity(tmp_path, "INT32")
    with raises(InvalidInputError, "onnxruntime rejected the input"):
        runtime.infer({"INPUT0": np.zeros((1, 4), dtype=np.int32)}, ["NOPE"])


def test_infer_does_not_modify_the_callers_inputs(tmp_path: Path) -> None:
    runtime = identity(tmp_path, "BYTES")
    data = np.array([[b"a", b"b", b"c", b"d"]], dtype=object)
    inputs = {"INPUT0": data}
    runtime.infer(inputs, ["OUTPUT0"])
    assert inputs["INPUT0"] is data
    assert data.ravel().tolist() == [b"a", b"b", b"c", b"d"]
