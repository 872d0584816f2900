"""JSON and Triton's binary tensor extension <-> numpy, for the v2 REST protocol.

A request body is a JSON header, optionally followed by the binary data of inputs that say
`"parameters": {"binary_data_size": N}`, in input order; the header's length is the
`Inference-Header-Content-Length` HTTP header (absent: the whole body is JSON). Binary inputs are
viewed in place (np.frombuffer over the received body, no copy). JSON `data` is row-major, flat or
nested; BYTES elements are strings. An answer is JSON, or JSON followed by binary outputs when
the request asked for them (`binary_data` per output, or `binary_data_output` for all).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from runtimes import datatypes
from runtimes.datatypes import DataType
from runtimes.errors import InvalidInputError
from server.dataplane.classification import class_count
from server.dataplane.errors import UnsupportedError
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

_SEQUENCE_PARAMETERS = ("sequence_id", "sequence_start", "sequence_end")
_SHARED_MEMORY_PARAMETERS = ("shared_memory_region", "shared_memory_byte_size")


@dataclass(slots=True)
class DecodedRequest:
    """An InferenceRequest and what only the REST answer needs: which outputs go binary."""

    request: InferenceRequest
    binary_outputs: frozenset[str]
    all_binary: bool


@dataclass(slots=True)
class EncodedResponse:
    """The answer's body as chunks (the JSON header first), and the header's length when
    binary chunks follow it (the `Inference-Header-Content-Length` value)."""

    chunks: list[bytes | memoryview]
    header_length: int | None


def parse_json(body: bytes | memoryview, what: str = "request body") -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise InvalidInputError(f"the {what} is not valid JSON: {error}") from None


def decode_infer_request(
    model_name: str,
    model_version: str,
    body: bytes,
    header_length: int | None,
    shared_memory: SharedMemoryRegistry | None = None,
    limits: RequestLimits = DEFAULT_LIMITS,
) -> DecodedRequest:
    """Turn a v2 REST inference body into arrays, checking everything that needs no model."""
    view = memoryview(body)
    if header_length is None:
        header, binary = view, view[len(view) :]
    else:
        if not 0 <= header_length <= len(view):
            raise InvalidInputError(
                f"Inference-Header-Content-Length {header_length} is outside the body of "
                f"{len(view)} bytes"
            )
        header, binary = view[:header_length], view[header_length:]
    document = parse_json(header, "inference request")
    if not isinstance(document, dict):
        raise InvalidInputError("the inference request must be a JSON object")
    tensors = _list_field(document, "inputs", "the inference request")
    if not tensors:
        raise InvalidInputError("the inference request has no inputs")
    if len(tensors) > limits.max_inputs:
        raise InvalidInputError(
            f"request has {len(tensors)} inputs, more than the limit of "
            f"{limits.max_inputs} (--max-inputs)"
        )
    inputs: dict[str, np.ndarray] = {}
    offset = 0
    for tensor in tensors:
        name, datatype, shape, count, parameters = _tensor_header(tensor, limits)
        if name in inputs:
            raise InvalidInputError(f"input '{name}' appears more than once")
        if any(key in parameters for key in _SHARED_MEMORY_PARAMETERS):
            location = _location(parameters, f"input '{name}'", shared_memory)
            assert shared_memory is not None  # _location raised otherwise
            if not datatype.is_bytes and location.byte_size != count * datatype.itemsize:
                raise InvalidInputError(
                    f"input '{name}': shared_memory_byte_size is {location.byte_size}, but "
                    f"shape {list(shape)} of {datatype.name} needs {count * datatype.itemsize}"
                    " bytes"
                )
            data = shared_memory.read(
                location.region, location.offset, location.byte_size, f"input '{name}'"
            )
            inputs[name] = decode_raw(name, datatype, shape, data, limits.max_bytes_element)
        elif "binary_data_size" in parameters:
            size = _non_negative_int(parameters["binary_data_size"], f"input '{name}'")
            if offset + size > len(binary):
                raise InvalidInputError(
                    f"input '{name}': binary_data_size {size} runs past the end of the binary "
                    f"data ({len(binary) - offset} bytes left)"
                )
            raw = binary[offset : offset + size]
            offset += size
            inputs[name] = decode_raw(name, datatype, shape, raw, limits.max_bytes_element)
        elif "data" in tensor:
            inputs[name] = _json_data(name, datatype, shape, count, tensor["data"])
        else:
            raise InvalidInputError(
                f"input '{name}' has neither 'data' nor binary data (parameters.binary_data_size)"
            )
    if offset != len(binary):
        raise InvalidInputError(
            f"the body has {len(binary) - offset} bytes of binary data that no input claims"
        )
    requested, binary_outputs, output_locations, classifications = _outputs(document, shared_memory)
    priority, timeout_us, all_binary = _request_parameters(document)
    request_id = document.get("id", "")
    if not isinstance(request_id, str):
        raise InvalidInputError("the request 'id' must be a string")
    return DecodedRequest(
        InferenceRequest(
            model_name=model_name,
            model_version=model_version,
            id=request_id,
            inputs=inputs,
            requested_outputs=requested,
            priority=priority,
            timeout_us=timeout_us,
            shared_memory_outputs=output_locations,
            classifications=classifications or None,
        ),
        binary_outputs,
        all_binary,
    )


def _tensor_header(
    tensor: object, limits: RequestLimits
) -> tuple[str, DataType, tuple[int, ...], int, Mapping[str, object]]:
    if not isinstance(tensor, dict):
        raise InvalidInputError("each input must be a JSON object")
    name = tensor.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidInputError("an input has no 'name'")
    datatype_name = tensor.get("datatype")
    if not isinstance(datatype_name, str):
        raise InvalidInputError(f"input '{name}' has no 'datatype'")
    datatype = datatype_of(name, datatype_name, "input")
    dims = tensor.get("shape")
    if not isinstance(dims, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) for d in dims
    ):
        raise InvalidInputError(f"input '{name}' needs a 'shape' that is a list of integers")
    shape, count = shape_of(name, dims)
    check_size(name, datatype, count, limits)
    parameters = tensor.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise InvalidInputError(f"input '{name}': 'parameters' must be a JSON object")
    return name, datatype, shape, count, parameters


def _json_data(
    name: str, datatype: DataType, shape: tuple[int, ...], count: int, data: object
) -> np.ndarray:
    """JSON values as an array: numbers (integers for integer types), booleans for BOOL, UTF-8
    strings for BYTES; flat or nested, row-major."""
    if not isinstance(data, list):
        data = [data]
    if datatype.is_bytes:
        flat = _flatten(data)
        if not all(isinstance(item, str) for item in flat):
            raise InvalidInputError(f"input '{name}': BYTES data must be strings")
        array = np.empty(len(flat), dtype=object)
        array[:] = [item.encode("utf-8") for item in flat]
    else:
        target = datatype.numpy
        assert target is not None  # every datatype but BYTES has a numpy dtype
        try:
            parsed = np.asarray(data)
        except ValueError as error:  # ragged nesting
            raise InvalidInputError(f"input '{name}': 'data' is not a regular array") from error
        if parsed.dtype.kind in "fO" and target.kind in "iu":
            parsed = _wide_integers(name, datatype, data, parsed)
        if parsed.size and not _kind_fits(parsed.dtype, datatype):
            raise InvalidInputError(
                f"input '{name}' has datatype {datatype.name}, but its data holds "
                f"{_kind_name(parsed.dtype)}"
            )
        try:
            array = parsed.astype(target, casting="unsafe")
        except (ValueError, TypeError) as error:
            raise InvalidInputError(f"input '{name}': {error}") from None
        if parsed.dtype.kind in "iu" and not np.array_equal(array, parsed):
            raise InvalidInputError(f"input '{name}': a value is out of range for {datatype.name}")
        array = array.reshape(-1)
    if array.size != count:
        raise InvalidInputError(
            f"input '{name}' has {array.size} elements, but shape {list(shape)} needs {count}"
        )
    return array.reshape(shape)


def _wide_integers(
    name: str, datatype: DataType, data: list[Any], parsed: np.ndarray
) -> np.ndarray:
    """numpy reads integers beyond int64 mixed with smaller ones as floats (or objects):
    integers only are read as the target type itself, exactly, or refused as out of range."""
    flat = _flatten(data)
    if not all(isinstance(item, int) and not isinstance(item, bool) for item in flat):
        return parsed  # real floats: refused by the caller with the usual message
    try:
        return np.array(flat, dtype=datatype.numpy)
    except OverflowError:
        raise InvalidInputError(
            f"input '{name}': a value is out of range for {datatype.name}"
        ) from None


_FLOATING = frozenset({"FP16", "FP32", "FP64", "BF16"})


def _kind_fits(dtype: np.dtype, datatype: DataType) -> bool:
    """Whether parsed JSON values suit the datatype: booleans for BOOL, integers for integer
    types, any numbers for floating-point types (an empty array suits all)."""
    if dtype.kind == "f" and dtype == np.float64 and datatype.name not in _FLOATING:
        return False
    if datatype.name == "BOOL":
        return dtype.kind == "b"
    if datatype.name in _FLOATING:
        return dtype.kind in "iuf"
    return dtype.kind in "iu"


def _kind_name(dtype: np.dtype) -> str:
    return {"b": "booleans", "i": "integers", "u": "integers", "f": "floating-point numbers"}.get(
        dtype.kind, "values of another kind"
    )


def _flatten(data: list[Any]) -> list[Any]:
    flat: list[Any] = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            flat.append(item)
        else:
            stack.pop()
    return flat


def _outputs(
    document: dict[str, Any], shared_memory: SharedMemoryRegistry | None
) -> tuple[tuple[str, ...], frozenset[str], dict[str, SharedMemoryLocation], dict[str, int]]:
    """The requested outputs: names, those wanted in binary, in shared memory, as classes."""
    requested: list[str] = []
    binary: set[str] = set()
    locations: dict[str, SharedMemoryLocation] = {}
    classifications: dict[str, int] = {}
    for output in _list_field(document, "outputs", "the inference request"):
        if not isinstance(output, dict) or not isinstance(output.get("name"), str):
            raise InvalidInputError("each requested output must be an object with a 'name'")
        name = output["name"]
        if name in requested:
            raise InvalidInputError(f"output '{name}' is requested more than once")
        parameters = output.get("parameters") or {}
        if not isinstance(parameters, dict):
            raise InvalidInputError(f"output '{name}': 'parameters' must be a JSON object")
        if "classification" in parameters:
            classifications[name] = class_count(parameters["classification"], name)
        if parameters.get("binary_data"):
            binary.add(name)
        if any(key in parameters for key in _SHARED_MEMORY_PARAMETERS):
            what = f"output '{name}'"
            location = _location(parameters, what, shared_memory)
            assert shared_memory is not None
            shared_memory.check(location.region, location.offset, location.byte_size, what)
            locations[name] = location
        requested.append(name)
    return tuple(requested), frozenset(binary), locations, classifications


def _request_parameters(document: dict[str, Any]) -> tuple[int, int, bool]:
    parameters = document.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise InvalidInputError("the request's 'parameters' must be a JSON object")
    if any(parameters.get(name) for name in _SEQUENCE_PARAMETERS):
        raise UnsupportedError("sequence batching (sequence_id/start/end) is not supported")
    priority = _non_negative_int(parameters.get("priority", 0), "parameter 'priority'")
    timeout_us = _non_negative_int(parameters.get("timeout", 0), "parameter 'timeout'")
    all_binary = parameters.get("binary_data_output", False)
    if not isinstance(all_binary, bool):
        raise InvalidInputError("parameter 'binary_data_output' must be true or false")
    return priority, timeout_us, all_binary


def _location(
    parameters: Mapping[str, object], what: str, shared_memory: SharedMemoryRegistry | None
) -> SharedMemoryLocation:
    if shared_memory is None:
        raise UnsupportedError(f"{what} uses shared memory, which is not supported")
    region = parameters.get("shared_memory_region")
    if not isinstance(region, str) or not region:
        raise InvalidInputError(
            f"{what}: shared memory needs the string parameter 'shared_memory_region'"
        )
    if "shared_memory_byte_size" not in parameters:
        raise InvalidInputError(
            f"{what}: shared memory region '{region}' needs the parameter 'shared_memory_byte_size'"
        )
    return SharedMemoryLocation(
        region=region,
        offset=_non_negative_int(parameters.get("shared_memory_offset", 0), what),
        byte_size=_non_negative_int(parameters["shared_memory_byte_size"], what),
    )


def _non_negative_int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidInputError(f"{what}: expected a non-negative integer, got {value!r}")
    return value


def _list_field(document: dict[str, Any], field: str, what: str) -> list[Any]:
    value = document.get(field, [])
    if not isinstance(value, list):
        raise InvalidInputError(f"'{field}' of {what} must be a JSON array")
    return value


def encode_infer_response(
    result: InferenceResult,
    binary_outputs: frozenset[str],
    all_binary: bool,
    shared_memory: SharedMemoryRegistry | None = None,
) -> EncodedResponse:
    """The answer's JSON header and binary chunks (views of the output arrays where they are
    contiguous: no copy of tensor bytes here)."""
    outputs: list[dict[str, Any]] = []
    chunks: list[bytes | memoryview] = []
    for name, array in result.outputs.items():
        datatype = datatypes.from_numpy(array.dtype)
        tensor: dict[str, Any] = {"name": name, "datatype": datatype.name, "shape": array.shape}
        location = result.shared_memory_outputs.get(name)
        if location is not None:
            if shared_memory is None:
                raise UnsupportedError(
                    f"output '{name}' uses shared memory, which is not supported"
                )
            data = raw_buffer(array, datatype)
            shared_memory.write(
                location.region, location.offset, location.byte_size, data, f"output '{name}'"
            )
            tensor["parameters"] = {
                "shared_memory_region": location.region,
                "shared_memory_offset": location.offset,
                "shared_memory_byte_size": len(data),
            }
        elif all_binary or name in binary_outputs:
            data = (
                raw_buffer(array, datatype)
                if not datatype.is_bytes
                else encode_raw(array, datatype)
            )
            tensor["parameters"] = {"binary_data_size": len(data)}
            chunks.append(data)
        else:
            tensor["data"] = _json_values(name, array, datatype)
        outputs.append(tensor)
    header = orjson.dumps(
        {
            "model_name": result.model_name,
            "model_version": result.model_version,
            "id": result.id,
            "outputs": outputs,
        },
        option=orjson.OPT_SERIALIZE_NUMPY,
    )
    return EncodedResponse([header, *chunks], len(header) if chunks else None)


def _json_values(name: str, array: np.ndarray, datatype: DataType) -> list[Any]:
    flat = array.reshape(-1)
    if datatype.is_bytes:
        try:
            return [item.decode("utf-8") if isinstance(item, bytes) else str(item) for item in flat]
        except UnicodeDecodeError:
            raise UnsupportedError(
                f"output '{name}' holds bytes that are not UTF-8, which JSON cannot carry; "
                "ask for it as binary data (parameters.binary_data: true)"
            ) from None
    if datatype.name in ("FP16", "BF16"):
        return flat.astype(np.float32).tolist()
    return flat.tolist()
