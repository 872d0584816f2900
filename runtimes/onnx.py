"""onnxruntime backend: the CPU provider, or CUDA/TensorRT with IO binding and CUDA graphs."""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnxruntime.capi.onnxruntime_pybind11_state import InvalidArgument

from runtimes import datatypes
from runtimes.base import RuntimeMetadata, RuntimeSpec, TensorSpec
from runtimes.errors import InvalidInputError, ModelExecutionError, ModelLoadError, TensorgateError
from runtimes.io_binding import CudaHostPinner, IoBindingRunner

log = logging.getLogger(__name__)

_ONNX_BF16_ELEMENT_TYPE = 16  # onnx.TensorProto.BFLOAT16


DEFAULT_FILENAME = "model.onnx"
CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"
# Model parameters passed on to the CUDA execution provider (Triton's onnxruntime backend names).
_CUDA_PARAMETERS = ("gpu_mem_limit", "cudnn_conv_algo_search", "arena_extend_strategy")
_GPU_PROVIDERS = (CUDA, TENSORRT)
# The model parameter that lets onnxruntime's threads spin (onnxruntime's own config key).
ALLOW_SPINNING = "session.intra_op.allow_spinning"


@dataclass(frozen=True)
class OnnxRuntimeOptions:
    """Session options a model config can set. Zero threads means onnxruntime's default.

    providers are tried in order; the first is the one wanted. onnxruntime silently falls back
    when it cannot create it (no GPU, missing CUDA libraries), so the load checks which one is
    active: a fallback fails the load unless allow_cpu_fallback is set.

    io_binding None means: on when the active provider is CUDA or TensorRT (inputs cross to the
    device once per batch, from reused page-locked buffers); True forces it, on the CPU too.
    cuda_graph captures CUDA graphs (one per input shape), which needs IO binding; the CUDA and
    TensorRT provider options must enable them too (options_for does).

    allow_spinning is off unless a model asks (parameter session.intra_op.allow_spinning "1"):
    onnxruntime's threads otherwise spin between parallel sections and after each run, on cores
    that the server's request threads need. Off, the image model at concurrency 1 and 32 used
    15-20% less CPU per request for the same throughput and latency (server CPU 149-152%
    against 169-188%); the tabular model, which runs on one thread, did not change
    (benchmarks/README.md, "onnxruntime's spinning threads").
    """

    intra_op_threads: int = 0
    inter_op_threads: int = 0
    allow_spinning: bool = False
    providers: tuple[str, ...] = (CPU,)
    provider_options: tuple[dict[str, str], ...] = field(default_factory=tuple)
    allow_cpu_fallback: bool = False
    io_binding: bool | None = None
    cuda_graph: bool = False


class OnnxRuntime:
    """One onnxruntime InferenceSession; onnxruntime releases the GIL while it runs."""

    def __init__(self, model_path: Path, options: OnnxRuntimeOptions | None = None) -> None:
        options = options or OnnxRuntimeOptions()
        session_options = ort.SessionOptions()
        session_options.intra_op_num_threads = options.intra_op_threads
        session_options.inter_op_num_threads = options.inter_op_threads
        spinning = "1" if options.allow_spinning else "0"
        session_options.add_session_config_entry("session.intra_op.allow_spinning", spinning)
        session_options.add_session_config_entry("session.inter_op.allow_spinning", spinning)
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
        self._string_outputs = _names_of(self._metadata.outputs, "BYTES")
        self._bf16_inputs = _names_of(self._metadata.inputs, "BF16")
        self._bf16_outputs = _names_of(self._metadata.outputs, "BF16")
        self._runner = self._io_binding_runner(options, model_path)

    def _io_binding_runner(
        self, options: OnnxRuntimeOptions, model_path: Path
    ) -> IoBindingRunner | None:
        active = self._session.get_providers()[0]
        on_gpu = active in _GPU_PROVIDERS
        cuda_graph = options.cuda_graph and on_gpu
        if options.cuda_graph and not on_gpu:
            log.warning("%s: cuda_graph needs a GPU provider; %s runs without", model_path, active)
        wanted = cuda_graph or (on_gpu if options.io_binding is None else options.io_binding)
        unbindable = self._string_inputs | self._bf16_inputs | self._bf16_outputs
        unbindable |= _names_of(self._metadata.outputs, "BYTES")
        if wanted and unbindable:
            # Strings live on the host and bfloat16 has no numpy type onnxruntime binds.
            if cuda_graph or options.io_binding:
                raise ModelLoadError(
                    f"IO binding and CUDA graphs cannot bind tensor '{sorted(unbindable)[0]}' "
                    "(BYTES or BF16); unset the model parameters io_binding and cuda_graph"
                )
            wanted = False
        if not wanted:
            return None
        device_id = int(self._session.get_provider_options().get(active, {}).get("device_id", 0))
        try:
            runner = IoBindingRunner(
                self._session,
                self._metadata.outputs,
                device="cuda" if on_gpu else "cpu",
                device_id=device_id,
                batches=self._metadata.supports_batching,
                cuda_graph=cuda_graph,
                pinner=CudaHostPinner.load() if on_gpu else None,
            )
        except ValueError as exc:
            raise ModelLoadError(f"{model_path.name}: {exc}") from exc
        log.info(
            "%s on %s device %d: IO binding, CUDA graphs %s",
            model_path,
            active,
            device_id,
            "on" if cuda_graph else "off",
        )
        return runner

    def metadata(self) -> RuntimeMetadata:
        return self._metadata

    @property
    def io_binding(self) -> IoBindingRunner | None:
        """The IO binding in use, or None when batches go through session.run."""
        return self._runner

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
        feeds = self.prepare(inputs if isinstance(inputs, dict) else dict(inputs))
        try:
            if self._runner is not None:
                results = self._runner.run(feeds, output_names)
            elif self._bf16_inputs or self._bf16_outputs:
                results = self._run_with_ort_values(feeds, output_names)
            else:
                results = self._session.run(list(output_names), feeds)
        except TensorgateError:
            raise
        except InvalidArgument as exc:  # the request's values: out-of-range indices, shapes
            raise InvalidInputError(f"onnxruntime rejected the input: {exc}") from exc
        except RuntimeError as exc:
            if "INVALID_ARGUMENT" not in str(exc):  # run_with_iobinding's InvalidArgument
                raise ModelExecutionError(f"onnxruntime failed to run the model: {exc}") from exc
            raise InvalidInputError(f"onnxruntime rejected the input: {exc}") from exc
        except Exception as exc:
            raise ModelExecutionError(f"onnxruntime failed to run the model: {exc}") from exc
        if not self._string_outputs:
            return dict(zip(output_names, results, strict=True))
        return {
            name: _str_to_bytes(value) if value.dtype == object else value
            for name, value in zip(output_names, results, strict=True)
        }

    def close(self) -> None:
        # Dropping the last reference frees the session and its memory arena.
        if self._runner is not None:
            self._runner.close()
            self._runner = None
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
    with trt_engine_cache_path). Model parameters io_binding ("true"/"false"; unset: on for
    GPU providers) and cuda_graph ("true") control IO binding and CUDA graph capture;
    session.intra_op.allow_spinning ("1" or "0") lets onnxruntime's threads spin."""
    parameters = spec.parameters
    io_binding = parameters.get("io_binding", "").lower()
    cuda_graph = parameters.get("cuda_graph", "").lower() == "true"
    options = OnnxRuntimeOptions(
        intra_op_threads=int(parameters.get("intra_op_thread_count", 0)),
        inter_op_threads=int(parameters.get("inter_op_thread_count", 0)),
        allow_spinning=_spinning(parameters.get(ALLOW_SPINNING, "0")),
        allow_cpu_fallback=parameters.get("allow_cpu_fallback", "").lower() == "true",
        io_binding={"true": True, "false": False}.get(io_binding),
        cuda_graph=cuda_graph,
    )
    if spec.device != "gpu":
        return options
    cuda = {"device_id": str(spec.device_id)}
    cuda.update({key: parameters[key] for key in _CUDA_PARAMETERS if key in parameters})
    if cuda_graph:
        cuda["enable_cuda_graph"] = "1"
    if spec.accelerator != "tensorrt":
        return replace(options, providers=(CUDA, CPU), provider_options=(cuda, {}))
    accelerator = spec.accelerator_parameters
    tensorrt = {"device_id": str(spec.device_id)}
    if accelerator.get("precision_mode", "").upper() == "FP16":
        tensorrt["trt_fp16_enable"] = "True"
    if "trt_engine_cache_path" in accelerator:
        tensorrt["trt_engine_cache_enable"] = "True"
        tensorrt["trt_engine_cache_path"] = accelerator["trt_engine_cache_path"]
    if "max_workspace_size_bytes" in accelerator:
        tensorrt["trt_max_workspace_size"] = accelerator["max_workspace_size_bytes"]
    if cuda_graph:
        tensorrt["trt_cuda_graph_enable"] = "True"
    return replace(options, providers=(TENSORRT, CUDA, CPU), provider_options=(tensorrt, cuda, {}))


def create(spec: RuntimeSpec) -> OnnxRuntime:
    path = spec.version_dir / (spec.model_filename or DEFAULT_FILENAME)
    if not path.is_file():
        raise ModelLoadError(
            f"model '{spec.model_name}' version {spec.version_dir.name} has no file {path.name}"
        )
    try:
        options = options_for(spec)
    except ValueError as exc:  # a thread count or a flag that does not parse
        raise ModelLoadError(f"model '{spec.model_name}': bad runtime parameter: {exc}") from exc
    return OnnxRuntime(path, options)


def _spinning(value: str) -> bool:
    flag = {"1": True, "true": True, "0": False, "false": False}.get(value.strip().lower())
    if flag is None:
        raise ValueError(f'parameter {ALLOW_SPINNING} must be "1" or "0", got \'{value}\'')
    return flag


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
