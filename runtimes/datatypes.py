"""The one datatype table: protocol name <-> numpy dtype <-> ONNX type <-> config enum name.

Every conversion between the wire, the model config and the runtime goes through this table, so a
new datatype is added here once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

try:  # bfloat16 has no numpy dtype of its own; ml_dtypes (an onnx dependency) provides one.
    import ml_dtypes

    _BF16: np.dtype | None = np.dtype(ml_dtypes.bfloat16)
except ImportError:  # pragma: no cover - depends on the environment
    _BF16 = None


@dataclass(frozen=True)
class DataType:
    """One row of the table. `contents_field` is the typed InferTensorContents field, if any."""

    name: str
    numpy: np.dtype | None
    onnx: str
    config: str
    contents_field: str | None
    # Derived, and stored rather than computed: read several times on every request.
    is_bytes: bool = field(init=False)
    itemsize: int = field(init=False)  # bytes per element on the wire; 0 for BYTES (varies)

    def __post_init__(self) -> None:
        is_bytes = self.name == "BYTES"
        object.__setattr__(self, "is_bytes", is_bytes)
        itemsize = 0 if self.numpy is None or is_bytes else self.numpy.itemsize
        object.__setattr__(self, "itemsize", itemsize)


_OBJECT = np.dtype(object)

DATATYPES: tuple[DataType, ...] = (
    DataType("BOOL", np.dtype(np.bool_), "tensor(bool)", "TYPE_BOOL", "bool_contents"),
    DataType("UINT8", np.dtype(np.uint8), "tensor(uint8)", "TYPE_UINT8", "uint_contents"),
    DataType("UINT16", np.dtype(np.uint16), "tensor(uint16)", "TYPE_UINT16", "uint_contents"),
    DataType("UINT32", np.dtype(np.uint32), "tensor(uint32)", "TYPE_UINT32", "uint_contents"),
    DataType("UINT64", np.dtype(np.uint64), "tensor(uint64)", "TYPE_UINT64", "uint64_contents"),
    DataType("INT8", np.dtype(np.int8), "tensor(int8)", "TYPE_INT8", "int_contents"),
    DataType("INT16", np.dtype(np.int16), "tensor(int16)", "TYPE_INT16", "int_contents"),
    DataType("INT32", np.dtype(np.int32), "tensor(int32)", "TYPE_INT32", "int_contents"),
    DataType("INT64", np.dtype(np.int64), "tensor(int64)", "TYPE_INT64", "int64_contents"),
    DataType("FP16", np.dtype(np.float16), "tensor(float16)", "TYPE_FP16", None),
    DataType("FP32", np.dtype(np.float32), "tensor(float)", "TYPE_FP32", "fp32_contents"),
    DataType("FP64", np.dtype(np.float64), "tensor(double)", "TYPE_FP64", "fp64_contents"),
    DataType("BF16", _BF16, "tensor(bfloat16)", "TYPE_BF16", None),
    DataType("BYTES", _OBJECT, "tensor(string)", "TYPE_STRING", "bytes_contents"),
)

BY_NAME: dict[str, DataType] = {d.name: d for d in DATATYPES}
BY_ONNX: dict[str, DataType] = {d.onnx: d for d in DATATYPES}
BY_CONFIG: dict[str, DataType] = {d.config: d for d in DATATYPES}
_BY_NUMPY: dict[np.dtype, DataType] = {d.numpy: d for d in DATATYPES if d.numpy is not None}


def from_numpy(dtype: np.dtype) -> DataType:
    """The protocol datatype of a numpy array; str/bytes arrays are BYTES."""
    if dtype.kind in "OSU":
        return BY_NAME["BYTES"]
    try:
        return _BY_NUMPY[dtype]
    except KeyError:
        raise ValueError(f"numpy dtype {dtype} has no protocol datatype") from None
