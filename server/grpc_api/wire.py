"""Big inference messages without protobuf's copies of their tensor bytes.

Parsing a ModelInferRequest copies every raw input into the message, and reading the field
copies it again; building a response copies each output into the message and serialising copies
the whole message once more. For a 64 MiB tensor that made a request cost 3x its size in server
memory, and an identity model 8x (issue 21; `benchmarks/tensor_memory.py` has the figures).
For messages of at least `SPLIT_FROM_BYTES`, this module works on the wire format instead:

* a request's raw_input_contents (field 7) become views into the bytes grpc received; the rest
  of the message (names, shapes, parameters: small) is parsed by protobuf as usual;
* a response is its small part serialised by protobuf, followed by each raw_output_contents
  entry (field 6) written once, straight from the output array, into the bytes grpc sends.

Both are the protobuf encoding of the same message (fields may come in any order, and repeated
fields concatenate), so clients see no difference. Smaller messages take protobuf's path, which is
faster for them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from server._proto import grpc_service_pb2 as pb
from server.heap import BIG_MESSAGE_BYTES, release_free_memory

SPLIT_FROM_BYTES: Final = BIG_MESSAGE_BYTES
RAW_INPUT_FIELD: Final = 7  # ModelInferRequest.raw_input_contents
RAW_OUTPUT_TAG: Final = bytes(
    [6 << 3 | 2]
)  # ModelInferResponse.raw_output_contents, length-delimited
# A request with more top-level fields than this is parsed by protobuf (in C): scanning millions
# of tiny fields in Python would let one message hold a thread for seconds.
MAX_SCANNED_FIELDS: Final = 4096


class SplitRequest:
    """A big ModelInferRequest: the message without raw inputs, and views of the raw inputs."""

    __slots__ = ("byte_size", "message", "raw_inputs")

    def __init__(
        self, message: pb.ModelInferRequest, raw_inputs: list[memoryview], byte_size: int
    ) -> None:
        self.message = message
        self.raw_inputs: list[memoryview] | None = raw_inputs
        self.byte_size = byte_size  # of the whole message as received

    def take_raw_inputs(self) -> list[memoryview]:
        """The views, once: after this the request no longer keeps the received bytes alive
        (grpc holds it until the answer is sent)."""
        raw, self.raw_inputs = self.raw_inputs, None
        assert raw is not None, "raw inputs taken twice"
        return raw


class SplitResponse:
    """A big ModelInferResponse: the message without raw outputs, and the raw outputs."""

    __slots__ = ("message", "raw_outputs")

    def __init__(
        self, message: pb.ModelInferResponse, raw_outputs: Sequence[bytes | memoryview]
    ) -> None:
        self.message = message
        self.raw_outputs: Sequence[bytes | memoryview] | None = raw_outputs

    def byte_size(self) -> int:
        assert self.raw_outputs is not None
        head: int = self.message.ByteSize()
        return head + sum(
            len(RAW_OUTPUT_TAG) + len(_varint(len(raw))) + len(raw) for raw in self.raw_outputs
        )

    def serialize(self) -> bytes:
        """The whole message, each output copied once; the outputs are let go of after."""
        raw_outputs, self.raw_outputs = self.raw_outputs, None
        assert raw_outputs is not None, "serialized twice"
        parts: list[bytes | memoryview] = [self.message.SerializeToString()]
        for raw in raw_outputs:
            parts += (RAW_OUTPUT_TAG, _varint(len(raw)), raw)
        return b"".join(parts)


def serialize_infer_response(response: pb.ModelInferResponse | SplitResponse) -> bytes:
    if isinstance(response, SplitResponse):
        return response.serialize()
    serialized: bytes = response.SerializeToString()
    return serialized


def parse_infer_request(data: bytes) -> pb.ModelInferRequest | SplitRequest:
    """Protobuf's parse for a small message; a SplitRequest for a big one. Raises DecodeError
    for bytes that are not a ModelInferRequest, as protobuf does."""
    split = _split_raw_inputs(data) if len(data) >= SPLIT_FROM_BYTES else None
    if split is None:  # small; or not well-formed at the top level, or too many fields
        message: pb.ModelInferRequest = pb.ModelInferRequest.FromString(data)
        return message
    release_free_memory()  # the pages of grpc's receive chunks, freed just before this call
    rest, raw_inputs = split
    return SplitRequest(pb.ModelInferRequest.FromString(rest), raw_inputs, len(data))


def _split_raw_inputs(data: bytes) -> tuple[bytes, list[memoryview]] | None:
    """Views of each top-level field 7 and the other fields' bytes joined, or None."""
    view = memoryview(data)
    size = len(data)
    kept: list[memoryview] = []
    raw_inputs: list[memoryview] = []
    position = 0
    for _ in range(MAX_SCANNED_FIELDS):
        if position == size:
            return b"".join(kept), raw_inputs
        start = position
        tag, position = _read_varint(data, position)
        wire_type = tag & 7
        if wire_type == 0:
            _, position = _read_varint(data, position)
        elif wire_type == 1:
            position += 8
        elif wire_type == 5:
            position += 4
        elif wire_type == 2:
            length, position = _read_varint(data, position)
            if length < 0 or position + length > size:
                return None
            if tag >> 3 == RAW_INPUT_FIELD:
                raw_inputs.append(view[position : position + length])
                position += length
                continue
            position += length
        else:
            return None  # groups, or garbage
        if position > size:
            return None
        kept.append(view[start:position])
    return None


def _read_varint(data: bytes, position: int) -> tuple[int, int]:
    value = shift = 0
    size = len(data)
    while position < size and shift < 64:
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, position
        shift += 7
    return -1, len(data) + 1  # truncated or too long: the caller sees position past the end


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)
