"""The wire-level path for big inference messages reads and writes exactly protobuf's encoding."""

from __future__ import annotations

import numpy as np
import pytest
from google.protobuf.message import DecodeError

from runtimes.errors import TensorgateError
from server._proto import grpc_service_pb2 as pb
from server.dataplane.inflight import InflightBytes
from server.grpc_api import wire
from server.grpc_api.codec import decode_infer_request

BIG = wire.SPLIT_FROM_BYTES


def _request(*sizes: int) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="m", model_version="2", id="r-1")
    request.parameters["priority"].int64_param = 3
    for index, size in enumerate(sizes):
        request.inputs.add(name=f"in{index}", datatype="UINT8", shape=[size])
        request.raw_input_contents.append(bytes([index + 1]) * size)
    request.outputs.add(name="out")
    return request


def test_a_small_request_is_protobufs_own_message() -> None:
    data = _request(10).SerializeToString()
    assert isinstance(wire.parse_infer_request(data), pb.ModelInferRequest)


def test_a_big_request_becomes_views_of_the_received_bytes() -> None:
    original = _request(BIG, 3, BIG // 2)
    data = original.SerializeToString()
    split = wire.parse_infer_request(data)
    assert isinstance(split, wire.SplitRequest)
    assert split.byte_size == len(data)
    raw = split.take_raw_inputs()
    assert [bytes(view) for view in raw] == list(original.raw_input_contents)
    assert all(view.obj is data for view in raw)  # no copies
    assert split.raw_inputs is None  # taken once: the request lets go of the bytes
    expected = pb.ModelInferRequest()
    expected.CopyFrom(original)
    expected.ClearField("raw_input_contents")
    assert split.message == expected
    decoded = decode_infer_request(split.message, raw_contents=raw)
    assert decoded.inputs["in0"].shape == (BIG,) and decoded.inputs["in2"][0] == 3
    assert decoded.priority == 3


def test_raw_inputs_anywhere_in_the_message_are_found_in_order() -> None:
    # Fields may come in any order on the wire; a client may put the raw inputs first.
    raw_first = pb.ModelInferRequest(raw_input_contents=[b"a" * BIG, b"b"]).SerializeToString()
    rest = pb.ModelInferRequest(model_name="m", inputs=[{"name": "x"}]).SerializeToString()
    split = wire.parse_infer_request(raw_first + rest)
    assert isinstance(split, wire.SplitRequest)
    assert [bytes(view)[:1] for view in split.take_raw_inputs()] == [b"a", b"b"]
    assert split.message.model_name == "m" and split.message.inputs[0].name == "x"


@pytest.mark.parametrize(
    "data",
    [
        b"\x3a\xff\xff\xff\x7f" + b"x" * BIG,  # field 7 longer than the message
        b"\x0a" + b"\xff" * 11 + b"x" * BIG,  # a length varint that never ends
        b"\x0b" + b"x" * BIG,  # a group start tag
    ],
)
def test_bytes_that_are_not_a_message_fail_as_protobuf_fails(data: bytes) -> None:
    with pytest.raises(DecodeError):
        wire.parse_infer_request(data)


def test_many_small_fields_are_left_to_protobuf() -> None:
    request = pb.ModelInferRequest(model_name="m")
    for index in range(wire.MAX_SCANNED_FIELDS + 1):
        request.outputs.add(name=f"o{index}")
    request.raw_input_contents.append(b"z" * BIG)
    parsed = wire.parse_infer_request(request.SerializeToString())
    assert isinstance(parsed, pb.ModelInferRequest)  # not scanned field by field in Python
    assert parsed == request


def test_a_split_response_serialises_to_the_same_message() -> None:
    outputs = [np.arange(BIG // 4, dtype=np.float32), np.array([1, 2, 3], np.int64)]
    head = pb.ModelInferResponse(model_name="m", model_version="1", id="r")
    for index, array in enumerate(outputs):
        head.outputs.add(name=f"o{index}", datatype="FP32", shape=array.shape)
    views = [array.view(np.uint8).data for array in outputs] + [b""]
    split = wire.SplitResponse(head, views)
    size = split.byte_size()
    data = wire.serialize_infer_response(split)
    assert len(data) == size
    parsed = pb.ModelInferResponse.FromString(data)
    assert list(parsed.raw_output_contents) == [a.tobytes() for a in outputs] + [b""]
    assert parsed.outputs == head.outputs and parsed.id == "r"
    assert split.raw_outputs is None  # the outputs are let go of once written


def test_the_inflight_budget_refuses_what_would_not_fit_and_counts_nothing_for_it() -> None:
    budget = InflightBytes(100)
    budget.take(60)
    with pytest.raises(TensorgateError, match="--max-inflight-bytes; 60 held now"):
        budget.take(41)
    assert budget.held == 60
    budget.take(40)
    budget.give_back(60)
    budget.give_back(40)
    assert budget.held == 0
    with pytest.raises(TensorgateError):
        budget.take(101)  # never fits
    unlimited = InflightBytes(0)
    unlimited.take(1 << 40)
    assert unlimited.held == 1 << 40
