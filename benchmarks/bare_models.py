"""The bare grpc.aio front-end ceiling for every bundled model, not only the tabular one.

    .venv/bin/python -m benchmarks.bare_models serve --spec SPEC.json [--grpc-port 0]

The handler of benchmarks/bare_server.py (no model, no batching, no validation: a fixed answer),
extended to the models in a spec written by benchmarks/compare.py: ModelMetadata and ModelConfig
answer as tensorgate does, and ModelInfer answers with zero-filled outputs of one row. A request
for image_classifier carries 48 KiB, so its front-end ceiling is not the tabular model's.
Prints "listening for gRPC on HOST:PORT" like tensorgate.

With --with-model, ModelInfer really runs the model: raw inputs viewed with numpy, one
onnxruntime `session.run` per request (the session defaults tensorgate uses), outputs encoded;
nothing else (no validation, batching, metrics or statistics). That is the floor of any server
that calls the model once per request from a Python event loop, so it separates what the model
call itself costs from what a server adds around it. `--transport sync [--threads N]` serves the
same handler from grpc's synchronous server instead (the transport tensorgate uses).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort

from benchmarks.bare_server import BareServicer, SyncBareServicer, serve, serve_sync
from server._proto import grpc_service_pb2 as pb

_DTYPES = {"FP32": np.float32, "INT64": np.int64, "INT32": np.int32, "FP64": np.float64}


class BareModelsServicer(BareServicer):
    def __init__(self, spec: dict) -> None:
        tensor = pb.ModelMetadataResponse.TensorMetadata
        self._metadata: dict[str, pb.ModelMetadataResponse] = {}
        self._configs: dict[str, pb.ModelConfigResponse] = {}
        self._outputs: dict[str, tuple[list, list[bytes]]] = {}
        for name, model in spec["models"].items():
            self._metadata[name] = pb.ModelMetadataResponse(
                name=name,
                versions=["1"],
                platform="onnxruntime_onnx",
                inputs=[tensor(**t) for t in model["inputs"]],
                outputs=[tensor(**t) for t in model["outputs"]],
            )
            config = pb.ModelConfigResponse()
            config.ParseFromString(base64.b64decode(model["model_config_response"]))
            self._configs[name] = config
            shapes = [[1, *t["shape"][1:]] for t in model["outputs"]]
            self._outputs[name] = (
                [
                    pb.ModelInferResponse.InferOutputTensor(
                        name=t["name"], datatype=t["datatype"], shape=shape
                    )
                    for t, shape in zip(model["outputs"], shapes, strict=True)
                ],
                [
                    np.zeros(shape, _DTYPES[t["datatype"]]).tobytes()
                    for t, shape in zip(model["outputs"], shapes, strict=True)
                ],
            )

    async def ModelMetadata(self, request, context):
        if request.name not in self._metadata:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown model {request.name}")
        return self._metadata[request.name]

    async def ModelConfig(self, request, context):
        if request.name not in self._configs:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown model {request.name}")
        return self._configs[request.name]

    async def ModelReady(self, request, context):
        return pb.ModelReadyResponse(ready=request.name in self._metadata)

    async def ModelInfer(self, request, context):
        outputs, contents = self._outputs[request.model_name]
        return pb.ModelInferResponse(
            model_name=request.model_name,
            model_version="1",
            id=request.id,
            outputs=outputs,
            raw_output_contents=contents,
        )


class ModelCallServicer(BareModelsServicer):
    """The bare handler plus the model call (see --with-model)."""

    def __init__(self, spec: dict) -> None:
        super().__init__(spec)
        options = ort.SessionOptions()
        options.log_severity_level = 3
        self._sessions = {
            name: ort.InferenceSession(
                model["onnx_path"], options, providers=["CPUExecutionProvider"]
            )
            for name, model in spec["models"].items()
        }
        # Looked up per request, so built once: output names and datatypes in the spec's order.
        self._output_specs = {
            name: ([t["name"] for t in model["outputs"]], [t["datatype"] for t in model["outputs"]])
            for name, model in spec["models"].items()
        }

    async def ModelInfer(self, request, context):
        return self.infer(request)

    def infer(self, request: pb.ModelInferRequest) -> pb.ModelInferResponse:
        session = self._sessions[request.model_name]
        names, datatypes = self._output_specs[request.model_name]
        feeds = {
            tensor.name: np.frombuffer(raw, _DTYPES[tensor.datatype]).reshape(tuple(tensor.shape))
            for tensor, raw in zip(request.inputs, request.raw_input_contents, strict=True)
        }
        response = pb.ModelInferResponse(
            model_name=request.model_name, model_version="1", id=request.id
        )
        values = session.run(names, feeds)
        for name, datatype, value in zip(names, datatypes, values, strict=True):
            response.outputs.add(name=name, datatype=datatype, shape=value.shape)
            response.raw_output_contents.append(value.tobytes())
        return response


class SyncModelCallServicer(SyncBareServicer):
    """The --with-model handler on grpc's synchronous server (--transport sync): the floor of
    any server that runs the model per request from grpc's thread pool."""

    def __init__(self, spec: dict) -> None:
        self._models = ModelCallServicer(spec)

    def ModelMetadata(self, request, context):
        if request.name not in self._models._metadata:
            context.abort(grpc.StatusCode.NOT_FOUND, f"unknown model {request.name}")
        return self._models._metadata[request.name]

    def ModelConfig(self, request, context):
        if request.name not in self._models._configs:
            context.abort(grpc.StatusCode.NOT_FOUND, f"unknown model {request.name}")
        return self._models._configs[request.name]

    def ModelReady(self, request, context):
        return pb.ModelReadyResponse(ready=request.name in self._models._metadata)

    def ModelInfer(self, request, context):
        return self._models.infer(request)


def main() -> None:
    parser = argparse.ArgumentParser(description="bare grpc.aio v2 ceiling for every model")
    parser.add_argument("command", choices=["serve"])
    parser.add_argument("--spec", required=True)
    parser.add_argument("--grpc-host", default="127.0.0.1")
    parser.add_argument("--grpc-port", type=int, default=0)
    parser.add_argument("--with-model", action="store_true", help="run the model per request")
    parser.add_argument("--transport", choices=["aio", "sync"], default="aio")
    parser.add_argument("--threads", type=int, default=2, help="sync: handler threads")
    args = parser.parse_args()
    spec = json.loads(Path(args.spec).read_text())
    if args.transport == "sync":
        if not args.with_model:
            parser.error("--transport sync is for --with-model")
        serve_sync(args.grpc_host, args.grpc_port, args.threads, SyncModelCallServicer(spec))
        return
    servicer = (ModelCallServicer if args.with_model else BareModelsServicer)(spec)
    asyncio.run(serve(args.grpc_host, args.grpc_port, servicer))


if __name__ == "__main__":
    main()
