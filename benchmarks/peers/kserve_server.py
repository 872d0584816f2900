"""The KServe Python model server (kserve.ModelServer) serving the bundled models with
onnxruntime.

    .tools/peers/kserve/bin/python -m benchmarks.peers.kserve_server --spec SPEC.json

One `kserve.Model` per bundled model, predicting synchronously on the server's event loop as
KServe's own runtimes do; inputs via `InferInput.as_numpy()`, outputs as raw binary
(`set_data_from_numpy`). KServe's Python server has no batching of its own (batching is the
job of its agent sidecar in a cluster). Per-request INFO logging (a "grpc method" line for every
RPC and a latency line for every prediction, both on by default) is turned off, as a
latency-minded user would. The gRPC port is bound to loopback, and the ModelConfig RPC (and REST
endpoint) that perf_analyzer needs comes from benchmarks/peers/shim.py.
"""

from __future__ import annotations

import argparse
import logging
import sys

from benchmarks.peers import shim
from benchmarks.peers.common import ModelSpec, announce, free_port, load_spec


def main() -> None:
    parser = argparse.ArgumentParser(description="KServe peer for benchmarks/compare.py")
    parser.add_argument("--spec", required=True)
    parser.add_argument("--grpc-host", default="127.0.0.1")
    parser.add_argument("--grpc-port", type=int, default=0)
    args = parser.parse_args()
    # kserve.model_server parses sys.argv when imported: give it none of ours.
    sys.argv = sys.argv[:1]

    import kserve
    import onnxruntime as ort
    from kserve import InferRequest, InferResponse
    from kserve.protocol.infer_type import InferOutput

    class OnnxRuntimeModel(kserve.Model):
        def __init__(self, spec: ModelSpec) -> None:
            super().__init__(spec.name)
            self.spec = spec
            self.load()

        def load(self) -> bool:
            self._session = ort.InferenceSession(
                self.spec.onnx_path, providers=["CPUExecutionProvider"]
            )
            self._output_names = [output.name for output in self._session.get_outputs()]
            self.ready = True
            return self.ready

        def get_input_types(self) -> list[dict]:
            return [vars(t) for t in self.spec.inputs]

        def get_output_types(self) -> list[dict]:
            return [vars(t) for t in self.spec.outputs]

        def predict(self, payload: InferRequest, headers=None) -> InferResponse:
            feeds = {item.name: item.as_numpy() for item in payload.inputs}
            results = self._session.run(self._output_names, feeds)
            outputs = []
            for name, value in zip(self._output_names, results, strict=True):
                datatype = next(t.datatype for t in self.spec.outputs if t.name == name)
                output = InferOutput(name=name, shape=list(value.shape), datatype=datatype)
                output.set_data_from_numpy(value)
                outputs.append(output)
            return InferResponse(
                response_id=payload.id or "",
                model_name=self.name,
                infer_outputs=outputs,
            )

    specs = load_spec(args.spec)
    # KServe binds gRPC on [::]; the shim rebinds it to the loopback host given here.
    shim.install(
        {name: spec.model_config_response for name, spec in specs.items()},
        bind_host=args.grpc_host,
    )
    shim.install_rest({name: spec.model_config_json for name, spec in specs.items()})
    models = [OnnxRuntimeModel(spec) for spec in specs.values()]
    http_port = free_port(args.grpc_host)
    announce(args.grpc_host, http_port, "HTTP")  # the harness polls it until it is ready
    server = kserve.ModelServer(
        http_port=http_port,
        grpc_port=args.grpc_port,
        enable_latency_logging=False,
    )
    for name in ("kserve", "kserve.trace", "uvicorn.access"):
        logging.getLogger(name).setLevel(logging.WARNING)
    server.start(models)


if __name__ == "__main__":
    main()
