"""Seldon MLServer serving the bundled models with a small onnxruntime runtime.

    .tools/peers/mlserver/bin/python -m benchmarks.peers.mlserver_server --spec SPEC.json \
        [--parallel-workers 0|1] [--adaptive-batching]

Runs the way `mlserver start` does (uvloop event loop, one MLServer instance), with the settings
a production user would pick: access logs (`debug`) and the Prometheus interceptor off.
`--parallel-workers 0` runs inference on the gRPC event loop; 1 (MLServer's default) runs it in
one worker process. `--adaptive-batching` sets each model's `max_batch_size` to the bundled
config's and `max_batch_time` to its queue delay (at least 500 us: MLServer does not batch with a
zero wait). The ModelConfig RPC (and REST endpoint) that perf_analyzer needs comes from
benchmarks/peers/shim.py.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile

from mlserver import MLModel, MLServer
from mlserver.codecs import NumpyCodec
from mlserver.settings import ModelParameters, ModelSettings, Settings
from mlserver.types import InferenceRequest, InferenceResponse, MetadataTensor
from mlserver.utils import install_uvloop_event_loop

from benchmarks.peers import shim
from benchmarks.peers.common import ModelSpec, announce, free_port, load_spec

MIN_BATCH_TIME_S = 0.0005


class OnnxRuntimeModel(MLModel):
    """A custom MLServer runtime: onnxruntime on the CPU, NumpyCodec in and out."""

    async def load(self) -> bool:
        import onnxruntime as ort

        self._session = ort.InferenceSession(
            self.settings.parameters.uri, providers=["CPUExecutionProvider"]
        )
        self._output_names = [output.name for output in self._session.get_outputs()]
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        feeds = {item.name: NumpyCodec.decode_input(item) for item in payload.inputs}
        results = self._session.run(self._output_names, feeds)
        return InferenceResponse(
            model_name=self.name,
            outputs=[
                NumpyCodec.encode_output(name, value)
                for name, value in zip(self._output_names, results, strict=True)
            ],
        )


def model_settings(spec: ModelSpec, adaptive_batching: bool) -> ModelSettings:
    def metadata(tensors):
        return [MetadataTensor(name=t.name, datatype=t.datatype, shape=t.shape) for t in tensors]

    batching = {}
    if adaptive_batching:
        batching = {
            "max_batch_size": spec.max_batch_size,
            "max_batch_time": max(spec.max_queue_delay_us / 1e6, MIN_BATCH_TIME_S),
        }
    return ModelSettings(
        name=spec.name,
        implementation=OnnxRuntimeModel,
        parameters=ModelParameters(uri=spec.onnx_path, version="1"),
        inputs=metadata(spec.inputs),
        outputs=metadata(spec.outputs),
        **batching,
    )


async def serve(args: argparse.Namespace) -> None:
    specs = load_spec(args.spec)
    shim.install({name: spec.model_config_response for name, spec in specs.items()})
    shim.install_rest({name: spec.model_config_json for name, spec in specs.items()})
    scratch = tempfile.mkdtemp(prefix="mlserver-peer-")
    http_port = free_port(args.grpc_host)
    announce(args.grpc_host, http_port, "HTTP")  # the harness polls it until it is ready
    settings = Settings(
        debug=False,
        host=args.grpc_host,
        grpc_port=args.grpc_port,
        http_port=http_port,
        metrics_endpoint=None,
        metrics_dir=scratch,
        parallel_workers=args.parallel_workers,
        load_models_at_startup=False,
        model_repository_root=scratch,
    )
    server = MLServer(settings)
    await server.start([model_settings(spec, args.adaptive_batching) for spec in specs.values()])


def main() -> None:
    parser = argparse.ArgumentParser(description="MLServer peer for benchmarks/compare.py")
    parser.add_argument("--spec", required=True)
    parser.add_argument("--grpc-host", default="127.0.0.1")
    parser.add_argument("--grpc-port", type=int, default=0)
    parser.add_argument("--parallel-workers", type=int, default=0)
    parser.add_argument("--adaptive-batching", action="store_true")
    args = parser.parse_args()
    install_uvloop_event_loop()
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
