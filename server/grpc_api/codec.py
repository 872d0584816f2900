"""Protobuf <-> numpy for inference: the only module that reads or writes tensor contents.

Raw inputs are viewed in place (np.frombuffer, no copy); outputs always go back in
raw_output_contents, which is all tritonclient reads. BYTES elements carry a 4-byte unsigned
little-endian length prefix.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from runtimes import datatypes
from runtimes.datatypes import DataType
from runtimes.errors import InvalidInputError
from server._proto import grpc_service_pb2 as pb
from server.dataplane.classification import class_count
from server.dataplane.errors import CapacityError, UnsupportedError
from server.dataplane.inference import (
    DEFAULT_LIMITS,
    InferenceRequest,
    InferenceResult,
    RequestLimits,
    SharedMemoryLocation,
)
from server.dataplane.shared_memory import SharedMemoryRegistry
from server.dataplane.tensors import (
    check_size,
    datatype_of,
    decode_raw,
    encode_raw,
    raw_buffer,
    shape_of,
)
from server.grpc_api.wire import SplitResponse

_SHARED_MEMORY_PARAMETERS = (
    "shared_memory_region",
    "shared_memory_offset",
    "shared_memory_byte_size",
)
_SEQUENCE_PARAMETERS = ("sequence_id", "sequence_start", "sequence_end")

log = logging.getLogger(__name__)


def decode_infer_request(
    request: pb.ModelInferRequest,
    shared_memory: SharedMemoryRegistry | None = None,
    limits: RequestLimits = DEFAULT_LIMITS,
    raw_contents: Sequence[bytes | memoryview] | None = None,
) -> InferenceRequest:
    """Turn a ModelInferRequest into arrays, checking everything that needs no model config.

    Inputs that name a system shared memory region are read (copied) from `shared_memory`;
    raw_input_contents then holds one entry per other input, in order, as Triton expects.
    `raw_contents`, when given, stands for raw_input_contents (a big request's views into the
    received bytes, grpc_api/wire.py). Outputs that name a region are checked against it now
    and written there on encode. Without a registry, naming a region is UNIMPLEMENTED.
    """
    tensors = request.inputs
    if len(tensors) > limits.max_inputs:
        raise InvalidInputError(
            f"request has {len(tensors)} inputs, more than the limit of "
            f"{limits.max_inputs} (--max-inputs)"
        )
    # One pass over the inputs (this runs on every request); the layout errors that need all of
    # them at once are described by _raw_layout_error.
    if raw_contents is None:
        raw_contents = request.raw_input_contents
    raw_count = len(raw_contents)
    inputs: dict[str, np.ndarray] = {}
    raw_index = 0
    for tensor in tensors:
        name = tensor.name
        if name in inputs:
            raise InvalidInputError(f"input '{name}' appears more than once")
        datatype = datatype_of(name, tensor.datatype, "input")
        shape, count = shape_of(name, tensor.shape)
        check_size(name, datatype, count, limits)
        if raw_count and tensor.HasField("contents"):
            # Triton's words first (clients match on them), then what to do.
            raise InvalidInputError(
                "contents field must not be specified when using raw_input_contents for "
                f"'{name}' for model '{request.model_name}'; send all inputs one way"
            )
        parameters = tensor.parameters
        if parameters and _uses_shared_memory(parameters):
            location = _shared_memory_location(parameters, f"input '{name}'", shared_memory)
            inputs[name] = _decode_shared(tensor, datatype, shape, location, shared_memory)
        elif raw_count:
            if raw_index == raw_count:
                raise _raw_layout_error(tensors, raw_count)
            raw = raw_contents[raw_index]
            raw_index += 1
            if len(raw) > limits.max_tensor_bytes:
                raise InvalidInputError(
                    f"input '{name}' has {len(raw)} bytes, more than the limit of "
                    f"{limits.max_tensor_bytes} per tensor (--max-tensor-bytes)"
                )
            inputs[name] = decode_raw(name, datatype, shape, raw, limits.max_bytes_element)
        else:
            inputs[name] = _decode_typed(tensor, datatype, shape)
    if raw_index != raw_count:
        raise _raw_layout_error(tensors, raw_count)

    requested: list[str] = []
    output_locations: dict[str, SharedMemoryLocation] = {}
    classifications: dict[str, int] | None = None  # built only when an output asks
    for output in request.outputs:
        if output.name in requested:
            raise InvalidInputError(f"output '{output.name}' is requested more than once")
        if output.parameters:
            if "classification" in output.parameters:
                parameter = output.parameters["classification"]
                field = parameter.WhichOneof("parameter_choice")
                value = getattr(parameter, field) if field else None
                classifications = classifications or {}
                classifications[output.name] = class_count(value, output.name)
            if _uses_shared_memory(output.parameters):
                what = f"output '{output.name}'"
                location = _shared_memory_location(output.parameters, what, shared_memory)
                assert shared_memory is not None  # the location check raised otherwise
                shared_memory.check(location.region, location.offset, location.byte_size, what)
                output_locations[output.name] = location
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
        shared_memory_outputs=output_locations,
        classifications=classifications,
    )


def _raw_layout_error(
    tensors: Sequence[pb.ModelInferRequest.InferInputTensor], raw_count: int
) -> InvalidInputError:
    """raw_input_contents must hold one entry per input outside shared memory, in order."""
    in_shared_memory = sum(
        1 for tensor in tensors if tensor.parameters and _uses_shared_memory(tensor.parameters)
    )
    described = (
        f"{len(tensors) - in_shared_memory} inputs outside shared memory"
        if in_shared_memory
        else f"{len(tensors)} inputs"
    )
    return InvalidInputError(
        f"request has {described} but {raw_count} raw_input_contents entries; send one raw "
        "entry per input, in order"
    )


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


def _uses_shared_memory(parameters: Mapping[str, pb.InferParameter]) -> bool:
    return any(name in parameters for name in _SHARED_MEMORY_PARAMETERS)


def _shared_memory_location(
    parameters: Mapping[str, pb.InferParameter],
    what: str,
    shared_memory: SharedMemoryRegistry | None,
) -> SharedMemoryLocation:
    """The region, offset and byte size a tensor's parameters name (Triton's parameters:
    shared_memory_region, shared_memory_byte_size, and optionally shared_memory_offset)."""
    if shared_memory is None:
        raise UnsupportedError(f"{what} uses shared memory, which is not supported")
    region = parameters.get("shared_memory_region")
    if region is None or region.WhichOneof("parameter_choice") != "string_param":
        raise InvalidInputError(
            f"{what}: shared memory needs the string parameter 'shared_memory_region'"
        )
    if "shared_memory_byte_size" not in parameters:
        raise InvalidInputError(
            f"{what}: shared memory region '{region.string_param}' needs the parameter "
            "'shared_memory_byte_size'"
        )
    return SharedMemoryLocation(
        region=region.string_param,
        offset=_tensor_int_parameter(parameters, "shared_memory_offset", what),
        byte_size=_tensor_int_parameter(parameters, "shared_memory_byte_size", what),
    )


def _tensor_int_parameter(parameters: Mapping[str, pb.InferParameter], name: str, what: str) -> int:
    if name not in parameters:
        return 0
    parameter = parameters[name]
    kind = parameter.WhichOneof("parameter_choice")
    if kind not in ("int64_param", "uint64_param"):
        raise InvalidInputError(f"{what}: parameter '{name}' must be an integer, got {kind}")
    value: int = getattr(parameter, kind)
    if value < 0:
        raise InvalidInputError(f"{what}: parameter '{name}' must not be negative, got {value}")
    return value


def _decode_shared(
    tensor: pb.ModelInferRequest.InferInputTensor,
    datatype: DataType,
    shape: tuple[int, ...],
    location: SharedMemoryLocation,
    shared_memory: SharedMemoryRegistry | None,
) -> np.ndarray:
    what = f"input '{tensor.name}'"
    if tensor.HasField("contents"):
        raise InvalidInputError(f"{what} has typed contents and names a shared memory region")
    if not datatype.is_bytes:
        expected = math.prod(shape) * datatype.itemsize
        if location.byte_size != expected:
            raise InvalidInputError(
                f"{what}: shared_memory_byte_size is {location.byte_size}, but shape "
                f"{list(shape)} of {datatype.name} needs {expected} bytes"
            )
    assert shared_memory is not None
    data = shared_memory.read(location.region, location.offset, location.byte_size, what)
    return decode_raw(tensor.name, datatype, shape, data)


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
    value: int
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
    result: InferenceResult,
    shared_memory: SharedMemoryRegistry | None = None,
    max_message_bytes: int | None = None,
    split_from_bytes: int | None = None,
) -> pb.ModelInferResponse | SplitResponse:
    """Outputs in the given order, each as one raw_output_contents entry.

    An output with a shared memory location is written into its region instead, and its raw
    entry is left empty (so raw entries still line up with the outputs, as Triton does); its
    tensor's parameters name the region and the bytes written. An answer larger than
    `max_message_bytes` (which grpc would refuse to send after the server had counted it a
    success) is RESOURCE_EXHAUSTED here, with the limit named. Outputs of `split_from_bytes` or
    more in all are not copied into the message: a SplitResponse carries views of them to be
    written once, when grpc serialises it (grpc_api/wire.py).
    """
    # Filled in place: passing lists of messages to the constructor copies each one (2x slower).
    response = pb.ModelInferResponse(
        model_name=result.model_name, model_version=result.model_version, id=result.id
    )
    split = split_from_bytes is not None and (
        sum(array.nbytes for array in result.outputs.values()) >= split_from_bytes
    )
    raw: Any = [] if split else response.raw_output_contents
    shared_memory_outputs = result.shared_memory_outputs
    raw_bytes = 0
    for name, array in result.outputs.items():
        datatype = datatypes.from_numpy(array.dtype)
        tensor = response.outputs.add(name=name, datatype=datatype.name, shape=array.shape)
        location = shared_memory_outputs.get(name) if shared_memory_outputs else None
        if location is None:
            encoded = raw_buffer(array, datatype) if split else encode_raw(array, datatype)
            raw_bytes += len(encoded)
            raw.append(encoded)
        else:
            if shared_memory is None:
                raise UnsupportedError(
                    f"output '{name}' uses shared memory, which is not supported"
                )
            data = raw_buffer(array, datatype)
            shared_memory.write(
                location.region, location.offset, location.byte_size, data, f"output '{name}'"
            )
            tensor.parameters["shared_memory_region"].string_param = location.region
            tensor.parameters["shared_memory_offset"].int64_param = location.offset
            tensor.parameters["shared_memory_byte_size"].int64_param = len(data)
            raw.append(b"")
    answer = SplitResponse(response, raw) if split else response
    if max_message_bytes is not None and raw_bytes > max_message_bytes - _HEADER_ROOM:
        size = answer.byte_size() if isinstance(answer, SplitResponse) else answer.ByteSize()
        _check_size(size, result, max_message_bytes)
    return answer


# Below this many bytes short of the limit, tensor data alone decides: the rest of a response
# (names, shapes, parameters) is far smaller, so ByteSize() is only computed near the limit.
_HEADER_ROOM = 64 << 10


def _check_size(size: int, result: InferenceResult, max_message_bytes: int) -> None:
    if size > max_message_bytes:
        log.warning(
            "model '%s': an answer of %d bytes exceeds --max-message-bytes (%d); refused",
            result.model_name,
            size,
            max_message_bytes,
        )
        raise CapacityError(
            f"the answer of model '{result.model_name}' is {size} bytes, more than the server's "
            f"--max-message-bytes ({max_message_bytes}); ask for fewer rows or outputs, or have "
            "outputs written to shared memory"
        )
