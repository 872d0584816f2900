"""onnxruntime backend (CPU today; GPU providers slot in through OnnxRuntimeOptions.providers)."""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort

from runtimes import datatypes
from runtimes.base import RuntimeMetadata, TensorSpec
from runtimes.errors import InvalidInputError, ModelExecutionError, ModelLoadError

log = logging.getLogger(__name__)

_ONNX_BF16_ELEMENT_TYPE = 16  # onnx.TensorProto.BFLOAT16


@dataclass(frozen=True)
class OnnxRuntimeOptions:
    """Session options a model config can set. Zero threads means onnxruntime's default."""

    intra_op_threads: int = 0
    inter_op_threads: int = 0
    providers: tuple[str, ...] = ("CPUExecutionProvider",)
    provider_options: tuple[dict[str, str], ...] = field(default_factory=tuple)


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
        self._metadata = _read_metadata(self._session)
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


def _read_metadata(session: ort.InferenceSession) -> RuntimeMetadata:
    inputs = tuple(_tensor_spec(arg) for arg in session.get_inputs())
    outputs = tuple(_tensor_spec(arg) for arg in session.get_outputs())
    supports_batching = all(spec.shape and spec.shape[0] == -1 for spec in (*inputs, *outputs))
    return RuntimeMetadata(
        inputs=inputs,
        outputs=outputs,
        supports_batching=supports_batching,
        device=session.get_providers()[0],
    )


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
