"""The cost of tensorgate's own request path, in process: no gRPC, no client, no other load.

    .venv/bin/python -m benchmarks.request_path [--requests 5000] [--repeats 5] [--gap-us 1000]

One tabular_classifier request (1 row) goes through what ModelInfer does between receiving the
message and returning the response: decode, resolve, validate, batcher (an idle instance: it
runs at once), onnxruntime, split, statistics and metrics, encode. It reports the best of
`repeats` timings (microseconds per request), onnxruntime's own share measured alone, and the
Python function calls per request, which, unlike time, do not move with the load of a shared
machine: the number to watch when trimming the path.

A tight loop keeps the path in the CPU's caches, which a live server never has: between two of
its requests other threads (grpc's, the client's) and, on a shared VM, other guests run. So the
path is also timed after `gap-us` of idling before each request (thread CPU time, the median of
interleaved rounds), beside the bare handler of benchmarks/front_end_floor.py (view the inputs,
call the runtime, build the response) and onnxruntime alone. On the 2-core VM the idle figures,
not the tight-loop ones, match what the live server pays (benchmarks/README.md, 2026-12-04).
"""

from __future__ import annotations

import argparse
import cProfile
import logging
import pstats
import statistics
import time
from collections.abc import Callable

import numpy as np

from benchmarks.front_end_floor import bare_handler
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


def idle_us(runs: dict[str, Callable[[], object]], gap_s: float, rounds: int) -> dict[str, float]:
    """Thread CPU microseconds per request when each request follows `gap_s` of idling: the
    median over `rounds`, the callables interleaved so that a busy moment falls on all."""
    per_round: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            spent = 0
            for _ in range(50):
                time.sleep(gap_s)
                started = time.thread_time_ns()
                run()
                spent += time.thread_time_ns() - started
            per_round[name].append(spent / 50 / 1000)
    return {name: statistics.median(values) for name, values in per_round.items()}


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
    parser.add_argument("--gap-us", type=int, default=1000, help="idling before each request")
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds of 50 idle runs")
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
        runs: dict[str, Callable[[], object]] = {
            "request path": request,
            "bare handler": lambda: bare_handler(server.registry, message),
            "onnxruntime alone": lambda: instance.infer(features, names),
        }
        warm = {name: best_us(run, args.requests, args.repeats) for name, run in runs.items()}
        idle = idle_us(runs, args.gap_us / 1e6, args.rounds)
        calls = calls_per_request(request, 1000)
    finally:
        server.stop(grace_s=1)
    print(f"| us per request | tight loop | after {args.gap_us} us idle |")
    print("|---|---:|---:|")
    for name in runs:
        print(f"| {name} | {warm[name]:.1f} | {idle[name]:.1f} |")
    print(
        f"request path minus bare handler: {warm['request path'] - warm['bare handler']:.1f} us "
        f"in a tight loop, {idle['request path'] - idle['bare handler']:.1f} us after idling; "
        f"{calls:.0f} Python calls per request"
    )


if __name__ == "__main__":
    main()
