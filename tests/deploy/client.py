"""A v2 client on tensorgate's own stubs (server._proto), so the tests set every channel option.

tritonclient registers the same protobuf symbols, so this package runs in its own pytest
process (scripts/test.sh) and never imports it.
"""

from __future__ import annotations

import json

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from server._proto import grpc_service_pb2 as pb
from server._proto import grpc_service_pb2_grpc as pb_grpc

MODEL = "tabular_classifier"  # bundled: features FP32 [-1, 16] -> probabilities, label
INFERENCE_SERVICE = "inference.GRPCInferenceService"


def infer_request(rows: int = 1, seed: int = 0) -> pb.ModelInferRequest:
    features = np.random.default_rng(seed).random((rows, 16), dtype=np.float32)
    return pb.ModelInferRequest(
        model_name=MODEL,
        inputs=[
            pb.ModelInferRequest.InferInputTensor(
                name="features", datatype="FP32", shape=[rows, 16]
            )
        ],
        raw_input_contents=[features.tobytes()],
    )


def service_config(*, round_robin: bool, retry_attempts: int = 5) -> str:
    """The gRPC service config a client of a tensorgate fleet should use (deploy/README.md):

    - round_robin over every address it resolves (a headless Service's pods);
    - client-side health checking: a replica whose grpc.health.v1 status turns NOT_SERVING (it
      got SIGTERM) leaves the pick list at once;
    - ModelInfer retried on UNAVAILABLE, which a draining replica answers ("server is shutting
      down") and a client gets when a connection goes away. A refused call never ran, so the
      retry is safe.
    """
    config: dict[str, object] = {
        "methodConfig": [
            {
                "name": [{"service": INFERENCE_SERVICE}],
                "retryPolicy": {
                    "maxAttempts": retry_attempts,
                    "initialBackoff": "0.05s",
                    "maxBackoff": "1s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ],
        "healthCheckConfig": {"serviceName": ""},
    }
    if round_robin:
        config["loadBalancingConfig"] = [{"round_robin": {}}]
    return json.dumps(config)


def channel_options(config: str) -> list[tuple[str, object]]:
    return [
        ("grpc.service_config", config),
        ("grpc.enable_retries", 1),
        # Reconnect to a restarted replica within a second, not after minutes of backoff.
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.min_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 1000),
    ]


def success_count(address: str, timeout_s: float = 10.0) -> int:
    """How many ModelInfer calls the replica at `address` has answered successfully."""
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        response = stub.ModelStatistics(
            pb.ModelStatisticsRequest(name=MODEL), timeout=timeout_s, wait_for_ready=True
        )
    return sum(s.inference_stats.success.count for s in response.model_stats)


def health_status(address: str, service: str = "", timeout_s: float = 5.0) -> str:
    with grpc.insecure_channel(address) as channel:
        response = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=timeout_s
        )
    return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)


def wait_ready(address: str, timeout_s: float = 30.0) -> None:
    with grpc.insecure_channel(address) as channel:
        grpc.channel_ready_future(channel).result(timeout=timeout_s)
