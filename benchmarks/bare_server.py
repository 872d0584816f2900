"""The Python front-end ceiling: a bare v2 server that answers ModelInfer with a fixed tensor,
running no model, no batching and no validation, on either of grpc's Python transports.

    .venv/bin/python -m benchmarks.bare_server serve [--grpc-port 0] [--transport aio|sync]
        [--threads N] [--handler-work-us US]

`aio` is grpc.aio (one event loop); `sync` is grpc.server with a pool of `--threads` handler
threads. `--handler-work-us` makes every ModelInfer spend that long in Python code, holding the
GIL, as a real server's own work does (tensorgate's is ~130 us a call: benchmarks/request_path.py):
it shows whether a transport that wins with an empty handler still wins with a busy one.

It serves one model, "tabular_classifier", with the metadata and config perf_analyzer
asks for, and prints "listening for gRPC on HOST:PORT" like tensorgate, so the same harness
drives it.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np

from server._proto import grpc_service_pb2 as pb
from server._proto import grpc_service_pb2_grpc as pb_grpc
from server._proto import model_config_pb2 as mc

MODEL = "tabular_classifier"
_PROBABILITIES = np.full((1, 3), 1 / 3, dtype=np.float32).tobytes()
_LABEL = np.zeros(1, dtype=np.int64).tobytes()
HANDLER_WORK_S = 0.0  # --handler-work-us


def python_work() -> None:
    """Run Python bytecode (holding the GIL) for HANDLER_WORK_S."""
    if HANDLER_WORK_S:
        end = time.perf_counter() + HANDLER_WORK_S
        while time.perf_counter() < end:
            pass


def model_metadata() -> pb.ModelMetadataResponse:
    tensor = pb.ModelMetadataResponse.TensorMetadata
    return pb.ModelMetadataResponse(
        name=MODEL,
        versions=["1"],
        platform="onnxruntime_onnx",
        inputs=[tensor(name="features", datatype="FP32", shape=[-1, 16])],
        outputs=[
            tensor(name="probabilities", datatype="FP32", shape=[-1, 3]),
            tensor(name="label", datatype="INT64", shape=[-1]),
        ],
    )


def model_config() -> pb.ModelConfigResponse:
    config = mc.ModelConfig(name=MODEL, platform="onnxruntime_onnx", max_batch_size=32)
    config.input.add(name="features", data_type=mc.TYPE_FP32, dims=[16])
    config.output.add(name="probabilities", data_type=mc.TYPE_FP32, dims=[3])
    config.output.add(name="label", data_type=mc.TYPE_INT64, dims=[])
    return pb.ModelConfigResponse(config=config)


def fixed_answer(request: pb.ModelInferRequest) -> pb.ModelInferResponse:
    python_work()
    tensor = pb.ModelInferResponse.InferOutputTensor
    return pb.ModelInferResponse(
        model_name=MODEL,
        model_version="1",
        id=request.id,
        outputs=[
            tensor(name="probabilities", datatype="FP32", shape=[1, 3]),
            tensor(name="label", datatype="INT64", shape=[1]),
        ],
        raw_output_contents=[_PROBABILITIES, _LABEL],
    )


class BareServicer(pb_grpc.GRPCInferenceServiceServicer):
    """grpc.aio handlers."""

    async def ServerLive(self, request, context):
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request, context):
        return pb.ServerReadyResponse(ready=True)

    async def ServerMetadata(self, request, context):
        return pb.ServerMetadataResponse(name="bare", version="0")

    async def ModelMetadata(self, request, context):
        return model_metadata()

    async def ModelConfig(self, request, context):
        return model_config()

    async def ModelInfer(self, request, context):
        return fixed_answer(request)


class SyncBareServicer(pb_grpc.GRPCInferenceServiceServicer):
    """The same handlers for grpc's synchronous, thread-per-call server."""

    def ServerLive(self, request, context):
        return pb.ServerLiveResponse(live=True)

    def ServerReady(self, request, context):
        return pb.ServerReadyResponse(ready=True)

    def ServerMetadata(self, request, context):
        return pb.ServerMetadataResponse(name="bare", version="0")

    def ModelMetadata(self, request, context):
        return model_metadata()

    def ModelConfig(self, request, context):
        return model_config()

    def ModelInfer(self, request, context):
        return fixed_answer(request)


async def serve(host: str, port: int, servicer: BareServicer | None = None) -> None:
    """Serve `servicer` (the fixed-answer one by default) on grpc.aio until terminated."""
    server = grpc.aio.server()
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(servicer or BareServicer(), server)
    bound = server.add_insecure_port(f"{host}:{port}")
    await server.start()
    print(f"listening for gRPC on {host}:{bound}", flush=True)
    await server.wait_for_termination()


def serve_sync(host: str, port: int, threads: int, servicer: object | None = None) -> None:
    """Serve `servicer` on grpc's synchronous server with `threads` handler threads."""
    server = grpc.server(ThreadPoolExecutor(max_workers=threads))
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(servicer or SyncBareServicer(), server)
    bound = server.add_insecure_port(f"{host}:{port}")
    server.start()
    print(f"listening for gRPC on {host}:{bound}", flush=True)
    server.wait_for_termination()


def main() -> None:
    parser = argparse.ArgumentParser(description="bare v2 front-end ceiling")
    parser.add_argument("command", choices=["serve"])
    parser.add_argument("--grpc-host", default="127.0.0.1")
    parser.add_argument("--grpc-port", type=int, default=0)
    parser.add_argument("--transport", choices=["aio", "sync"], default="aio")
    parser.add_argument("--threads", type=int, default=2, help="sync: handler threads")
    parser.add_argument(
        "--handler-work-us", type=float, default=0, help="Python work per ModelInfer call"
    )
    args = parser.parse_args()
    global HANDLER_WORK_S
    HANDLER_WORK_S = args.handler_work_us / 1e6
    if args.transport == "sync":
        serve_sync(args.grpc_host, args.grpc_port, args.threads)
    else:
        asyncio.run(serve(args.grpc_host, args.grpc_port))


if __name__ == "__main__":
    main()
