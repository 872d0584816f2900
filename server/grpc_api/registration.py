"""Registers the inference service with deserializers that never raise.

The generated registration lets a protobuf DecodeError escape from deserialisation, which grpc
answers UNKNOWN and logs as a traceback: any client could fill the log with garbage. Here an
undecodable message becomes an `Undecodable` marker that the servicer answers INVALID_ARGUMENT.
"""

from __future__ import annotations

from collections.abc import Callable

import grpc
from google.protobuf.message import DecodeError, Message

from server._proto import grpc_service_pb2 as pb
from server.grpc_api import wire

SERVICE = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]


class Undecodable:
    """Stands in for a request whose bytes are not a valid message of the expected type."""

    __slots__ = ("message_type",)

    def __init__(self, message_type: str) -> None:
        self.message_type = message_type


def _tolerant(
    message_class: type[Message], parse: Callable[[bytes], object] | None = None
) -> Callable[[bytes], object]:
    parse = parse or message_class.FromString

    def deserialize(data: bytes) -> object:
        try:
            return parse(data)
        except DecodeError:
            return Undecodable(message_class.DESCRIPTOR.full_name)

    return deserialize


def add_inference_service(servicer: object, server: grpc.Server) -> None:
    handlers = {}
    for method in SERVICE.methods:
        request_class = getattr(pb, method.input_type.name)
        response_class = getattr(pb, method.output_type.name)
        make = (
            grpc.stream_stream_rpc_method_handler
            if method.client_streaming
            else grpc.unary_unary_rpc_method_handler
        )
        big = method.name == "ModelInfer"  # big tensors skip protobuf's copies (wire.py)
        handlers[method.name] = make(
            getattr(servicer, method.name),
            request_deserializer=_tolerant(
                request_class, wire.parse_infer_request if big else None
            ),
            response_serializer=(
                wire.serialize_infer_response if big else response_class.SerializeToString
            ),
        )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE.full_name, handlers),)
    )
    server.add_registered_method_handlers(SERVICE.full_name, handlers)
