"""The Runtime contract, checked the same way for every runtime tensorgate ships.

A runtime plugin can run this suite on its own runtime: parametrize `CASES` with its factory.
Contract: metadata names the tensors; N rows in give N rows out of every requested output, with
the declared datatypes; a failure raises ModelExecutionError (the batcher maps it to INTERNAL);
close releases the model, after which infer fails cleanly.
"""

from __future__ import annotations

import gc
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from runtimes import datatypes
from runtimes.base import Runtime, RuntimeSpec, TensorSpec
from runtimes.errors import InvalidInputError, ModelExecutionError, ModelLoadError
from runtimes.registry import ENTRY_POINT_GROUP, available_backends, runtime_factory
from tests.support.model_factory import write_add_sub_model
from tests.support.python_models import ADD_SUB_SOURCE, write_python_model

SHAPE = (-1, 4)
DECLARED_IN = (TensorSpec("INPUT0", "FP32", SHAPE), TensorSpec("INPUT1", "FP32", SHAPE))
DECLARED_OUT = (TensorSpec("OUTPUT0", "FP32", SHAPE), TensorSpec("OUTPUT1", "FP32", SHAPE))


def onnx_spec(tmp_path: Path) -> RuntimeSpec:
    written = write_add_sub_model(tmp_path, "m", max_batch_size=8, with_config=False)
    return RuntimeSpec("m", written.model_path.parent, max_batch_size=8)


def python_spec(tmp_path: Path) -> RuntimeSpec:
    version_dir = write_python_model(tmp_path, "m", ADD_SUB_SOURCE, "")
    return RuntimeSpec(
        "m",
        version_dir,
        parameters={"offset": "0"},
        declared_inputs=DECLARED_IN,
        declared_outputs=DECLARED_OUT,
        max_batch_size=8,
    )


CASES: dict[str, Callable[[Path], RuntimeSpec]] = {"onnxruntime": onnx_spec, "python": python_spec}


@pytest.fixture(params=sorted(CASES))
def runtime(request: pytest.FixtureRequest, tmp_path: Path) -> Runtime:
    return runtime_factory(request.param)(CASES[request.param](tmp_path))


def rows(count: int, columns: int = 16 // 4) -> dict[str, np.ndarray]:
    """Inputs for either model: the ONNX add_sub has 16 columns, the python one 4."""
    return {
        "INPUT0": np.arange(count * columns, dtype=np.float32).reshape(count, columns),
        "INPUT1": np.ones((count, columns), np.float32),
    }


def inputs_for(runtime: Runtime, count: int) -> dict[str, np.ndarray]:
    columns = runtime.metadata().inputs[0].shape[1]
    return rows(count, columns)


def test_metadata_names_the_tensors_with_a_batch_dimension(runtime: Runtime) -> None:
    metadata = runtime.metadata()
    assert [s.name for s in metadata.inputs] == ["INPUT0", "INPUT1"]
    assert [s.name for s in metadata.outputs] == ["OUTPUT0", "OUTPUT1"]
    assert all(s.datatype == "FP32" and s.shape[0] == -1 for s in metadata.inputs)
    assert metadata.supports_batching
    assert metadata.device


@pytest.mark.parametrize("count", [1, 3, 8])
def test_n_rows_in_give_n_rows_out_with_declared_datatypes(runtime: Runtime, count: int) -> None:
    inputs = inputs_for(runtime, count)
    outputs = runtime.infer(runtime.prepare(inputs), ["OUTPUT1", "OUTPUT0"])
    assert list(outputs) == ["OUTPUT1", "OUTPUT0"]
    for spec in runtime.metadata().outputs:
        value = outputs[spec.name]
        assert value.shape[0] == count
        assert datatypes.from_numpy(value.dtype).name == spec.datatype
    np.testing.assert_allclose(outputs["OUTPUT1"], inputs["INPUT0"] - inputs["INPUT1"])


def test_a_failure_raises_a_tensorgate_error(runtime: Runtime) -> None:
    # Input values the runtime rejects: InvalidInputError; any other failure:
    # ModelExecutionError. The batcher turns either into a generic client message.
    inputs = inputs_for(runtime, 2)
    inputs["INPUT0"] = inputs["INPUT0"][:, :1]  # the wrong width for either model
    inputs["INPUT0"] = np.full_like(inputs["INPUT0"], np.nan)
    with pytest.raises((ModelExecutionError, InvalidInputError)):
        runtime.infer(inputs, ["OUTPUT0"])


def test_close_releases_the_model_and_later_calls_fail_cleanly(runtime: Runtime) -> None:
    runtime.close()
    runtime.close()  # idempotent
    gc.collect()
    with pytest.raises(ModelExecutionError):
        runtime.infer(inputs_for(runtime, 1), ["OUTPUT0"])


def test_python_model_gets_its_parameters_and_is_finalized(tmp_path: Path) -> None:
    spec = python_spec(tmp_path)
    spec = RuntimeSpec(**{**spec.__dict__, "parameters": {"offset": "10"}})
    runtime = runtime_factory("python")(spec)
    outputs = runtime.infer(rows(1), ["OUTPUT0"])
    assert outputs["OUTPUT0"].tolist() == [[11.0, 12.0, 13.0, 14.0]]
    model = runtime._model
    runtime.close()
    assert model.finalized


def test_python_model_load_errors_are_clear(tmp_path: Path) -> None:
    version_dir = write_python_model(tmp_path, "m", "class Other: pass\n", "")
    spec = RuntimeSpec("m", version_dir, declared_inputs=DECLARED_IN, declared_outputs=DECLARED_OUT)
    with pytest.raises(ModelLoadError, match="defines no class TensorgateModel"):
        runtime_factory("python")(spec)
    with pytest.raises(ModelLoadError, match="must declare its inputs and outputs"):
        runtime_factory("python")(RuntimeSpec("m", version_dir))
    broken = write_python_model(tmp_path, "b", "raise RuntimeError('import boom')\n", "")
    spec = RuntimeSpec("b", broken, declared_inputs=DECLARED_IN, declared_outputs=DECLARED_OUT)
    with pytest.raises(ModelLoadError, match="failed to load: RuntimeError: import boom"):
        runtime_factory("python")(spec)


def test_gpu_placement_without_a_gpu_fails_clearly_or_falls_back_when_allowed(
    tmp_path: Path,
) -> None:
    spec = onnx_spec(tmp_path)
    on_gpu = RuntimeSpec(**{**spec.__dict__, "device": "gpu"})
    try:
        runtime = runtime_factory("onnxruntime")(on_gpu)
    except ModelLoadError as error:
        assert "CUDAExecutionProvider is not active" in str(error)
        assert "allow_cpu_fallback" in str(error)
    else:  # a machine with a GPU: CUDA really is active
        assert runtime.metadata().device == "CUDAExecutionProvider"
        return
    allowed = RuntimeSpec(**{**on_gpu.__dict__, "parameters": {"allow_cpu_fallback": "true"}})
    device = runtime_factory("onnxruntime")(allowed).metadata().device
    assert device == "CPUExecutionProvider (fallback from CUDAExecutionProvider)"


def test_tensorrt_options_come_from_the_accelerator_parameters(tmp_path: Path) -> None:
    from runtimes.onnx import options_for

    spec = RuntimeSpec(
        "m",
        tmp_path,
        parameters={"gpu_mem_limit": "1073741824"},
        device="gpu",
        device_id=1,
        accelerator="tensorrt",
        accelerator_parameters={"precision_mode": "FP16", "trt_engine_cache_path": "/cache"},
    )
    options = options_for(spec)
    assert options.providers == (
        "TensorrtExecutionProvider",
        "CUDAExecutionProvider",
        "CPUExecutionProvider",
    )
    tensorrt, cuda, _ = options.provider_options
    assert tensorrt == {
        "device_id": "1",
        "trt_fp16_enable": "True",
        "trt_engine_cache_enable": "True",
        "trt_engine_cache_path": "/cache",
    }
    assert cuda == {"device_id": "1", "gpu_mem_limit": "1073741824"}


def test_a_package_adds_a_runtime_through_an_entry_point(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "echo_runtime.py"
    package.write_text(
        textwrap.dedent(
            """
            from runtimes.base import RuntimeMetadata

            class Echo:
                def __init__(self, spec):
                    self._metadata = RuntimeMetadata(
                        spec.declared_inputs, spec.declared_outputs, True, "echo"
                    )
                def metadata(self):
                    return self._metadata
                def prepare(self, inputs):
                    return inputs
                def infer(self, inputs, names):
                    return {name: inputs["INPUT0"] for name in names}
                def close(self):
                    pass

            def create(spec):
                return Echo(spec)
            """
        )
    )
    dist_info = tmp_path / "echo_runtime-1.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: echo-runtime\nVersion: 1.0\n")
    (dist_info / "entry_points.txt").write_text(
        f"[{ENTRY_POINT_GROUP}]\necho = echo_runtime:create\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "echo" in available_backends()
    spec = RuntimeSpec("m", tmp_path, declared_inputs=DECLARED_IN, declared_outputs=DECLARED_OUT)
    runtime = runtime_factory("echo")(spec)
    assert runtime.metadata().device == "echo"
    assert runtime.infer(rows(2), ["OUTPUT0"])["OUTPUT0"].shape == (2, 4)
    sys.modules.pop("echo_runtime", None)
