"""server.codec: ModelInferRequest -> arrays, arrays -> ModelInferResponse.

Every failure must be an InvalidInputError (INVALID_ARGUMENT) or UnsupportedError (UNIMPLEMENTED)
whose message names the tensor and says what was expected and what arrived.
"""

from __future__ import annotations

import math
import struct
import tracemalloc
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import ml_dtypes
import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from runtimes import datatypes
from runtimes.errors import InvalidInputError, TensorgateError
from server._proto import grpc_service_pb2 as pb
from server.dataplane import tensors
from server.dataplane.errors import UnsupportedError
from server.grpc_api import codec
from tests.support.model_factory import TYPED_FIELDS
from tests.support.responses import encode

# Deterministic property tests: same examples on every run, nothing stored between runs.
PROPERTY = settings(derandomize=True, database=None, deadline=None, max_examples=200)

NUMERIC = tuple(d for d in datatypes.DATATYPES if d.numpy is not None and not d.is_bytes)
NUMERIC_NAMES = tuple(d.name for d in NUMERIC)
ALL_NAMES = tuple(d.name for d in datatypes.DATATYPES)
BYTES = datatypes.BY_NAME["BYTES"]


@contextmanager
def raises(cls: type[TensorgateError], *fragments: str) -> Iterator[None]:
    """Exactly `cls` (not a subclass, not a sibling) with every fragment in its message."""
    with pytest.raises(TensorgateError) as info:
        yield
    assert type(info.value) is cls, f"{type(info.value).__name__}: {info.value}"
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


def tensor(
    name: str,
    datatype: str,
    shape: Sequence[int],
    *,
    parameters: dict[str, pb.InferParameter] | None = None,
    **contents: list,
) -> pb.ModelInferRequest.InferInputTensor:
    message = pb.ModelInferRequest.InferInputTensor(name=name, datatype=datatype, shape=shape)
    for key, value in (parameters or {}).items():
        message.parameters[key].CopyFrom(value)
    if contents:
        message.contents.CopyFrom(pb.InferTensorContents(**contents))
    return message


def request(
    inputs: Sequence[pb.ModelInferRequest.InferInputTensor] = (),
    raw: Sequence[bytes] = (),
    outputs: Sequence[str | pb.ModelInferRequest.InferRequestedOutputTensor] = (),
    parameters: dict[str, pb.InferParameter] | None = None,
) -> pb.ModelInferRequest:
    message = pb.ModelInferRequest(
        model_name="m",
        model_version="2",
        id="req-1",
        inputs=list(inputs),
        raw_input_contents=list(raw),
        outputs=[
            pb.ModelInferRequest.InferRequestedOutputTensor(name=o) if isinstance(o, str) else o
            for o in outputs
        ],
    )
    for key, value in (parameters or {}).items():
        message.parameters[key].CopyFrom(value)
    return message


def length_prefixed(elements: Sequence[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(e)) + e for e in elements)


def example_array(name: str, shape: Sequence[int]) -> np.ndarray:
    """Deterministic data spanning the dtype's range (min, max, zero, negative floats)."""
    dtype = datatypes.BY_NAME[name].numpy
    count = math.prod(shape)
    if name == "BOOL":
        return (np.arange(count) % 3 == 0).reshape(shape)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        pool = [info.min, info.max, 0, 1, info.max // 3]
        return np.array([pool[i % len(pool)] for i in range(count)], dtype=dtype).reshape(shape)
    values = np.linspace(-3.5, 1e3, count, dtype=np.float64)
    return values.astype(dtype).reshape(shape)


def bases(array: np.ndarray) -> Iterator[object]:
    base = array.base
    while base is not None:
        yield base
        base = getattr(base, "base", None)


# --------------------------------------------------------------------------------------------
# Raw contents
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NUMERIC_NAMES)
def test_raw_input_of_every_numeric_datatype_decodes_little_endian_row_major(name: str) -> None:
    array = example_array(name, (2, 3))
    raw = array.astype(array.dtype.newbyteorder("<")).tobytes(order="C")
    decoded = codec.decode_infer_request(request([tensor("x", name, [2, 3])], [raw]))
    result = decoded.inputs["x"]
    assert result.dtype == datatypes.BY_NAME[name].numpy
    assert result.shape == (2, 3)
    assert result.tobytes() == raw
    np.testing.assert_array_equal(result.astype(np.float64), array.astype(np.float64))


def test_raw_bf16_decodes_to_ml_dtypes_bfloat16() -> None:
    values = np.array([1.5, -2.0, 0.0, 65280.0], dtype=ml_dtypes.bfloat16)
    decoded = codec.decode_infer_request(request([tensor("x", "BF16", [4])], [values.tobytes()]))
    assert decoded.inputs["x"].dtype == np.dtype(ml_dtypes.bfloat16)
    np.testing.assert_array_equal(decoded.inputs["x"].astype(np.float32), values.astype(np.float32))


def test_raw_bool_is_one_byte_per_element() -> None:
    decoded = codec.decode_infer_request(request([tensor("b", "BOOL", [3])], [b"\x01\x00\x01"]))
    np.testing.assert_array_equal(decoded.inputs["b"], [True, False, True])


def test_raw_scalar_and_empty_shapes() -> None:
    scalar = np.array(7, dtype=np.int32).tobytes()
    decoded = codec.decode_infer_request(
        request([tensor("s", "INT32", []), tensor("e", "FP32", [0, 3])], [scalar, b""])
    )
    assert decoded.inputs["s"].shape == ()
    assert int(decoded.inputs["s"]) == 7
    assert decoded.inputs["e"].shape == (0, 3)
    assert decoded.inputs["e"].dtype == np.float32


@pytest.mark.parametrize("name", NUMERIC_NAMES)
def test_decode_raw_views_the_given_bytes_without_copying(name: str) -> None:
    raw = example_array(name, (4, 2)).tobytes()
    result = codec.decode_raw("x", datatypes.BY_NAME[name], (4, 2), raw)
    assert any(base is raw for base in bases(result))
    assert np.shares_memory(result, np.frombuffer(raw, dtype=np.uint8))
    assert not result.flags.owndata
    assert not result.flags.writeable  # a view of immutable bytes must not be written to


def test_decoded_request_inputs_share_memory_with_the_raw_entries() -> None:
    a = np.arange(12, dtype=np.float32).tobytes()
    b = np.arange(3, dtype=np.int64).tobytes()
    decoded = codec.decode_infer_request(
        request([tensor("a", "FP32", [3, 4]), tensor("b", "INT64", [3])], [a, b])
    )
    for name, raw in (("a", a), ("b", b)):
        array = decoded.inputs[name]
        assert not array.flags.owndata
        owner = [base for base in bases(array) if isinstance(base, bytes)]
        assert owner and owner[0] == raw
        assert np.shares_memory(array, np.frombuffer(owner[0], dtype=np.uint8))


@PROPERTY
@given(
    name=st.sampled_from(NUMERIC_NAMES),
    shape=st.lists(st.integers(0, 4), max_size=4).map(tuple),
    data=st.data(),
)
def test_raw_round_trip_for_every_datatype_and_random_shapes(
    name: str, shape: tuple[int, ...], data: st.DataObject
) -> None:
    datatype = datatypes.BY_NAME[name]
    size = math.prod(shape) * datatype.itemsize
    raw = data.draw(st.binary(min_size=size, max_size=size))
    decoded = codec.decode_raw("x", datatype, shape, raw)
    assert decoded.shape == shape
    assert decoded.dtype == datatype.numpy
    assert datatypes.from_numpy(decoded.dtype) is datatype
    assert codec.encode_raw(decoded, datatype) == raw


@PROPERTY
@given(
    name=st.sampled_from(NUMERIC_NAMES),
    shape=st.lists(st.integers(0, 4), max_size=3).map(tuple),
    extra=st.integers(-7, 7).filter(bool),
)
def test_raw_of_the_wrong_length_names_input_and_both_sizes(
    name: str, shape: tuple[int, ...], extra: int
) -> None:
    datatype = datatypes.BY_NAME[name]
    expected = math.prod(shape) * datatype.itemsize
    size = max(0, expected + extra)
    if size == expected:
        return
    with raises(
        InvalidInputError,
        "input 'in0'",
        f"{size} bytes",
        f"shape {list(shape)}",
        name,
        f"needs {expected} bytes",
    ):
        codec.decode_infer_request(request([tensor("in0", name, shape)], [b"\x00" * size]))


# --------------------------------------------------------------------------------------------
# BYTES
# --------------------------------------------------------------------------------------------


def test_raw_bytes_elements_are_length_prefixed() -> None:
    elements = [b"hello", b"", "caf\u00e9".encode(), b"\x00\xff"]
    raw = length_prefixed(elements)
    decoded = codec.decode_infer_request(request([tensor("t", "BYTES", [2, 2])], [raw]))
    result = decoded.inputs["t"]
    assert result.dtype == object
    assert result.shape == (2, 2)
    assert result.ravel().tolist() == elements
    assert all(type(item) is bytes for item in result.ravel())


@PROPERTY
@given(
    elements=st.lists(st.binary(max_size=40), max_size=12),
    rows=st.sampled_from([None, 1, 2, 3]),
)
def test_bytes_length_prefix_round_trip_with_arbitrary_bytes(
    elements: list[bytes], rows: int | None
) -> None:
    if rows is None or len(elements) % rows:
        shape: tuple[int, ...] = (len(elements),)
    else:
        shape = (rows, len(elements) // rows)
    raw = length_prefixed(elements)
    decoded = codec.decode_raw("t", BYTES, shape, raw)
    assert decoded.shape == shape
    assert decoded.ravel().tolist() == elements
    assert codec.encode_raw(decoded, BYTES) == raw


@pytest.mark.parametrize(
    ("raw", "shape", "fragments"),
    [
        pytest.param(b"", [1], ["1 elements"], id="empty"),
        pytest.param(b"\x01\x00", [1], ["1 elements"], id="truncated-prefix"),
        pytest.param(
            length_prefixed([b"ab"]) + b"\x03\x00\x00",
            [2],
            ["ends after 1 of 2 elements"],
            id="truncated-second-prefix",
        ),
        pytest.param(
            struct.pack("<I", 10) + b"abc",
            [1],
            ["element 0 declares 10 bytes but only 3 remain"],
            id="length-past-end",
        ),
        pytest.param(
            struct.pack("<I", 0xFFFFFFFF),
            [1],
            ["element 0 declares 4294967295 bytes but only 0 remain"],
            id="huge-length",
        ),
        pytest.param(
            length_prefixed([b"a", b"b"]),
            [1],
            ["5 bytes left over after 1 elements"],
            id="left-over",
        ),
        pytest.param(b"\x00\x00\x00\x00x", [1], ["1 bytes left over"], id="trailing-byte"),
        pytest.param(b"\x00", [0], ["1 bytes left over after 0 elements"], id="data-for-empty"),
    ],
)
def test_malformed_raw_bytes_are_rejected(raw: bytes, shape: list[int], fragments: list) -> None:
    with raises(InvalidInputError, "input 'text'", "BYTES", *fragments):
        codec.decode_infer_request(request([tensor("text", "BYTES", shape)], [raw]))


def test_bytes_shape_with_no_data_is_rejected_before_allocating_an_element_array() -> None:
    # Each BYTES element needs at least its 4-byte prefix, so an empty payload that claims ten
    # million elements can be refused without allocating ten million object slots (80 MB here;
    # 16 GiB for a shape at MAX_ELEMENTS, from a request of a few bytes).
    count = 10_000_000
    tracemalloc.start()
    try:
        with raises(InvalidInputError, "input 'text'", "BYTES", str(count)):
            codec.decode_raw("text", BYTES, (count,), b"")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000, f"decoding an empty BYTES payload allocated {peak} bytes"


@PROPERTY
@given(
    name=st.sampled_from(ALL_NAMES),
    shape=st.lists(st.integers(0, 6), max_size=3),
    raw=st.binary(max_size=64),
)
def test_decoding_garbage_raw_never_raises_anything_but_invalid_input(
    name: str, shape: list[int], raw: bytes
) -> None:
    try:
        decoded = codec.decode_infer_request(request([tensor("g", name, shape)], [raw]))
    except InvalidInputError as error:
        assert "'g'" in str(error)
    else:
        assert decoded.inputs["g"].shape == tuple(shape)


@PROPERTY
@given(
    name=st.sampled_from([*ALL_NAMES, "", "FLOAT32", "bytes", "STRING"]),
    shape=st.lists(st.integers(-(2**63), 2**63 - 1), max_size=4),
    raw=st.binary(max_size=32),
)
@example(name="FP32", shape=[0, 2**62, 2**62], raw=b"")
@example(name="BYTES", shape=[0, 2**63 - 1], raw=b"")
def test_decoding_any_shape_never_raises_anything_but_invalid_input(
    name: str, shape: list[int], raw: bytes
) -> None:
    try:
        codec.decode_infer_request(request([tensor("g", name, shape)], [raw]))
    except InvalidInputError as error:
        assert "'g'" in str(error)


@pytest.mark.parametrize(
    ("name", "shape", "raw"),
    [
        pytest.param("FP32", [0, 2**62, 2**62], [b""], id="raw-fp32"),
        pytest.param("BYTES", [2**63 - 1, 0], [b""], id="raw-bytes"),
        pytest.param("FP16", [0, 2**62, 2**62], [], id="typed-fp16-no-contents"),
        pytest.param("INT32", [2**63 - 1, 0], [], id="typed-int32-no-contents"),
    ],
)
def test_zero_element_shape_with_huge_dims_is_invalid_input(
    name: str, shape: list[int], raw: list[bytes]
) -> None:
    # math.prod(shape) is 0, so the element-count guard passes, but numpy cannot build an array
    # with such dimensions and raises ValueError, which reaches the client as INTERNAL.
    with raises(InvalidInputError, "input 'huge'"):
        codec.decode_infer_request(request([tensor("huge", name, shape)], raw))


@PROPERTY
@given(raw=st.binary(max_size=200), count=st.integers(0, 20))
def test_decoding_garbage_bytes_payload_never_raises_anything_but_invalid_input(
    raw: bytes, count: int
) -> None:
    try:
        decoded = codec.decode_raw("t", BYTES, (count,), raw)
    except InvalidInputError as error:
        assert "input 't'" in str(error)
    else:
        assert decoded.shape == (count,)
        assert codec.encode_raw(decoded, BYTES) == raw


# --------------------------------------------------------------------------------------------
# Typed contents
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(TYPED_FIELDS))
def test_typed_contents_of_every_datatype_with_a_typed_field(name: str) -> None:
    if name == "BYTES":
        values: list = [b"a", b"", b"\xff\x00", "\u65e5".encode()]
        expected = np.array(values, dtype=object)
    else:
        expected = example_array(name, (4,))
        values = expected.tolist()
    decoded = codec.decode_infer_request(
        request([tensor("x", name, [2, 2], **{TYPED_FIELDS[name]: values})])
    )
    result = decoded.inputs["x"]
    assert result.dtype == datatypes.BY_NAME[name].numpy
    assert result.shape == (2, 2)
    assert result.ravel().tolist() == expected.tolist()


def test_typed_extreme_integer_values_are_exact() -> None:
    decoded = codec.decode_infer_request(
        request(
            [
                tensor("u64", "UINT64", [2], uint64_contents=[0, 2**64 - 1]),
                tensor("i64", "INT64", [2], int64_contents=[-(2**63), 2**63 - 1]),
                tensor("u32", "UINT32", [1], uint_contents=[2**32 - 1]),
                tensor("i8", "INT8", [2], int_contents=[-128, 127]),
            ]
        )
    )
    assert decoded.inputs["u64"].tolist() == [0, 2**64 - 1]
    assert decoded.inputs["i64"].tolist() == [-(2**63), 2**63 - 1]
    assert decoded.inputs["u32"].tolist() == [2**32 - 1]
    assert decoded.inputs["i8"].tolist() == [-128, 127]


@pytest.mark.parametrize(
    ("name", "field", "value"),
    [
        ("INT8", "int_contents", 128),
        ("INT8", "int_contents", -129),
        ("INT16", "int_contents", 40_000),
        ("UINT8", "uint_contents", 256),
        ("UINT16", "uint_contents", 70_000),
    ],
)
def test_out_of_range_typed_integer_is_rejected(name: str, field: str, value: int) -> None:
    with raises(InvalidInputError, "input 'small'", "out of range", name):
        codec.decode_infer_request(request([tensor("small", name, [2], **{field: [1, value]})]))


@pytest.mark.parametrize("name", ["FP16", "BF16"])
def test_fp16_and_bf16_have_no_typed_field(name: str) -> None:
    with raises(InvalidInputError, "input 'half'", name, "no typed contents field", "raw"):
        codec.decode_infer_request(request([tensor("half", name, [2], fp32_contents=[1.0, 2.0])]))


@pytest.mark.parametrize("name", ["FP16", "BF16"])
def test_fp16_and_bf16_with_no_data_are_rejected(name: str) -> None:
    with raises(InvalidInputError, "input 'half'", name, "raw_input_contents"):
        codec.decode_infer_request(request([tensor("half", name, [2])]))


def test_empty_fp16_tensor_without_contents_is_accepted() -> None:
    decoded = codec.decode_infer_request(request([tensor("half", "FP16", [0, 4])]))
    assert decoded.inputs["half"].shape == (0, 4)
    assert decoded.inputs["half"].dtype == np.float16


@pytest.mark.parametrize(
    ("name", "wrong"),
    [
        ("INT32", "fp32_contents"),
        ("FP32", "int_contents"),
        ("INT64", "int_contents"),
        ("UINT64", "uint_contents"),
        ("BOOL", "int_contents"),
        ("BYTES", "fp64_contents"),
    ],
)
def test_typed_contents_in_the_wrong_field_are_rejected(name: str, wrong: str) -> None:
    value = [1.0] if wrong.startswith("fp") else [1]
    with raises(
        InvalidInputError, "input 'x'", f"datatype {name}", TYPED_FIELDS[name], f"not {wrong}"
    ):
        codec.decode_infer_request(request([tensor("x", name, [1], **{wrong: value})]))


def test_typed_length_mismatch_names_both_counts() -> None:
    with raises(InvalidInputError, "input 'x'", "has 3 elements", "shape [2, 2]", "4 elements"):
        codec.decode_infer_request(request([tensor("x", "FP32", [2, 2], fp32_contents=[1, 2, 3])]))


def test_typed_input_without_any_data_is_rejected() -> None:
    with raises(InvalidInputError, "input 'x'", "has no data", "shape [3]", "needs 3 elements"):
        codec.decode_infer_request(request([tensor("x", "INT32", [3])]))


# --------------------------------------------------------------------------------------------
# Request-level errors
# --------------------------------------------------------------------------------------------


def test_raw_entry_count_must_match_the_inputs() -> None:
    raw = np.zeros(2, dtype=np.float32).tobytes()
    inputs = [tensor("a", "FP32", [2]), tensor("b", "FP32", [2])]
    with raises(InvalidInputError, "2 inputs", "1 raw_input_contents"):
        codec.decode_infer_request(request(inputs, [raw]))
    with raises(InvalidInputError, "1 inputs", "2 raw_input_contents"):
        codec.decode_infer_request(request(inputs[:1], [raw, raw]))


def test_mixing_raw_and_typed_contents_is_rejected() -> None:
    raw = np.zeros(2, dtype=np.float32).tobytes()
    inputs = [tensor("a", "FP32", [2]), tensor("b", "FP32", [2], fp32_contents=[1, 2])]
    with raises(InvalidInputError, "contents field must not be specified", "for 'b'"):
        codec.decode_infer_request(request(inputs, [raw, raw]))


@pytest.mark.parametrize("datatype", ["FLOAT32", "fp32", "", "STRING", "TYPE_FP32"])
def test_unknown_datatype_is_rejected_with_the_known_ones(datatype: str) -> None:
    with raises(InvalidInputError, "input 'x'", f"unknown datatype '{datatype}'", "FP32, FP64"):
        codec.decode_infer_request(request([tensor("x", datatype, [1])], [b"\x00" * 4]))


def test_negative_dimension_is_rejected() -> None:
    with raises(InvalidInputError, "input 'x'", "negative dimension", "[2, -1]"):
        codec.decode_infer_request(request([tensor("x", "FP32", [2, -1])], [b""]))


@pytest.mark.parametrize("shape", [[2**31 + 1], [65536, 65536], [2**40, 2**40]])
def test_shape_with_too_many_elements_is_rejected(shape: list[int]) -> None:
    with raises(InvalidInputError, "input 'x'", str(shape), f"more than {tensors.MAX_ELEMENTS}"):
        codec.decode_infer_request(request([tensor("x", "UINT8", shape)], [b""]))


def test_duplicate_input_name_is_rejected() -> None:
    raw = b"\x00" * 4
    inputs = [tensor("x", "FP32", [1]), tensor("x", "FP32", [1])]
    with raises(InvalidInputError, "input 'x' appears more than once"):
        codec.decode_infer_request(request(inputs, [raw, raw]))


def test_duplicate_requested_output_is_rejected() -> None:
    with raises(InvalidInputError, "output 'y' is requested more than once"):
        codec.decode_infer_request(request(outputs=["y", "z", "y"]))


@pytest.mark.parametrize(
    "parameter", ["shared_memory_region", "shared_memory_offset", "shared_memory_byte_size"]
)
def test_shared_memory_on_an_input_is_unsupported(parameter: str) -> None:
    value = (
        pb.InferParameter(string_param="region0")
        if parameter == "shared_memory_region"
        else pb.InferParameter(int64_param=16)
    )
    inp = tensor("x", "FP32", [1], parameters={parameter: value})
    with raises(UnsupportedError, "input 'x'", "shared memory"):
        codec.decode_infer_request(request([inp]))


@pytest.mark.parametrize(
    "parameter", ["shared_memory_region", "shared_memory_offset", "shared_memory_byte_size"]
)
def test_shared_memory_on_an_output_is_unsupported(parameter: str) -> None:
    output = pb.ModelInferRequest.InferRequestedOutputTensor(name="y")
    output.parameters[parameter].int64_param = 0
    with raises(UnsupportedError, "output 'y'", "shared memory"):
        codec.decode_infer_request(request(outputs=[output]))


def test_classification_is_read_from_the_requested_output() -> None:
    output = pb.ModelInferRequest.InferRequestedOutputTensor(name="y")
    output.parameters["classification"].int64_param = 3
    assert codec.decode_infer_request(request(outputs=[output])).classifications == {"y": 3}
    output.parameters["classification"].int64_param = 0
    with raises(InvalidInputError, "output 'y': classification must be a positive integer"):
        codec.decode_infer_request(request(outputs=[output]))


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("sequence_id", pb.InferParameter(int64_param=42)),
        ("sequence_id", pb.InferParameter(uint64_param=42)),
        ("sequence_start", pb.InferParameter(bool_param=True)),
        ("sequence_end", pb.InferParameter(bool_param=True)),
    ],
)
def test_sequence_parameters_are_unsupported(name: str, value: pb.InferParameter) -> None:
    with raises(UnsupportedError, "sequence"):
        codec.decode_infer_request(request(parameters={name: value}))


def test_string_sequence_id_is_unsupported_not_invalid() -> None:
    # The protocol allows string correlation IDs (string_param), so a request that carries one
    # is a valid sequence request that tensorgate does not support: UNIMPLEMENTED, not
    # "parameter 'sequence_id' must be an integer" (INVALID_ARGUMENT).
    with raises(UnsupportedError, "sequence"):
        codec.decode_infer_request(
            request(parameters={"sequence_id": pb.InferParameter(string_param="session-7")})
        )


def test_zero_and_false_sequence_parameters_are_accepted() -> None:
    decoded = codec.decode_infer_request(
        request(
            parameters={
                "sequence_id": pb.InferParameter(uint64_param=0),
                "sequence_start": pb.InferParameter(bool_param=False),
                "sequence_end": pb.InferParameter(bool_param=False),
            }
        )
    )
    assert decoded.inputs == {}


@pytest.mark.parametrize(
    "value",
    [
        pb.InferParameter(string_param="high"),
        pb.InferParameter(double_param=1.5),
        pb.InferParameter(),
    ],
    ids=["string", "double", "unset"],
)
def test_non_integer_priority_is_rejected(value: pb.InferParameter) -> None:
    with raises(InvalidInputError, "parameter 'priority'", "must be an integer"):
        codec.decode_infer_request(request(parameters={"priority": value}))


def test_non_integer_timeout_is_rejected() -> None:
    with raises(InvalidInputError, "parameter 'timeout'", "must be an integer", "string_param"):
        codec.decode_infer_request(
            request(parameters={"timeout": pb.InferParameter(string_param="10ms")})
        )


@pytest.mark.parametrize("name", ["timeout", "priority"])
def test_negative_integer_parameter_is_rejected(name: str) -> None:
    with raises(InvalidInputError, f"parameter '{name}'", "must not be negative", "-1"):
        codec.decode_infer_request(request(parameters={name: pb.InferParameter(int64_param=-1)}))


@pytest.mark.parametrize(
    "value",
    [pb.InferParameter(uint64_param=3), pb.InferParameter(int64_param=3)],
    ids=["uint64_param", "int64_param"],
)
def test_priority_is_read_from_uint64_or_int64_param(value: pb.InferParameter) -> None:
    decoded = codec.decode_infer_request(request(parameters={"priority": value}))
    assert decoded.priority == 3


def test_timeout_and_defaults() -> None:
    plain = codec.decode_infer_request(request())
    assert (plain.priority, plain.timeout_us) == (0, 0)
    timed = codec.decode_infer_request(
        request(
            parameters={
                "timeout": pb.InferParameter(int64_param=250_000),
                "priority": pb.InferParameter(uint64_param=2**64 - 1),
            }
        )
    )
    assert timed.timeout_us == 250_000
    assert timed.priority == 2**64 - 1


def test_request_fields_inputs_order_and_requested_outputs_are_kept() -> None:
    raw = [np.zeros(1, np.float32).tobytes(), np.ones(1, np.int32).tobytes()]
    decoded = codec.decode_infer_request(
        request([tensor("second", "FP32", [1]), tensor("first", "INT32", [1])], raw, ["z", "a"])
    )
    assert (decoded.model_name, decoded.model_version, decoded.id) == ("m", "2", "req-1")
    assert list(decoded.inputs) == ["second", "first"]
    assert decoded.requested_outputs == ("z", "a")


def test_no_requested_outputs_means_all() -> None:
    assert codec.decode_infer_request(request()).requested_outputs == ()


# --------------------------------------------------------------------------------------------
# Responses
# --------------------------------------------------------------------------------------------


def test_encode_response_keeps_output_order_datatype_shape_and_raw_bytes() -> None:
    outputs = {
        "z_scores": np.array([[1.5, -2.0]], dtype=np.float32),
        "a_ids": np.array([7, 8, 9], dtype=np.int64),
        "flags": np.array([True, False]),
        "half": np.array([0.5], dtype=np.float16),
        "brain": np.array([[1.0], [2.0]], dtype=ml_dtypes.bfloat16),
        "scalar": np.array(3, dtype=np.uint8),
    }
    response = encode("model", "3", "id-9", outputs)
    assert (response.model_name, response.model_version, response.id) == ("model", "3", "id-9")
    assert [t.name for t in response.outputs] == list(outputs)
    assert [t.datatype for t in response.outputs] == [
        "FP32",
        "INT64",
        "BOOL",
        "FP16",
        "BF16",
        "UINT8",
    ]
    assert [list(t.shape) for t in response.outputs] == [[1, 2], [3], [2], [1], [2, 1], []]
    assert list(response.raw_output_contents) == [a.tobytes() for a in outputs.values()]
    assert all(not t.HasField("contents") for t in response.outputs)


def test_encode_response_writes_non_contiguous_arrays_row_major() -> None:
    transposed = np.arange(6, dtype=np.int32).reshape(2, 3).T
    response = encode("m", "1", "", {"t": transposed})
    assert list(response.outputs[0].shape) == [3, 2]
    assert response.raw_output_contents[0] == np.ascontiguousarray(transposed).tobytes()


def test_encode_response_bytes_from_str_and_bytes_elements() -> None:
    mixed = np.array([["caf\u00e9", b"\x00\xff"], ["", b""]], dtype=object)
    response = encode("m", "1", "", {"text": mixed})
    assert response.outputs[0].datatype == "BYTES"
    assert list(response.outputs[0].shape) == [2, 2]
    assert response.raw_output_contents[0] == length_prefixed(
        ["caf\u00e9".encode(), b"\x00\xff", b"", b""]
    )


@pytest.mark.parametrize(
    "array",
    [np.array(["ab", "\u00e9"]), np.array([b"ab", b"c"])],
    ids=["unicode", "fixed-bytes"],
)
def test_encode_response_numpy_string_arrays_are_bytes(array: np.ndarray) -> None:
    response = encode("m", "1", "", {"s": array})
    assert response.outputs[0].datatype == "BYTES"
    expected = [item.encode() if isinstance(item, str) else bytes(item) for item in array]
    assert response.raw_output_contents[0] == length_prefixed(expected)


def test_encoded_bytes_output_decodes_back() -> None:
    values = np.array([b"x" * 300, b"", "\u00fc".encode()], dtype=object)
    raw = encode("m", "1", "", {"t": values}).raw_output_contents[0]
    np.testing.assert_array_equal(codec.decode_raw("t", BYTES, (3,), raw), values)


def test_encode_response_of_an_unknown_dtype_raises_value_error() -> None:
    with pytest.raises(ValueError, match="complex64"):
        encode("m", "1", "", {"c": np.zeros(1, dtype=np.complex64)})
