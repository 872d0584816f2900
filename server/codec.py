"""Protobuf <-> numpy for inference: the only module that reads or writes tensor contents.

Raw inputs are viewed in place (np.frombuffer, no copy); outputs always go back in
raw_output_contents, which is all tritonclient reads. BYTES elements carry a 4-byte unsigned
little-endian length prefix.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping

import numpy as np

from runtimes import datatypes
from runtimes.datatypes import DataType
from runtimes.errors import InvalidInputError, UnsupportedError
from server._proto import grpc_service_pb2 as pb
from server.inference import InferenceRequest

_LENGTH_PREFIX = struct.Struct("<I")
_SHARED_MEMORY_PARAMETERS = (
    "shared_memory_region",
    "shared_memory_offset",
    "shared_memory_byte_size",
)
_SEQUENCE_PARAMETERS = ("sequence_id", "sequence_start", "sequence_end")
# Guards the element count before any allocation; the message size limit bounds real data.
MAX_ELEMENTS = 1 << 31


def decode_infer_request(request: pb.ModelInferRequest) -> InferenceRequest:
    """Turn a ModelInferRequest into arrays, checking everything that needs no model config."""
    raw_contents = request.raw_input_contents
    if raw_contents:
        if len(raw_contents) != len(request.inputs):
            raise InvalidInputError(
                f"request has {len(request.inputs)} inputs but {len(raw_contents)} "
                "raw_input_contents entries; send one raw entry per input, in order"
            )
        typed = [t.name for t in request.inputs if t.HasField("contents")]
        if typed:
            raise InvalidInputError(
                f"input '{typed[0]}' has typed contents while the request also uses "
                "raw_input_contents; send all inputs one way"
            )
    inputs: dict[str, np.ndarray] = {}
    for index, tensor in enumerate(request.inputs):
        if tensor.name in inputs:
            raise InvalidInputError(f"input '{tensor.name}' appears more than once")
        if tensor.parameters:
            _reject_shared_memory(tensor.parameters, f"input '{tensor.name}'")
        datatype = _datatype(tensor.name, tensor.datatype, "input")
        shape = _shape(tensor.name, tensor.shape)
        if raw_contents:
            inputs[tensor.name] = decode_raw(tensor.name, datatype, shape, raw_contents[index])
        else:
            inputs[tensor.name] = _decode_typed(tensor, datatype, shape)

    requested: list[str] = []
    for output in request.outputs:
        if output.name in requested:
            raise InvalidInputError(f"output '{output.name}' is requested more than once")
        if output.parameters:
            _reject_shared_memory(output.parameters, f"output '{output.name}'")
            if "classification" in output.parameters:
                raise UnsupportedError("the classification extension is not supported")
        requested.append(output.name)

    priority = timeout_us = 0
    parameters = request.parameters
    if parameters:
        if any(_is_truthy(parameters, name) for name in _SEQUENCE_PARAMETERS):
            raise UnsupportedError("sequence batching (sequence_id/start/end) is not supported")
        priority = _int_parameter(parameters, "priority", 0)
        timeout_us = _int_parameter(parameters, "timeout", 0)
    return InferenceRequest(
        model_name=request.model_name,
        model_version=request.model_version,
        id=request.id,
        inputs=inputs,
        requested_outputs=tuple(requested),
        priority=priority,
        timeout_us=timeout_us,
    )


def decode_raw(name: str, datatype: DataType, shape: tuple[int, ...], raw: bytes) -> np.ndarray:
    """View raw little-endian bytes as an array of `shape` (BYTES are parsed element by element)."""
    count = math.prod(shape)
    if datatype.is_bytes:
        return _decode_bytes_elements(name, raw, count).reshape(shape)
    expected = count * datatype.itemsize
    if len(raw) != expected:
        raise InvalidInputError(
            f"input '{name}': raw data has {len(raw)} bytes, but shape {list(shape)} of "
            f"{datatype.name} needs {expected} bytes"
        )
    return np.frombuffer(raw, dtype=datatype.numpy).reshape(shape)


def _decode_bytes_elements(name: str, raw: bytes, count: int) -> np.ndarray:
    size = len(raw)
    if 4 * count > size:  # checked before allocating: every element has a 4-byte prefix
        raise InvalidInputError(
            f"input '{name}': BYTES data has {size} bytes, too few for {count} elements "
            "(each needs a 4-byte little-endian length prefix)"
        )
    elements = np.empty(count, dtype=object)
    offset = 0
    for index in range(count):
        if offset + 4 > size:
            raise InvalidInputError(
                f"input '{name}': BYTES data ends after {index} of {count} elements "
                "(each element needs a 4-byte little-endian length prefix)"
            )
        (length,) = _LENGTH_PREFIX.unpack_from(raw, offset)
        offset += 4
        if offset + length > size:
            raise InvalidInputError(
                f"input '{name}': BYTES element {index} declares {length} bytes but only "
                f"{size - offset} remain"
            )
        elements[index] = raw[offset : offset + length]
        offset += length
    if offset != size:
        raise InvalidInputError(
            f"input '{name}': BYTES data has {size - offset} bytes left over after {count} elements"
        )
    return elements


def _decode_typed(
    tensor: pb.ModelInferRequest.InferInputTensor, datatype: DataType, shape: tuple[int, ...]
) -> np.ndarray:
    count = math.prod(shape)
    contents = tensor.contents
    present = [field.name for field, _ in contents.ListFields()]
    if datatype.contents_field is None:
        if count == 0 and not present:
            return np.empty(shape, dtype=datatype.numpy)
        raise InvalidInputError(
            f"input '{tensor.name}': {datatype.name} has no typed contents field; "
            "send it in raw_input_contents"
        )
    wrong = [field for field in present if field != datatype.contents_field]
    if wrong:
        raise InvalidInputError(
            f"input '{tensor.name}' has datatype {datatype.name}, which is sent in "
            f"{datatype.contents_field}, not {wrong[0]}"
        )
    values = list(getattr(contents, datatype.contents_field))
    if len(values) != count:
        what = "no data" if not values and count else f"{len(values)} elements"
        raise InvalidInputError(
            f"input '{tensor.name}' has {what}, but shape {list(shape)} needs {count} elements"
        )
    try:
        return np.array(values, dtype=datatype.numpy).reshape(shape)
    except OverflowError as exc:
        raise InvalidInputError(
            f"input '{tensor.name}': a value is out of range for {datatype.name}"
        ) from exc


def _datatype(name: str, datatype: str, role: str) -> DataType:
    found = datatypes.BY_NAME.get(datatype)
    if found is None or found.numpy is None:
        known = ", ".join(d.name for d in datatypes.DATATYPES if d.numpy is not None)
        raise InvalidInputError(
            f"{role} '{name}' has unknown datatype '{datatype}'; expected one of {known}"
        )
    return found


def _shape(name: str, dims: object) -> tuple[int, ...]:
    shape = tuple(dims)
    if any(d < 0 for d in shape):
        raise InvalidInputError(f"input '{name}' has a negative dimension in shape {list(shape)}")
    if any(d > MAX_ELEMENTS for d in shape) or math.prod(shape) > MAX_ELEMENTS:
        raise InvalidInputError(
            f"input '{name}' has shape {list(shape)}, more than {MAX_ELEMENTS} elements"
        )
    return shape


def _reject_shared_memory(parameters: Mapping[str, pb.InferParameter], what: str) -> None:
    if any(name in parameters for name in _SHARED_MEMORY_PARAMETERS):
        raise UnsupportedError(f"{what} uses shared memory, which is not supported yet")


def _is_truthy(parameters: Mapping[str, pb.InferParameter], name: str) -> bool:
    """Whether a parameter is present with a non-zero, non-empty value of any type."""
    if name not in parameters:
        return False
    parameter = parameters[name]
    kind = parameter.WhichOneof("parameter_choice")
    return kind is not None and bool(getattr(parameter, kind))


def _int_parameter(parameters: Mapping[str, pb.InferParameter], name: str, default: int) -> int:
    if name not in parameters:
        return default
    parameter = parameters[name]
    kind = parameter.WhichOneof("parameter_choice")
    if kind in ("int64_param", "uint64_param"):
        value = getattr(parameter, kind)
    elif kind == "bool_param":
        value = int(parameter.bool_param)
    else:
        raise InvalidInputError(f"parameter '{name}' must be an integer, got {kind}")
    if value < 0:
        raise InvalidInputError(f"parameter '{name}' must not be negative, got {value}")
    return value


def encode_infer_response(
    model_name: str, model_version: str, request_id: str, outputs: Mapping[str, np.ndarray]
) -> pb.ModelInferResponse:
    """Outputs in the given order, each as one raw_output_contents entry."""
    tensors = []
    raw = []
    for name, array in outputs.items():
        datatype = datatypes.from_numpy(array.dtype)
        tensors.append(
            pb.ModelInferResponse.InferOutputTensor(
                name=name, datatype=datatype.name, shape=array.shape
            )
        )
        raw.append(encode_raw(array, datatype))
    return pb.ModelInferResponse(
        model_name=model_name,
        model_version=model_version,
        id=request_id,
        outputs=tensors,
        raw_output_contents=raw,
    )


def encode_raw(array: np.ndarray, datatype: DataType) -> bytes:
    if not datatype.is_bytes:
        return array.tobytes()
    parts = []
    for item in array.ravel():
        data = item.encode("utf-8") if isinstance(item, str) else bytes(item)
        parts.append(_LENGTH_PREFIX.pack(len(data)))
        parts.append(data)
    return b"".join(parts)
