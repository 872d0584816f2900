"""Check decoded inputs and requested outputs against a model's signature.

Messages name the tensor and say what was expected, with shapes as clients see them (the batch
dimension shown as -1).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from runtimes import datatypes
from runtimes.errors import InvalidInputError
from server.models.config import ModelSignature


def validate_inputs(
    model_name: str, signature: ModelSignature, inputs: Mapping[str, np.ndarray]
) -> None:
    """Raise InvalidInputError saying what is wrong with `inputs`, if anything."""
    if _plainly_valid(signature, inputs):
        return
    expected = signature.inputs_by_name
    extra = [name for name in inputs if name not in expected]
    if extra:
        raise InvalidInputError(
            f"model '{model_name}' has no input '{extra[0]}'; its inputs are {sorted(expected)}"
        )
    missing = [name for name in expected if name not in inputs]
    if missing:
        raise InvalidInputError(
            f"model '{model_name}' expects input '{missing[0]}', which the request does not have"
        )
    batching = signature.max_batch_size > 0
    rows_by_input: dict[str, int] = {}
    for name, array in inputs.items():
        spec = expected[name]
        datatype = datatypes.from_numpy(array.dtype).name
        if datatype != spec.datatype:
            raise InvalidInputError(
                f"input '{name}' has datatype {datatype}, but model '{model_name}' expects "
                f"{spec.datatype}"
            )
        shape = array.shape[1:] if batching else array.shape
        if (batching and array.ndim == 0) or not shape_matches(shape, spec.shape):
            raise InvalidInputError(
                f"input '{name}' has shape {list(array.shape)}, but model '{model_name}' "
                f"expects {list(signature.full_shape(spec))}"
            )
        if batching:
            rows_by_input[name] = array.shape[0]
    if batching:
        _check_rows(model_name, signature.max_batch_size, rows_by_input)


def _plainly_valid(signature: ModelSignature, inputs: Mapping[str, np.ndarray]) -> bool:
    """The quick acceptance of a well-formed request (every request runs this); False sends it
    through the checks that say what is wrong (or accept what this does not cover: BYTES)."""
    expected = signature.input_dtypes_and_shapes
    if inputs.keys() != expected.keys():
        return False
    batching = signature.max_batch_size > 0
    rows = -1
    for name, array in inputs.items():
        dtype, dims = expected[name]
        shape = array.shape
        if array.dtype != dtype or len(shape) != len(dims):
            return False
        if batching:
            if rows == -1:
                rows = shape[0]
            elif shape[0] != rows:
                return False
        for size, dim in zip(shape, dims, strict=True):
            if dim != size and dim != -1:
                return False
    return not batching or 0 < rows <= signature.max_batch_size


def shape_matches(shape: tuple[int, ...], dims: tuple[int, ...]) -> bool:
    return len(shape) == len(dims) and all(d in (-1, s) for s, d in zip(shape, dims, strict=True))


def _check_rows(model_name: str, max_batch_size: int, rows_by_input: dict[str, int]) -> None:
    if len(set(rows_by_input.values())) > 1:
        described = ", ".join(f"'{name}' has {rows}" for name, rows in rows_by_input.items())
        raise InvalidInputError(f"inputs disagree on the batch size: {described} rows")
    rows = next(iter(rows_by_input.values()), 1)
    if rows == 0:
        raise InvalidInputError("the batch dimension of the inputs is 0; send at least one row")
    if rows > max_batch_size:
        raise InvalidInputError(
            f"the inputs have {rows} rows, more than max_batch_size {max_batch_size} of "
            f"model '{model_name}'"
        )


def validate_requested_outputs(
    model_name: str, signature: ModelSignature, requested: Sequence[str]
) -> tuple[str, ...]:
    """The outputs to return, in order: those requested, or every output when none are."""
    names = signature.output_names
    for name in requested:
        if name not in names:
            raise InvalidInputError(
                f"model '{model_name}' has no output '{name}'; its outputs are {sorted(names)}"
            )
    return tuple(requested) if requested else names
