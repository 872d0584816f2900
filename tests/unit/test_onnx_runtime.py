"""runtimes.onnx.OnnxRuntime on small identity models written by tests.support.model_factory."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

from runtimes import datatypes
from runtimes.base import RuntimeSpec, TensorSpec
from runtimes.errors import InvalidInputError, ModelExecutionError, ModelLoadError, TensorgateError
from runtimes.io_binding import HostBuffers, IoBindingRunner
from runtimes.onnx import OnnxRuntime, OnnxRuntimeOptions, create
from server._proto import grpc_service_pb2 as pb
from server.grpc_api import codec
from tests.support import model_factory
from tests.support.responses import encode

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


@pytest.mark.parametrize(
    ("parameters", "expected"),
    [
        ({}, "0"),
        ({"session.intra_op.allow_spinning": "1"}, "1"),
        ({"session.intra_op.allow_spinning": "false"}, "0"),
    ],
)
def test_onnxruntime_threads_spin_only_when_the_model_asks(
    tmp_path: Path, parameters: dict[str, str], expected: str
) -> None:
    written = model_factory.write_identity_model(
        tmp_path, "m", "FP32", max_batch_size=0, with_config=False
    )
    spec = RuntimeSpec("m", written.model_path.parent, parameters=parameters)
    runtime = create(spec)
    # The session's own record of what it was given (no public accessor on OnnxRuntime).
    session_options = runtime._session.get_session_options()
    for key in ("session.intra_op.allow_spinning", "session.inter_op.allow_spinning"):
        assert session_options.get_session_config_entry(key) == expected
    data = np.arange(4, dtype=np.float32)
    np.testing.assert_array_equal(runtime.infer({"INPUT0": data}, ["OUTPUT0"])["OUTPUT0"], data)


def test_a_spinning_flag_that_does_not_parse_fails_the_load_naming_it(tmp_path: Path) -> None:
    written = model_factory.write_identity_model(
        tmp_path, "m", "FP32", max_batch_size=0, with_config=False
    )
    spec = RuntimeSpec(
        "m", written.model_path.parent, parameters={"session.intra_op.allow_spinning": "maybe"}
    )
    with raises(ModelLoadError, "model 'm'", "session.intra_op.allow_spinning", "'maybe'"):
        create(spec)


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
    response = encode("m", "1", "", outputs)
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
    response = encode("m", "1", "", outputs)
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


# --------------------------------------------------------------------------------------------
# IO binding (runtimes.io_binding), exercised for real on the CPU provider
# --------------------------------------------------------------------------------------------

BINDABLE = tuple(d for d in NUMERIC_SUPPORTED if d != "BF16")
FORCED = OnnxRuntimeOptions(io_binding=True)


def bound_identity(tmp_path: Path, datatype: str = "FP32") -> OnnxRuntime:
    written = model_factory.write_identity_model(
        tmp_path, f"id_{datatype.lower()}", datatype, max_batch_size=64, with_config=False
    )
    return OnnxRuntime(written.model_path, FORCED)


def bound_add_sub(tmp_path: Path, options: OnnxRuntimeOptions = FORCED) -> OnnxRuntime:
    written = model_factory.write_add_sub_model(tmp_path, "m", offset=10.0, with_config=False)
    return OnnxRuntime(written.model_path, options)


def add_sub_inputs(rows: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "INPUT0": rng.standard_normal((rows, 16)).astype(np.float32),
        "INPUT1": rng.standard_normal((rows, 16)).astype(np.float32),
    }


def test_io_binding_is_off_on_the_cpu_unless_asked(tmp_path: Path) -> None:
    written = model_factory.write_add_sub_model(tmp_path, "m", with_config=False)
    assert OnnxRuntime(written.model_path).io_binding is None
    assert OnnxRuntime(written.model_path, OnnxRuntimeOptions(io_binding=False)).io_binding is None
    assert OnnxRuntime(written.model_path, FORCED).io_binding is not None


@pytest.mark.parametrize("datatype", BINDABLE)
def test_io_binding_round_trips_every_bindable_datatype(tmp_path: Path, datatype: str) -> None:
    runtime = bound_identity(tmp_path, datatype)
    data = model_factory.make_array(datatype, (3, 4), seed=3)
    result = runtime.infer({"INPUT0": readonly(data)}, ["OUTPUT0"])["OUTPUT0"]
    assert result.dtype == data.dtype
    assert result.tobytes() == data.tobytes()


def test_io_binding_reuses_host_buffers_across_batches(tmp_path: Path) -> None:
    runtime = bound_identity(tmp_path)
    assert runtime.io_binding is not None
    buffers = runtime.io_binding.host_buffers
    for rows in (8, 8, 3, 1, 8):  # same size, then smaller: the first buffer serves them all
        data = np.arange(rows * 4, dtype=np.float32).reshape(rows, 4) + rows
        result = runtime.infer({"INPUT0": data}, ["OUTPUT0"])["OUTPUT0"]
        np.testing.assert_array_equal(result, data)
    assert buffers.allocations == 1
    big = np.ones((64, 4), np.float32)  # more than the buffer holds: it grows once
    np.testing.assert_array_equal(runtime.infer({"INPUT0": big}, ["OUTPUT0"])["OUTPUT0"], big)
    np.testing.assert_array_equal(runtime.infer({"INPUT0": big[:5]}, ["OUTPUT0"])["OUTPUT0"], 1)
    assert buffers.allocations == 2
    assert not buffers.pinned  # nothing to page-lock on the CPU provider


def test_io_binding_outputs_are_not_overwritten_by_the_next_batch(tmp_path: Path) -> None:
    # The batcher may still be encoding a batch's outputs while the next batch runs.
    runtime = bound_add_sub(tmp_path)
    first_inputs, second_inputs = add_sub_inputs(4, seed=1), add_sub_inputs(4, seed=2)
    first = runtime.infer(first_inputs, ["OUTPUT0", "OUTPUT1"])
    kept = {name: value.copy() for name, value in first.items()}
    runtime.infer(second_inputs, ["OUTPUT0", "OUTPUT1"])
    for name in kept:
        np.testing.assert_array_equal(first[name], kept[name])
    np.testing.assert_allclose(
        first["OUTPUT0"], first_inputs["INPUT0"] + first_inputs["INPUT1"] + 10
    )


@pytest.mark.parametrize("rows", [1, 5, 8])
def test_io_binding_gives_n_rows_for_n_rows_in_any_output_order(tmp_path: Path, rows: int) -> None:
    runtime = bound_add_sub(tmp_path)
    inputs = add_sub_inputs(rows)
    for names in (["OUTPUT1", "OUTPUT0"], ["OUTPUT0"], ["OUTPUT1"], ["OUTPUT0", "OUTPUT1"]):
        result = runtime.infer(inputs, names)
        assert list(result) == names
        assert all(value.shape == (rows, 16) for value in result.values())
        if "OUTPUT1" in result:
            np.testing.assert_allclose(result["OUTPUT1"], inputs["INPUT0"] - inputs["INPUT1"])


def test_io_binding_matches_session_run_on_the_bundled_image_model() -> None:
    from server.settings import BUNDLED_MODELS

    path = BUNDLED_MODELS / "image_classifier" / "1" / "model.onnx"
    plain, bound = OnnxRuntime(path), OnnxRuntime(path, FORCED)
    for rows in (1, 8, 3):
        image = np.random.default_rng(rows).random((rows, 3, 64, 64), dtype=np.float32)
        expected = plain.infer({"image": image}, ["logits"])["logits"]
        np.testing.assert_allclose(
            bound.infer({"image": image}, ["logits"])["logits"], expected, rtol=1e-5, atol=1e-6
        )


def test_io_binding_rejects_a_wrong_shape_as_invalid_input(tmp_path: Path) -> None:
    runtime = bound_identity(tmp_path)
    with raises(InvalidInputError, "input 'INPUT0' has shape [2, 5]", "[-1, 4]"):
        runtime.infer({"INPUT0": np.zeros((2, 5), dtype=np.float32)}, ["OUTPUT0"])
    with raises(InvalidInputError, "the model has no output 'NOPE'"):
        runtime.infer({"INPUT0": np.zeros((1, 4), dtype=np.float32)}, ["NOPE"])


def test_io_binding_cannot_bind_strings(tmp_path: Path) -> None:
    written = model_factory.write_identity_model(
        tmp_path, "s", "BYTES", max_batch_size=8, with_config=False
    )
    with raises(ModelLoadError, "cannot bind tensor 'INPUT0'"):
        OnnxRuntime(written.model_path, FORCED)
    assert OnnxRuntime(written.model_path).io_binding is None


def test_cuda_graph_on_the_cpu_provider_runs_without(tmp_path: Path) -> None:
    written = model_factory.write_add_sub_model(tmp_path, "m", with_config=False)
    runtime = OnnxRuntime(written.model_path, OnnxRuntimeOptions(cuda_graph=True))
    assert runtime.io_binding is None
    inputs = add_sub_inputs(2)
    np.testing.assert_allclose(
        runtime.infer(inputs, ["OUTPUT1"])["OUTPUT1"], inputs["INPUT0"] - inputs["INPUT1"]
    )


def test_close_with_io_binding_then_infer_fails_cleanly(tmp_path: Path) -> None:
    runtime = bound_add_sub(tmp_path)
    runtime.close()
    runtime.close()
    with raises(ModelExecutionError):
        runtime.infer(add_sub_inputs(1), ["OUTPUT0"])


def test_io_binding_and_cuda_graph_parameters_reach_the_providers(tmp_path: Path) -> None:
    from runtimes.onnx import options_for

    cpu = options_for(RuntimeSpec("m", tmp_path, parameters={"io_binding": "true"}))
    assert cpu.io_binding is True and cpu.cuda_graph is False
    assert options_for(RuntimeSpec("m", tmp_path)).io_binding is None
    assert (
        options_for(RuntimeSpec("m", tmp_path, parameters={"io_binding": "FALSE"})).io_binding
        is False
    )
    gpu = RuntimeSpec("m", tmp_path, parameters={"cuda_graph": "true"}, device="gpu", device_id=2)
    options = options_for(gpu)
    assert options.cuda_graph is True
    assert options.provider_options[0] == {"device_id": "2", "enable_cuda_graph": "1"}
    trt = options_for(RuntimeSpec(**{**gpu.__dict__, "accelerator": "tensorrt"}))
    assert trt.provider_options[0]["trt_cuda_graph_enable"] == "True"
    assert trt.provider_options[1]["enable_cuda_graph"] == "1"


# The CUDA graph bookkeeping (fixed buffers and a graph id per input shape) runs on the CPU too:
# onnxruntime ignores the graph id there, so everything but the capture itself is checked here.


def graph_runner(tmp_path: Path, max_graphs: int = 3) -> tuple[OnnxRuntime, IoBindingRunner]:
    runtime = bound_add_sub(tmp_path, OnnxRuntimeOptions())
    runner = IoBindingRunner(
        runtime._session,
        runtime.metadata().outputs,
        device="cpu",
        batches=True,
        cuda_graph=True,
        max_graphs=max_graphs,
    )
    return runtime, runner


def test_graph_buffers_are_fixed_per_shape_and_updated_in_place(tmp_path: Path) -> None:
    runtime, runner = graph_runner(tmp_path)
    for seed, rows in enumerate((4, 4, 2, 4, 2)):
        inputs = add_sub_inputs(rows, seed)
        expected = runtime.infer(inputs, ["OUTPUT0", "OUTPUT1"])
        got = runner.run(inputs, ["OUTPUT0", "OUTPUT1"])
        np.testing.assert_allclose(got[0], expected["OUTPUT0"], rtol=1e-6)
        np.testing.assert_allclose(got[1], expected["OUTPUT1"], rtol=1e-6)
    assert runner.graph_count == 2  # batch sizes 4 and 2
    runner.run(add_sub_inputs(2), ["OUTPUT1"])  # another output set: another graph
    assert runner.graph_count == 3


def test_shapes_beyond_the_graph_limit_run_without_a_graph(tmp_path: Path) -> None:
    _, runner = graph_runner(tmp_path, max_graphs=1)
    for rows in (1, 2, 3, 1):
        inputs = add_sub_inputs(rows, rows)
        got = runner.run(inputs, ["OUTPUT1"])[0]
        np.testing.assert_allclose(got, inputs["INPUT0"] - inputs["INPUT1"], rtol=1e-6)
    assert runner.graph_count == 1


def test_a_wrong_shape_gets_no_graph(tmp_path: Path) -> None:
    _, runner = graph_runner(tmp_path)
    with pytest.raises(InvalidInputError, match="has shape"):
        runner.run({"INPUT0": np.zeros((2, 3), np.float32)}, ["OUTPUT0"])
    assert runner.graph_count == 0


def test_a_graph_whose_first_run_fails_is_dropped_and_its_id_not_reused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime, runner = graph_runner(tmp_path)
    session = runtime._session

    def fail(*args: object) -> None:
        raise RuntimeError("device lost")

    monkeypatch.setattr(session, "run_with_iobinding", fail)
    with pytest.raises(RuntimeError, match="device lost"):
        runner.run(add_sub_inputs(2), ["OUTPUT0"])
    assert runner.graph_count == 0
    monkeypatch.undo()
    inputs = add_sub_inputs(2)
    got = runner.run(inputs, ["OUTPUT0"])[0]
    np.testing.assert_allclose(got, inputs["INPUT0"] + inputs["INPUT1"] + 10, rtol=1e-6)
    (graph,) = runner._graphs.values()
    assert graph.run_options.get_run_config_entry("gpu_graph_id") == "2"


def test_graphs_need_output_shapes_known_from_the_batch_size(tmp_path: Path) -> None:
    runtime, _ = graph_runner(tmp_path)
    unknown = (TensorSpec("OUTPUT0", "FP32", (-1, -1)),)
    with pytest.raises(ValueError, match="output 'OUTPUT0' has shape \\[-1, -1\\]"):
        IoBindingRunner(runtime._session, unknown, device="cpu", batches=True, cuda_graph=True)


class FakePinner:
    def __init__(self) -> None:
        self.pinned: list[int] = []
        self.unpinned: list[int] = []

    def pin(self, buffer: np.ndarray) -> bool:
        self.pinned.append(buffer.nbytes)
        return True

    def unpin(self, buffer: np.ndarray) -> None:
        self.unpinned.append(buffer.nbytes)


def test_host_buffers_pin_once_per_allocation_and_unpin_what_they_drop() -> None:
    pinner = FakePinner()
    buffers = HostBuffers(pinner)  # type: ignore[arg-type]
    small, large = np.ones((2, 4), np.float32), np.ones((100, 4), np.float32)
    for array in (small, small, large, small):
        staged = buffers.stage("x", array)
        np.testing.assert_array_equal(staged, array)
        assert staged.dtype == array.dtype and staged.flags.c_contiguous
    assert buffers.pinned
    assert pinner.pinned == [64, 2048] and pinner.unpinned == [64]
    buffers.close()
    assert pinner.unpinned == [64, 2048]
