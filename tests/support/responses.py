"""Encoding outputs the way the gRPC front end does, for tests that start from arrays."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from server._proto import grpc_service_pb2 as pb
from server.dataplane.inference import InferenceResult, SharedMemoryLocation
from server.dataplane.shared_memory import SharedMemoryRegistry
from server.grpc_api import codec


def encode(
    model: str,
    version: str,
    request_id: str,
    outputs: Mapping[str, np.ndarray],
    shared_memory_outputs: Mapping[str, SharedMemoryLocation] | None = None,
    shared_memory: SharedMemoryRegistry | None = None,
) -> pb.ModelInferResponse:
    result = InferenceResult(
        model, version, request_id, dict(outputs), dict(shared_memory_outputs or {})
    )
    return codec.encode_infer_response(result, shared_memory)
