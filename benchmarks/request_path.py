"""The cost of tensorgate's own request path, in process: no gRPC, no client, no other load.

    .venv/bin/python -m benchmarks.request_path [--requests 5000] [--repeats 5]

One tabular_classifier request (1 row) goes through what ModelInfer does between receiving the
message and returning the response: decode, resolve, validate, batcher (an idle instance: it
runs at once), onnxruntime, split, statistics and metrics, encode. It reports the best of
`repeats` timings (microseconds per request), onnxruntime's own share measured alone, and the
Python function calls per request, which, unlike time, do not move with the load of a shared
machine: the number to watch when trimming the path.
"""

from __future__ import annotations

import argparse
import cProfile
import logging
import pstats
import time
from collections.abc import Callable

import numpy as np

from server._proto import grpc_service_pb2 as pb
from server.app import TensorgateServer
from server.dataplane.inference import Call
from server.grpc_api import codec
from server.settings import ServerSettings

MODEL = "tabular_classifier"


def best_us(run: Callable[[], object], requests: int, repeats: int) -> float:
    for _ in range(200):
        run()
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(requests):
            run()
        best = min(best, (time.perf_counter() - started) / requests * 1e6)
    return best


def calls_per_request(run: Callable[[], object], requests: int) -> float:
    profile = cProfile.Profile()
    profile.enable()
    for _ in range(requests):
        run()
    profile.disable()
    return pstats.Stats(profile).total_calls / requests  # type: ignore[attr-defined]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    server = TensorgateServer(ServerSettings(grpc_host="127.0.0.1", grpc_port=0, metrics_port=0))
    server.start()
    try:
        message = pb.ModelInferRequest(model_name=MODEL)
        message.inputs.add(name="features", datatype="FP32", shape=[1, 16])
        message.raw_input_contents.append(np.zeros(16, np.float32).tobytes())
        plane = server.plane

        def request() -> object:
            return plane.infer(
                MODEL,
                "",
                "",
                lambda: codec.decode_infer_request(message),
                codec.encode_infer_response,
                Call(),
            )

        instance = server.registry.resolve(MODEL).instances[0]
        features = {"features": np.zeros((1, 16), np.float32)}
        names = ["probabilities", "label"]
        path_us = best_us(request, args.requests, args.repeats)
        runtime_us = best_us(lambda: instance.infer(features, names), args.requests, args.repeats)
        calls = calls_per_request(request, 1000)
    finally:
        server.stop(grace_s=1)
    print(
        f"request path: {path_us:.1f} us per request (onnxruntime alone {runtime_us:.1f} us; "
        f"tensorgate's own {path_us - runtime_us:.1f} us); {calls:.0f} Python calls per request"
    )


if __name__ == "__main__":
    main()
