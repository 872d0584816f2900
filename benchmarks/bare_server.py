"""The Python front-end ceiling: a bare grpc.aio v2 server that answers ModelInfer with a fixed
tensor, running no model, no batching and no validation.

    .venv/bin/python -m benchmarks.bare_server serve [--grpc-port 0]

It serves one model, "tabular_classifier", with the metadata and config perf_analyzer asks for,
and prints "listening for gRPC on HOST:PORT" like tensorgate, so the same harness drives it.
"""

from __future__ import annotations

import argparse
import asyncio

import grpc
import numpy as np

from server._proto import grpc_service_pb2 as pb
from server._proto import grpc_service_pb2_grpc as pb_grpc
from server._proto import model_config_pb2 as mc

MODEL = "tabular_classifier"
_PROBABILITIES = np.full((1, 3), 1 / 3, dtype=np.float32).tobytes()
_LABEL = np.zeros(1, dtype=np.int64).tobytes()


class BareServicer(pb_grpc.GRPCInferenceServiceServicer):
    async def ServerLive(self, request, context):
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request, context):
        return pb.ServerReadyResponse(ready=True)

    async def ServerMetadata(self, request, context):
        return pb.ServerMetadataResponse(name="bare", version="0")

    async def ModelMetadata(self, request, context):
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

    async def ModelConfig(self, request, context):
        config = mc.ModelConfig(name=MODEL, platform="onnxruntime_onnx", max_batch_size=32)
        config.input.add(name="features", data_type=mc.TYPE_FP32, dims=[16])
        config.output.add(name="probabilities", data_type=mc.TYPE_FP32, dims=[3])
        config.output.add(name="label", data_type=mc.TYPE_INT64, dims=[])
        return pb.ModelConfigResponse(config=config)

    async def ModelInfer(self, request, context):
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


async def serve(host: str, port: int, servicer: BareServicer | None = None) -> None:
    """Serve `servicer` (the fixed-answer one by default) until terminated."""
    server = grpc.aio.server()
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(servicer or BareServicer(), server)
    bound = server.add_insecure_port(f"{host}:{port}")
    await server.start()
    print(f"listening for gRPC on {host}:{bound}", flush=True)
    await server.wait_for_termination()


def main() -> None:
    parser = argparse.ArgumentParser(description="bare grpc.aio v2 front-end ceiling")
    parser.add_argument("command", choices=["serve"])
    parser.add_argument("--grpc-host", default="127.0.0.1")
    parser.add_argument("--grpc-port", type=int, default=0)
    args = parser.parse_args()
    asyncio.run(serve(args.grpc_host, args.grpc_port))


if __name__ == "__main__":
    main()
