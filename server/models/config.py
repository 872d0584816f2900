"""Model configuration: parse config.pbtxt, complete it from the ONNX graph, derive typed settings.

config.pbtxt is parsed by protobuf's own text_format into our Triton-compatible ModelConfig, so
any Triton config for an onnxruntime model parses; fields tensorgate does not act on are listed
by `unsupported_fields` and logged once per load, never silently dropped.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

import numpy as np
from google.protobuf import message, text_format

from batching.config import BatchingConfig, QueuePolicy, TimeoutAction
from runtimes import datatypes
from runtimes.base import RuntimeMetadata, RuntimeSpec, TensorSpec
from runtimes.errors import ModelLoadError
from server._proto import model_config_pb2 as mc
from server.observability.drift import DriftSettings

if TYPE_CHECKING:
    from google.protobuf.internal import containers

    # A config's inputs or its outputs: each tensor has a name, a data_type and dims.
    _ConfigTensors: TypeAlias = (
        containers.RepeatedCompositeFieldContainer[mc.ModelInput]
        | containers.RepeatedCompositeFieldContainer[mc.ModelOutput]
    )

PLATFORM = "onnxruntime_onnx"
BACKEND = "onnxruntime"
DEFAULT_MODEL_FILENAME = "model.onnx"
_DEFAULT_FILENAMES = {BACKEND: DEFAULT_MODEL_FILENAME, "python": "model.py"}

# Model parameters tensorgate reads (string values, as in Triton's `parameters` map).
INTRA_OP_THREADS = "intra_op_thread_count"  # same name as Triton's onnxruntime backend
INTER_OP_THREADS = "inter_op_thread_count"
PAD_INPUTS = "pad_inputs"  # comma-separated inputs whose non-batch dims may vary per request
SLICE_OUTPUTS = "slice_outputs"  # comma-separated outputs cut back to each request's lengths
PAD_VALUE = "pad_value"
LATENCY_TARGET_P99_US = "latency_target_p99_us"
EXECUTION_TIMEOUT_US = "execution_timeout_us"
DRIFT_SAMPLE_RATIO = "drift_sample_ratio"  # > 0 turns drift monitoring on
DRIFT_WINDOW_ROWS = "drift_window_rows"
DRIFT_PSI_THRESHOLD = "drift_psi_threshold"
DRIFT_REFERENCE_ROWS = "drift_reference_rows"
DRIFT_PROFILE = "drift_profile"  # path relative to the model directory
DEFAULT_DRIFT_PROFILE = "drift_profile.json"
MAX_QUEUED_REQUESTS = "max_queued_requests"
# Parameters a model source sets for operators to read (the MLflow registry's version, aliases
# and run id: server/models/mlflow_source.py); no runtime reads them.
SOURCE_PARAMETER_PREFIX = "mlflow."
KNOWN_PARAMETERS = frozenset(
    {
        INTRA_OP_THREADS,
        INTER_OP_THREADS,
        PAD_INPUTS,
        SLICE_OUTPUTS,
        PAD_VALUE,
        LATENCY_TARGET_P99_US,
        MAX_QUEUED_REQUESTS,
        EXECUTION_TIMEOUT_US,
        "allow_cpu_fallback",
        "gpu_mem_limit",
        "cudnn_conv_algo_search",
        "arena_extend_strategy",
        "io_binding",
        "cuda_graph",
        DRIFT_SAMPLE_RATIO,
        DRIFT_WINDOW_ROWS,
        DRIFT_PSI_THRESHOLD,
        DRIFT_REFERENCE_ROWS,
        DRIFT_PROFILE,
    }
)

# Top-level ModelConfig fields tensorgate does not act on yet.
_UNSUPPORTED_TOP_LEVEL = (
    "batch_input",
    "batch_output",
    "ensemble_scheduling",
    "model_operations",
    "model_transaction_policy",
    "model_repository_agents",
    "response_cache",
    "cc_model_filenames",
    "metric_tags",
    "model_metrics",
    "runtime",
)


# Per input/output settings tensorgate does not act on yet.
_UNSUPPORTED_TENSOR_FIELDS = (
    "reshape",
    "is_shape_tensor",
    "format",
    "allow_ragged_batch",
    "optional",
    "is_non_linear_format_io",
)


@dataclass(frozen=True)
class ModelSignature:
    """The tensors a model version accepts and returns; shapes exclude the batch dimension."""

    max_batch_size: int
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    @functools.cached_property
    def inputs_by_name(self) -> dict[str, TensorSpec]:
        """Looked up on every request: built once per model version."""
        return {spec.name: spec for spec in self.inputs}

    @functools.cached_property
    def input_dtypes_and_shapes(self) -> dict[str, tuple[np.dtype | None, tuple[int, ...]]]:
        """Per input, its numpy dtype and full shape (batch dimension -1): for the quick
        acceptance of a request. BYTES has no single dtype (None never matches)."""
        return {
            spec.name: (
                None if spec.datatype == "BYTES" else datatypes.BY_NAME[spec.datatype].numpy,
                self.full_shape(spec),
            )
            for spec in self.inputs
        }

    @functools.cached_property
    def output_names(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self.outputs)

    def full_shape(self, spec: TensorSpec) -> tuple[int, ...]:
        """The shape as clients see it in metadata: with the batch dimension (-1) if batching."""
        return (-1, *spec.shape) if self.max_batch_size > 0 else spec.shape


def read_config_file(path: Path) -> mc.ModelConfig:
    try:
        config: mc.ModelConfig = text_format.Parse(
            path.read_text(encoding="utf-8"), mc.ModelConfig()
        )
    except (text_format.ParseError, UnicodeDecodeError) as exc:
        raise ModelLoadError(
            f"{path.parent.name}/config.pbtxt is not a valid model config: {exc}"
        ) from exc
    return config


def complete_config(
    given: mc.ModelConfig | None,
    model_name: str,
    graph: RuntimeMetadata,
    *,
    default_max_batch_size: int,
) -> mc.ModelConfig:
    """Fill what the config leaves out from the graph and check the rest agrees with it."""
    config = mc.ModelConfig()
    if given is not None:
        config.CopyFrom(given)
    if config.name and config.name != model_name:
        raise ModelLoadError(
            f"config.pbtxt names the model '{config.name}' but its directory is '{model_name}'"
        )
    config.name = model_name
    config.backend = backend_of(config)
    if config.backend == BACKEND:
        config.platform = PLATFORM
    auto_completed = not config.input and not config.output
    if auto_completed and config.max_batch_size == 0 and graph.supports_batching:
        config.max_batch_size = default_max_batch_size
        config.dynamic_batching.SetInParent()
    if config.max_batch_size > 0 and not graph.supports_batching:
        raise ModelLoadError(
            f"model '{model_name}' sets max_batch_size {config.max_batch_size}, but not every "
            "input and output of its graph has a variable first dimension"
        )
    batch_dims = 1 if config.max_batch_size > 0 else 0
    _complete_tensors(config.input, graph.inputs, batch_dims, "input", model_name)
    _complete_tensors(config.output, graph.outputs, batch_dims, "output", model_name)
    if not config.HasField("version_policy"):
        config.version_policy.latest.num_versions = 1
    if not config.instance_group:
        config.instance_group.add(count=1, kind=mc.ModelInstanceGroup.KIND_CPU)
    for group in config.instance_group:
        if group.count == 0:
            group.count = 1
        if group.kind == mc.ModelInstanceGroup.KIND_AUTO:
            group.kind = mc.ModelInstanceGroup.KIND_CPU
    if not config.default_model_filename:
        config.default_model_filename = _DEFAULT_FILENAMES.get(config.backend, "")
    return config


def _complete_tensors(
    configured: _ConfigTensors,
    graph_specs: tuple[TensorSpec, ...],
    batch_dims: int,
    role: str,
    model_name: str,
) -> None:
    by_name = {spec.name: spec for spec in graph_specs}
    if not configured:
        for graph_spec in graph_specs:
            configured.add(
                name=graph_spec.name,
                data_type=mc.DataType.Value(datatypes.BY_NAME[graph_spec.datatype].config),
                dims=graph_spec.shape[batch_dims:],
            )
        return
    for tensor in configured:
        spec = by_name.get(tensor.name)
        if spec is None:
            raise ModelLoadError(
                f"model '{model_name}': config lists {role} '{tensor.name}', which the graph "
                f"does not have (it has {sorted(by_name)})"
            )
        config_type = mc.DataType.Name(tensor.data_type)
        if datatypes.BY_CONFIG.get(config_type) is not datatypes.BY_NAME[spec.datatype]:
            raise ModelLoadError(
                f"model '{model_name}': config says {role} '{tensor.name}' is {config_type}, "
                f"but the graph has {spec.datatype}"
            )
        graph_dims = spec.shape[batch_dims:]
        if len(tensor.dims) != len(graph_dims) or any(
            c != g and -1 not in (c, g) for c, g in zip(tensor.dims, graph_dims, strict=False)
        ):
            raise ModelLoadError(
                f"model '{model_name}': config dims {list(tensor.dims)} of {role} "
                f"'{tensor.name}' do not match the graph's {list(graph_dims)}"
                + (" (dims exclude the batch dimension)" if batch_dims else "")
            )
    if role == "input":
        missing = sorted(set(by_name) - {tensor.name for tensor in configured})
        if missing:
            raise ModelLoadError(
                f"model '{model_name}': config does not list graph input(s) {missing}"
            )


def backend_of(config: mc.ModelConfig) -> str:
    """The runtime a config asks for: its backend, or onnxruntime for Triton's ONNX platform."""
    if config.platform not in ("", PLATFORM):
        raise ModelLoadError(
            f"model '{config.name}' asks for platform '{config.platform}'; tensorgate serves "
            f"'{PLATFORM}', or the runtime named by `backend`"
        )
    if config.platform == PLATFORM and config.backend not in ("", BACKEND):
        raise ModelLoadError(
            f"model '{config.name}': platform '{PLATFORM}' and backend '{config.backend}' disagree"
        )
    return config.backend or BACKEND


@dataclass(frozen=True)
class Placement:
    """Where one runtime instance runs."""

    device: str  # "cpu" or "gpu"
    device_id: int = 0


def placements_of(config: mc.ModelConfig) -> list[Placement]:
    """One entry per instance, as Triton counts them: a KIND_GPU group runs `count` instances
    on each GPU it lists (device 0 when it lists none); any other kind, `count` on the CPU."""
    placements = []
    for group in config.instance_group or [mc.ModelInstanceGroup()]:
        count = max(1, group.count)
        if group.kind == mc.ModelInstanceGroup.KIND_GPU:
            for gpu in group.gpus or [0]:
                placements += [Placement("gpu", gpu)] * count
        else:
            placements += [Placement("cpu")] * count
    return placements


def runtime_spec_of(
    config: mc.ModelConfig, model_name: str, version_dir: Path, placement: Placement
) -> RuntimeSpec:
    """What the runtime factory gets from a (given or completed) config."""
    signature = signature_of(config) if config.input or config.output else None
    accelerator, accelerator_parameters = "", {}
    accelerators = config.optimization.execution_accelerators.gpu_execution_accelerator
    if placement.device == "gpu" and accelerators:
        accelerator = accelerators[0].name
        accelerator_parameters = dict(accelerators[0].parameters)
    return RuntimeSpec(
        model_name=model_name,
        version_dir=version_dir,
        model_filename=config.default_model_filename,
        parameters={key: value.string_value for key, value in config.parameters.items()},
        declared_inputs=tuple(
            TensorSpec(s.name, s.datatype, signature.full_shape(s)) for s in signature.inputs
        )
        if signature
        else (),
        declared_outputs=tuple(
            TensorSpec(s.name, s.datatype, signature.full_shape(s)) for s in signature.outputs
        )
        if signature
        else (),
        max_batch_size=config.max_batch_size,
        device=placement.device,
        device_id=placement.device_id,
        accelerator=accelerator,
        accelerator_parameters=accelerator_parameters,
    )


def refuse_unsupported_modes(config: mc.ModelConfig, name: str) -> None:
    """Refuse a config whose model would leave clients waiting, rather than load it: a decoupled
    model may answer a request with any number of responses (a stream client waits for the
    ones after the first forever), and a sequence model expects the scheduler to track its
    sequences (its control inputs would be missing). Neither is implemented."""
    if config.model_transaction_policy.decoupled:
        raise ModelLoadError(
            f"model '{name}': decoupled mode (model_transaction_policy {{ decoupled: true }}) is "
            "not supported: this server answers every request with exactly one response"
        )
    if config.HasField("sequence_batching"):
        raise ModelLoadError(
            f"model '{name}': sequence batching (sequence_batching) is not supported: this "
            "server does not track sequences or feed their control inputs; remove "
            "sequence_batching to serve the model as a stateless one"
        )


def unsupported_fields(config: mc.ModelConfig) -> list[str]:
    """Settings in `config` that tensorgate parses but does not act on (yet)."""
    found = [name for name in _UNSUPPORTED_TOP_LEVEL if _is_set(config, name)]
    for tensor in (*config.input, *config.output):
        for field in _UNSUPPORTED_TENSOR_FIELDS:
            if field in tensor.DESCRIPTOR.fields_by_name and _is_set(tensor, field):
                found.append(f"{tensor.name}.{field}")
    for group in config.instance_group:
        if group.kind == mc.ModelInstanceGroup.KIND_MODEL:
            found.append("instance_group kind KIND_MODEL")
        if group.HasField("rate_limiter"):
            found.append("instance_group.rate_limiter")
    found.extend(_unsupported_optimization(config.optimization))
    if config.backend in ("", BACKEND):  # other runtimes read their own parameters
        found.extend(
            f"parameters.{key}"
            for key in sorted(config.parameters)
            if key not in KNOWN_PARAMETERS and not key.startswith(SOURCE_PARAMETER_PREFIX)
        )
    return found


def _unsupported_optimization(optimization: mc.ModelOptimizationPolicy) -> list[str]:
    """Of `optimization`, only the TensorRT GPU execution accelerator is acted on."""
    found = [
        f"optimization.{field.name}"
        for field, _ in optimization.ListFields()
        if field.name != "execution_accelerators"
    ]
    accelerators = optimization.execution_accelerators
    found += [
        f"optimization.execution_accelerators.gpu {a.name}"
        for a in accelerators.gpu_execution_accelerator
        if a.name != "tensorrt"
    ]
    found += [
        f"optimization.execution_accelerators.cpu {a.name}"
        for a in accelerators.cpu_execution_accelerator
    ]
    return found


def _is_set(proto: message.Message, field: str) -> bool:
    descriptor = proto.DESCRIPTOR.fields_by_name[field]
    if descriptor.is_repeated:
        return len(getattr(proto, field)) > 0
    if descriptor.message_type is not None:
        return bool(proto.HasField(field))
    return bool(getattr(proto, field))


def signature_of(config: mc.ModelConfig) -> ModelSignature:
    def specs(tensors: _ConfigTensors) -> tuple[TensorSpec, ...]:
        return tuple(
            TensorSpec(
                t.name, datatypes.BY_CONFIG[mc.DataType.Name(t.data_type)].name, tuple(t.dims)
            )
            for t in tensors
        )

    return ModelSignature(config.max_batch_size, specs(config.input), specs(config.output))


def batching_config_of(config: mc.ModelConfig) -> BatchingConfig:
    """The scheduler's settings."""
    dynamic = config.dynamic_batching
    levels = max(1, dynamic.priority_levels)
    default_level = dynamic.default_priority_level or (levels + 1) // 2
    if not 1 <= default_level <= levels:
        raise ModelLoadError(
            f"model '{config.name}': default_priority_level {default_level} is outside "
            f"priority levels 1..{levels}"
        )
    for size in dynamic.preferred_batch_size:
        if not 1 <= size <= config.max_batch_size:
            raise ModelLoadError(
                f"model '{config.name}': preferred_batch_size {size} is outside "
                f"1..max_batch_size ({config.max_batch_size})"
            )
    for level in dynamic.priority_queue_policy:
        if not 1 <= level <= levels:
            raise ModelLoadError(
                f"model '{config.name}': priority_queue_policy for level {level} is outside "
                f"priority levels 1..{levels}"
            )
    padded = _name_list(config, PAD_INPUTS, {t.name for t in config.input}, "input")
    sliced = _name_list(config, SLICE_OUTPUTS, {t.name for t in config.output}, "output")
    return BatchingConfig(
        max_batch_size=config.max_batch_size,
        dynamic_batching=config.HasField("dynamic_batching"),
        max_queue_delay_us=dynamic.max_queue_delay_microseconds,
        preferred_batch_sizes=tuple(sorted(dynamic.preferred_batch_size)),
        preserve_ordering=dynamic.preserve_ordering,
        priority_levels=levels,
        default_priority_level=default_level,
        default_queue_policy=_queue_policy(dynamic.default_queue_policy),
        priority_queue_policies={
            int(level): _queue_policy(policy)
            for level, policy in dynamic.priority_queue_policy.items()
        },
        padded_inputs=padded,
        pad_value=_int_parameter(config, PAD_VALUE, 0),
        sliced_outputs=sliced,
        max_queued_requests=_int_parameter(config, MAX_QUEUED_REQUESTS, 10_000),
        latency_target_p99_us=_int_parameter(config, LATENCY_TARGET_P99_US, 0),
        execution_timeout_us=_int_parameter(config, EXECUTION_TIMEOUT_US, 0),
    )


def _queue_policy(policy: mc.ModelQueuePolicy) -> QueuePolicy:
    return QueuePolicy(
        max_queue_size=policy.max_queue_size,
        default_timeout_us=policy.default_timeout_microseconds,
        allow_timeout_override=policy.allow_timeout_override,
        timeout_action=TimeoutAction[mc.ModelQueuePolicy.TimeoutAction.Name(policy.timeout_action)],
    )


def instance_count_of(config: mc.ModelConfig) -> int:
    return sum(max(1, group.count) for group in config.instance_group) or 1


def drift_settings_of(config: mc.ModelConfig, model_dir: Path) -> DriftSettings | None:
    """Drift monitoring settings, or None when the model does not turn it on."""
    ratio = _float_parameter(config, DRIFT_SAMPLE_RATIO, 0.0)
    if ratio <= 0:
        return None
    if ratio > 1:
        raise ModelLoadError(f"model '{config.name}': {DRIFT_SAMPLE_RATIO} must be at most 1")
    profile_name = (
        config.parameters[DRIFT_PROFILE].string_value
        if DRIFT_PROFILE in config.parameters
        else DEFAULT_DRIFT_PROFILE
    )
    profile_path = model_dir / profile_name
    reference_rows = _int_parameter(config, DRIFT_REFERENCE_ROWS, 0)
    if not profile_path.is_file() and reference_rows <= 0:
        raise ModelLoadError(
            f"model '{config.name}': drift monitoring needs {profile_name} in the model "
            f"directory (tensorgate profile writes it) or {DRIFT_REFERENCE_ROWS} > 0"
        )
    return DriftSettings(
        sample_ratio=ratio,
        window_rows=max(1, _int_parameter(config, DRIFT_WINDOW_ROWS, 2000)),
        psi_threshold=_float_parameter(config, DRIFT_PSI_THRESHOLD, 0.2),
        reference_rows=reference_rows,
        profile_path=profile_path if profile_path.is_file() else None,
    )


def _float_parameter(config: mc.ModelConfig, key: str, default: float) -> float:
    if key not in config.parameters:
        return default
    text = config.parameters[key].string_value
    try:
        return float(text)
    except ValueError:
        raise ModelLoadError(
            f"model '{config.name}': parameter {key} must be a number, got '{text}'"
        ) from None


def _int_parameter(config: mc.ModelConfig, key: str, default: int) -> int:
    if key not in config.parameters:
        return default
    text = config.parameters[key].string_value
    try:
        return int(text)
    except ValueError:
        raise ModelLoadError(
            f"model '{config.name}': parameter {key} must be an integer, got '{text}'"
        ) from None


def _name_list(config: mc.ModelConfig, key: str, known: set[str], role: str) -> frozenset[str]:
    if key not in config.parameters:
        return frozenset()
    text = config.parameters[key].string_value
    names = frozenset(n.strip() for n in text.split(",") if n.strip())
    unknown = sorted(names - known)
    if unknown:
        raise ModelLoadError(
            f"model '{config.name}': parameter {key} names unknown {role}s {unknown}"
        )
    return names
