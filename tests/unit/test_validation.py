"""server.validation: decoded inputs and requested outputs against a model signature."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import ml_dtypes
import numpy as np
import pytest

from runtimes.base import TensorSpec
from runtimes.errors import InvalidInputError, TensorgateError
from server.dataplane.validation import _plainly_valid, validate_inputs, validate_requested_outputs
from server.models.config import ModelSignature

BATCHED = ModelSignature(
    max_batch_size=4,
    inputs=(TensorSpec("ids", "INT64", (-1,)), TensorSpec("image", "FP32", (3, 2))),
    outputs=(TensorSpec("logits", "FP32", (10,)), TensorSpec("label", "BYTES", (1,))),
)
FIXED = ModelSignature(
    max_batch_size=0,
    inputs=(TensorSpec("x", "FP16", (2, -1)),),
    outputs=(TensorSpec("y", "FP16", (2, -1)),),
)


@contextmanager
def invalid(*fragments: str) -> Iterator[None]:
    with pytest.raises(TensorgateError) as info:
        yield
    assert type(info.value) is InvalidInputError, f"{type(info.value).__name__}: {info.value}"
    for fragment in fragments:
        assert fragment in str(info.value), f"{fragment!r} not in {str(info.value)!r}"


def batched_inputs(rows: int = 2, length: int = 5) -> dict[str, np.ndarray]:
    return {
        "ids": np.zeros((rows, length), dtype=np.int64),
        "image": np.zeros((rows, 3, 2), dtype=np.float32),
    }


def test_valid_batched_inputs_pass() -> None:
    validate_inputs("net", BATCHED, batched_inputs(rows=4, length=7))
    validate_inputs("net", BATCHED, batched_inputs(rows=1, length=0))


def test_valid_fixed_shape_inputs_pass() -> None:
    validate_inputs("net", FIXED, {"x": np.zeros((2, 9), dtype=np.float16)})


def test_input_order_does_not_matter() -> None:
    inputs = batched_inputs()
    validate_inputs("net", BATCHED, dict(reversed(list(inputs.items()))))


def test_unknown_input_lists_the_model_inputs() -> None:
    inputs = {**batched_inputs(), "extra": np.zeros((2,), dtype=np.int64)}
    with invalid("model 'net' has no input 'extra'", "['ids', 'image']"):
        validate_inputs("net", BATCHED, inputs)


def test_missing_input_is_named() -> None:
    inputs = batched_inputs()
    del inputs["image"]
    with invalid("model 'net' expects input 'image'", "request does not have"):
        validate_inputs("net", BATCHED, inputs)


@pytest.mark.parametrize(
    ("array", "got"),
    [
        (np.zeros((2, 5), dtype=np.int32), "INT32"),
        (np.zeros((2, 5), dtype=np.float64), "FP64"),
        (np.zeros((2, 5), dtype=object), "BYTES"),
        (np.zeros((2, 5), dtype=ml_dtypes.bfloat16), "BF16"),
    ],
)
def test_wrong_datatype_names_input_expected_and_got(array: np.ndarray, got: str) -> None:
    inputs = {**batched_inputs(), "ids": array}
    with invalid(f"input 'ids' has datatype {got}", "model 'net' expects INT64"):
        validate_inputs("net", BATCHED, inputs)


@pytest.mark.parametrize(
    ("shape", "expected"),
    [
        ((2, 3, 3), "[-1, 3, 2]"),
        ((2, 6), "[-1, 3, 2]"),
        ((2, 3, 2, 1), "[-1, 3, 2]"),
        ((3, 2), "[-1, 3, 2]"),  # the batch dimension is missing
    ],
)
def test_wrong_shape_shows_client_shapes_with_the_batch_dimension(
    shape: tuple[int, ...], expected: str
) -> None:
    inputs = {**batched_inputs(), "image": np.zeros(shape, dtype=np.float32)}
    with invalid(f"input 'image' has shape {list(shape)}", f"model 'net' expects {expected}"):
        validate_inputs("net", BATCHED, inputs)


def test_scalar_input_to_a_batching_model_is_rejected() -> None:
    signature = ModelSignature(4, (TensorSpec("s", "FP32", ()),), ())
    validate_inputs("net", signature, {"s": np.zeros((3,), dtype=np.float32)})
    with invalid("input 's' has shape []", "expects [-1]"):
        validate_inputs("net", signature, {"s": np.zeros((), dtype=np.float32)})


def test_fixed_shape_mismatch_shows_the_model_shape_without_batch_dim() -> None:
    with invalid("input 'x' has shape [3, 4]", "model 'tiny' expects [2, -1]"):
        validate_inputs("tiny", FIXED, {"x": np.zeros((3, 4), dtype=np.float16)})
    with invalid("input 'x' has shape [1, 2, 4]", "expects [2, -1]"):
        validate_inputs("tiny", FIXED, {"x": np.zeros((1, 2, 4), dtype=np.float16)})


def test_inputs_must_agree_on_the_batch_size() -> None:
    inputs = {
        "ids": np.zeros((2, 5), dtype=np.int64),
        "image": np.zeros((3, 3, 2), dtype=np.float32),
    }
    with invalid("disagree on the batch size", "'ids' has 2", "'image' has 3"):
        validate_inputs("net", BATCHED, inputs)


def test_zero_rows_are_rejected() -> None:
    with invalid("batch dimension of the inputs is 0"):
        validate_inputs("net", BATCHED, batched_inputs(rows=0))


def test_more_rows_than_max_batch_size_are_rejected() -> None:
    with invalid("5 rows", "max_batch_size 4", "model 'net'"):
        validate_inputs("net", BATCHED, batched_inputs(rows=5))


def test_fixed_shape_model_has_no_row_limit() -> None:
    signature = ModelSignature(0, (TensorSpec("x", "BOOL", (-1,)),), ())
    validate_inputs("net", signature, {"x": np.zeros((1000,), dtype=np.bool_)})


def test_bytes_and_bf16_inputs_are_recognised() -> None:
    signature = ModelSignature(
        2, (TensorSpec("t", "BYTES", (1,)), TensorSpec("h", "BF16", (2,))), ()
    )
    validate_inputs(
        "net",
        signature,
        {
            "t": np.array([[b"a"], [b"b"]], dtype=object),
            "h": np.zeros((2, 2), dtype=ml_dtypes.bfloat16),
        },
    )


WELL_FORMED = [
    (BATCHED, batched_inputs()),
    (BATCHED, batched_inputs(rows=4, length=1)),
    (FIXED, {"x": np.zeros((2, 7), dtype=np.float16)}),
]
MALFORMED = [
    (BATCHED, {**batched_inputs(), "extra": np.zeros((2, 1), dtype=np.int64)}),
    (BATCHED, {"ids": np.zeros((2, 5), dtype=np.int64)}),
    (BATCHED, {**batched_inputs(), "ids": np.zeros((2, 5), dtype=np.int32)}),
    (BATCHED, {**batched_inputs(), "image": np.zeros((2, 3, 3), dtype=np.float32)}),
    (BATCHED, {**batched_inputs(), "image": np.zeros((3, 3, 2), dtype=np.float32)}),
    (BATCHED, batched_inputs(rows=0)),
    (BATCHED, batched_inputs(rows=5)),
    (BATCHED, {**batched_inputs(), "ids": np.zeros((), dtype=np.int64)}),
    (FIXED, {"x": np.zeros((3, 7), dtype=np.float16)}),
    (FIXED, {"x": np.zeros((2,), dtype=np.float16)}),
]


@pytest.mark.parametrize(("signature", "inputs"), WELL_FORMED)
def test_well_formed_inputs_take_the_quick_acceptance(signature, inputs) -> None:
    assert _plainly_valid(signature, inputs)
    validate_inputs("net", signature, inputs)


@pytest.mark.parametrize(("signature", "inputs"), MALFORMED)
def test_the_quick_acceptance_lets_nothing_malformed_through(signature, inputs) -> None:
    assert not _plainly_valid(signature, inputs)
    with invalid():
        validate_inputs("net", signature, inputs)


def test_requested_outputs_in_request_order() -> None:
    assert validate_requested_outputs("net", BATCHED, ["label", "logits"]) == ("label", "logits")
    assert validate_requested_outputs("net", BATCHED, ["label"]) == ("label",)


def test_no_requested_outputs_means_all_in_model_order() -> None:
    assert validate_requested_outputs("net", BATCHED, []) == ("logits", "label")


def test_unknown_requested_output_lists_the_model_outputs() -> None:
    with invalid("model 'net' has no output 'probs'", "['label', 'logits']"):
        validate_requested_outputs("net", BATCHED, ["logits", "probs"])
