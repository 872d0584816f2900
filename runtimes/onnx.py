"""onnxruntime backend (CPU today; GPU providers slot in through OnnxRuntimeOptions.providers)."""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnxruntime.capi.onnxruntime_pybind11_state import InvalidArgument

from runtimes import datatypes
from runtimes.base import RuntimeMetadata, RuntimeSpec, TensorSpec
from runtimes.errors import InvalidInputError, ModelExecutionError, ModelLoadError

log = logging.getLogger(__name__)

_ONNX_BF16_ELEMENT_TYPE = 16  # onnx.TensorProto.BFLOAT16


DEFAULT_FILENAME = "model.onnx"
CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"
# Model parameters passed on to the CUDA execution provider (Triton's onnxruntime backend names).
_CUDA_PARAMETERS = ("gpu_mem_limit", "cudnn_conv_algo_search", "arena_extend_strategy")


@dataclass(frozen=True)
class OnnxRuntimeOptions:
    """Session options a model config can set. Zero threads means onnxruntime's default.

    providers are tried in order; the first is the one wanted. onnxruntime silently falls back
    when it cannot create it (no GPU, missing CUDA libraries), so the load checks which one is
    active: a fallback fails the load unless allow_cpu_fallback is set.
    """

    intra_op_threads: int = 0
    inter_op_threads: int = 0
    providers: tuple[str, ...] = (CPU,)
    provider_options: tuple[dict[str, str], ...] = field(default_factory=tuple)
    allow_cpu_fallback: bool = False


class OnnxRuntime:
    """One onnxruntime InferenceSession; onnxruntime releases the GIL while it runs."""

    def __init__(self, model_path: Path, options: OnnxRuntimeOptions | None = None) -> None:
        options = options or OnnxRuntimeOptions()
        session_options = ort.SessionOptions()
        session_options.intra_op_num_threads = options.intra_op_threads
        session_options.inter_op_num_threads = options.inter_op_threads
        session_options.log_severity_level = 3
        try:
            self._session = ort.InferenceSession(
                str(model_path),
                sess_options=session_options,
                providers=list(options.providers),
                provider_options=list(options.provider_options) or None,
            )
        except Exception as exc:  # onnxruntime raises several unrelated exception types
            raise ModelLoadError(f"onnxruntime could not load {model_path.name}: {exc}") from exc
        wanted, active = options.providers[0], self._session.get_providers()[0]
        self.fallback_from = ""
        if active != wanted:
            if not options.allow_cpu_fallback:
                raise ModelLoadError(
                    f"{wanted} is not active: onnxruntime fell back to {active} (no GPU, or "
                    "the CUDA/TensorRT libraries are missing); set the model parameter "
                    "allow_cpu_fallback to 'true' to run on the CPU instead"
                )
            log.warning("%s: %s is not active, running on %s", model_path, wanted, active)
            self.fallback_from = wanted
        self._metadata = _read_metadata(self._session, self.fallback_from)
        # Strings and bfloat16 need conversions that plain numpy feeds cannot express.
        self._string_inputs = _names_of(self._metadata.inputs, "BYTES")
        self._bf16_inputs = _names_of(self._metadata.inputs, "BF16")
        self._bf16_outputs = _names_of(self._metadata.outputs, "BF16")

    def metadata(self) -> RuntimeMetadata:
        return self._metadata

    def prepare(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if not self._string_inputs:
            return inputs
        prepared = dict(inputs)
        for name in self._string_inputs & prepared.keys():
            prepared[name] = _bytes_to_str(name, prepared[name])
        return prepared

    def infer(
        self, inputs: Mapping[str, np.ndarray], output_names: Sequence[str]
    ) -> dict[str, np.ndarray]:
        feeds = self.prepare(dict(inputs))
        try:
            if self._bf16_inputs or self._bf16_outputs:
                results = self._run_with_ort_values(feeds, output_names)
            else:
                results = self._session.run(list(output_names), feeds)
        except InvalidArgument as exc:  # the request's values: out-of-range indices, shapes
            raise InvalidInputError(f"onnxruntime rejected the input: {exc}") from exc
        except Exception as exc:
            raise ModelExecutionError(f"onnxruntime failed to run the model: {exc}") from exc
        return {
            name: _str_to_bytes(value) if value.dtype == object else value
            for name, value in zip(output_names, results, strict=True)
        }

    def close(self) -> None:
        # Dropping the last reference frees the session and its memory arena.
        self._session = None

    def _run_with_ort_values(
        self, feeds: dict[str, np.ndarray], output_names: Sequence[str]
    ) -> list[np.ndarray]:
        ort_feeds = {
            name: ort.OrtValue.ortvalue_from_numpy_with_onnx_type(
                np.ascontiguousarray(value).view(np.uint16), _ONNX_BF16_ELEMENT_TYPE
            )
            if name in self._bf16_inputs
            else ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(value))
            for name, value in feeds.items()
        }
        values = self._session.run_with_ort_values(list(output_names), ort_feeds)
        return [
            _bf16_from_ort_value(value) if name in self._bf16_outputs else value.numpy()
            for name, value in zip(output_names, values, strict=True)
        ]


def _read_metadata(session: ort.InferenceSession, fallback_from: str) -> RuntimeMetadata:
    inputs = tuple(_tensor_spec(arg) for arg in session.get_inputs())
    outputs = tuple(_tensor_spec(arg) for arg in session.get_outputs())
    supports_batching = all(spec.shape and spec.shape[0] == -1 for spec in (*inputs, *outputs))
    device = session.get_providers()[0]
    return RuntimeMetadata(
        inputs=inputs,
        outputs=outputs,
        supports_batching=supports_batching,
        device=f"{device} (fallback from {fallback_from})" if fallback_from else device,
    )


def options_for(spec: RuntimeSpec) -> OnnxRuntimeOptions:
    """Execution providers and session options from the model's config, as in Triton's
    onnxruntime backend: instance kind GPU -> CUDA on its device; the gpu execution
    accelerator "tensorrt" -> TensorRT first (FP16 with precision_mode FP16, an engine cache
    with trt_engine_cache_path)."""
    parameters = spec.parameters
    threads = {
        "intra_op_threads": int(parameters.get("intra_op_thread_count", 0)),
        "inter_op_threads": int(parameters.get("inter_op_thread_count", 0)),
        "allow_cpu_fallback": parameters.get("allow_cpu_fallback", "").lower() == "true",
    }
    if spec.device != "gpu":
        return OnnxRuntimeOptions(**threads)
    cuda = {"device_id": str(spec.device_id)}
    cuda.update({key: parameters[key] for key in _CUDA_PARAMETERS if key in parameters})
    if spec.accelerator != "tensorrt":
        return OnnxRuntimeOptions(**threads, providers=(CUDA, CPU), provider_options=(cuda, {}))
    accelerator = spec.accelerator_parameters
    tensorrt = {"device_id": str(spec.device_id)}
    if accelerator.get("precision_mode", "").upper() == "FP16":
        tensorrt["trt_fp16_enable"] = "True"
    if "trt_engine_cache_path" in accelerator:
        tensorrt["trt_engine_cache_enable"] = "True"
        tensorrt["trt_engine_cache_path"] = accelerator["trt_engine_cache_path"]
    if "max_workspace_size_bytes" in accelerator:
        tensorrt["trt_max_workspace_size"] = accelerator["max_workspace_size_bytes"]
    return OnnxRuntimeOptions(
        **threads, providers=(TENSORRT, CUDA, CPU), provider_options=(tensorrt, cuda, {})
    )


def create(spec: RuntimeSpec) -> OnnxRuntime:
    path = spec.version_dir / (spec.model_filename or DEFAULT_FILENAME)
    if not path.is_file():
        raise ModelLoadError(
            f"model '{spec.model_name}' version {spec.version_dir.name} has no file {path.name}"
        )
    try:
        options = options_for(spec)
    except ValueError as exc:
        raise ModelLoadError(f"model '{spec.model_name}': bad thread count: {exc}") from exc
    return OnnxRuntime(path, options)


def _tensor_spec(arg: ort.NodeArg) -> TensorSpec:
    datatype = datatypes.BY_ONNX.get(arg.type)
    if datatype is None:
        raise ModelLoadError(f"tensor '{arg.name}' has type {arg.type}, which is not supported")
    shape = tuple(dim if isinstance(dim, int) and dim >= 0 else -1 for dim in arg.shape or ())
    return TensorSpec(arg.name, datatype.name, shape)


def _names_of(specs: tuple[TensorSpec, ...], datatype: str) -> frozenset[str]:
    return frozenset(spec.name for spec in specs if spec.datatype == datatype)


def _bytes_to_str(name: str, array: np.ndarray) -> np.ndarray:
    """onnxruntime string tensors hold UTF-8 text; it would stringify bytes objects as "b'..'"."""
    try:
        decoded = [
            item.decode("utf-8") if isinstance(item, bytes) else item for item in array.ravel()
        ]
    except UnicodeDecodeError as exc:
        raise InvalidInputError(
            f"input '{name}': onnxruntime string tensors need UTF-8 text, got invalid bytes"
        ) from exc
    return np.array(decoded, dtype=object).reshape(array.shape)


def _str_to_bytes(array: np.ndarray) -> np.ndarray:
    encoded = [item.encode("utf-8") if isinstance(item, str) else item for item in array.ravel()]
    return np.array(encoded, dtype=object).reshape(array.shape)


def _bf16_from_ort_value(value: ort.OrtValue) -> np.ndarray:
    raw = ctypes.string_at(value.data_ptr(), value.tensor_size_in_bytes())
    return np.frombuffer(raw, dtype=datatypes.BY_NAME["BF16"].numpy).reshape(value.shape())
