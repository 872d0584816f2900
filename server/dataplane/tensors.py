"""Tensors on the wire, for every front end: datatypes, shapes and sizes checked, raw little-endian
bytes viewed as arrays (no copy) and back, BYTES elements with their 4-byte length prefix.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable

import numpy as np

from runtimes import datatypes
from runtimes.datatypes import DataType
from runtimes.errors import InvalidInputError
from server.dataplane.inference import DEFAULT_LIMITS, RequestLimits

LENGTH_PREFIX = struct.Struct("<I")
# Guards the element count before any allocation; the message size limit bounds real data.
MAX_ELEMENTS = 1 << 31


def datatype_of(name: str, datatype: str, role: str) -> DataType:
    found = datatypes.BY_NAME.get(datatype)
    if found is None or found.numpy is None:
        known = ", ".join(d.name for d in datatypes.DATATYPES if d.numpy is not None)
        raise InvalidInputError(
            f"{role} '{name}' has unknown datatype '{datatype}'; expected one of {known}"
        )
    return found


def shape_of(name: str, dims: Iterable[int]) -> tuple[tuple[int, ...], int]:
    """The shape and its element count, once both are known to be sane."""
    shape = tuple(dims)
    if shape and min(shape) < 0:
        raise InvalidInputError(f"input '{name}' has a negative dimension in shape {list(shape)}")
    # Each dimension first: a product of huge dimensions is a huge integer to compute.
    count = MAX_ELEMENTS + 1 if shape and max(shape) > MAX_ELEMENTS else math.prod(shape)
    if count > MAX_ELEMENTS:
        raise InvalidInputError(
            f"input '{name}' has shape {list(shape)}, more than {MAX_ELEMENTS} elements"
        )
    return shape, count


def check_size(name: str, datatype: DataType, count: int, limits: RequestLimits) -> None:
    if count > limits.max_tensor_elements:
        raise InvalidInputError(
            f"input '{name}' has {count} elements, more than the limit of "
            f"{limits.max_tensor_elements} per tensor (--max-tensor-elements)"
        )
    if count * datatype.itemsize > limits.max_tensor_bytes:
        raise InvalidInputError(
            f"input '{name}' has {count * datatype.itemsize} bytes, more than the limit of "
            f"{limits.max_tensor_bytes} per tensor (--max-tensor-bytes)"
        )


def decode_raw(
    name: str,
    datatype: DataType,
    shape: tuple[int, ...],
    raw: bytes | memoryview,
    max_bytes_element: int = DEFAULT_LIMITS.max_bytes_element,
) -> np.ndarray:
    """View raw little-endian bytes as an array of `shape` (BYTES are parsed element by element)."""
    count = math.prod(shape)
    if datatype.is_bytes:
        return decode_bytes_elements(name, raw, count, max_bytes_element).reshape(shape)
    expected = count * datatype.itemsize
    if len(raw) != expected:
        raise InvalidInputError(
            f"input '{name}': raw data has {len(raw)} bytes, but shape {list(shape)} of "
            f"{datatype.name} needs {expected} bytes"
        )
    return np.frombuffer(raw, dtype=datatype.numpy).reshape(shape)


def decode_bytes_elements(
    name: str,
    raw: bytes | memoryview,
    count: int,
    max_element: int = DEFAULT_LIMITS.max_bytes_element,
) -> np.ndarray:
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
        (length,) = LENGTH_PREFIX.unpack_from(raw, offset)
        offset += 4
        if offset + length > size:
            raise InvalidInputError(
                f"input '{name}': BYTES element {index} declares {length} bytes but only "
                f"{size - offset} remain"
            )
        if length > max_element:
            raise InvalidInputError(
                f"input '{name}': BYTES element {index} has {length} bytes, more than the "
                f"limit of {max_element} (--max-bytes-element)"
            )
        elements[index] = bytes(raw[offset : offset + length])  # not a view: models get bytes
        offset += length
    if offset != size:
        raise InvalidInputError(
            f"input '{name}': BYTES data has {size - offset} bytes left over after {count} elements"
        )
    return elements


def encode_raw(array: np.ndarray, datatype: DataType) -> bytes:
    if not datatype.is_bytes:
        return array.tobytes()
    parts = []
    for item in array.ravel():
        data = item.encode("utf-8") if isinstance(item, str) else bytes(item)
        parts.append(LENGTH_PREFIX.pack(len(data)))
        parts.append(data)
    return b"".join(parts)


def raw_buffer(array: np.ndarray, datatype: DataType) -> bytes | memoryview:
    """The raw bytes of an output without a copy where the array allows it."""
    if datatype.is_bytes:
        return encode_raw(array, datatype)
    return np.ascontiguousarray(array).reshape(-1).view(np.uint8).data
