"""NVIDIA PyTriton serving the bundled models with onnxruntime behind Triton's dynamic batcher.

    .tools/peers/pytriton/bin/python -m benchmarks.peers.pytriton_server --spec SPEC.json

PyTriton runs the real Triton server (its C++ gRPC front end, ModelConfig included) and hands
each batch to a Python callable in this process. Every model is bound with `@batch` and Triton's
dynamic batcher configured as the bundled config.pbtxt says (the same `max_batch_size`,
`max_queue_delay_microseconds` and `preferred_batch_size`), one instance per model. Triton's
Python backend stub links against libpython, so LD_LIBRARY_PATH gets this interpreter's lib
directory before the server starts. HTTP (which PyTriton itself uses to load models), gRPC and
metrics listen on loopback only; metrics are off; the endpoint token is off so perf_analyzer may
read ModelStatistics as it does from tensorgate.
"""

from __future__ import annotations

import argparse
import os
import signal
import sysconfig
import threading

import numpy as np

from benchmarks.peers.common import ModelSpec, announce, free_port, load_spec


def _with_python_libdir() -> None:
    libdir = sysconfig.get_config_var("LIBDIR")
    current = os.environ.get("LD_LIBRARY_PATH", "")
    if libdir and libdir not in current.split(":"):
        os.environ["LD_LIBRARY_PATH"] = f"{libdir}:{current}" if current else libdir


def _infer_function(spec: ModelSpec):
    import onnxruntime as ort
    from pytriton.decorators import batch

    session = ort.InferenceSession(spec.onnx_path, providers=["CPUExecutionProvider"])
    output_names = [output.name for output in session.get_outputs()]

    @batch
    def infer(**inputs: np.ndarray) -> dict[str, np.ndarray]:
        results = session.run(output_names, inputs)
        return dict(zip(output_names, results, strict=True))

    return infer


def main() -> None:
    parser = argparse.ArgumentParser(description="PyTriton peer for benchmarks/compare.py")
    parser.add_argument("--spec", required=True)
    parser.add_argument("--grpc-host", default="127.0.0.1")
    parser.add_argument("--grpc-port", type=int, default=0)
    args = parser.parse_args()
    _with_python_libdir()

    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
    from pytriton.triton import Triton, TritonConfig, TritonSecurityConfig

    def tensors(items):
        # Triton needs dims for every tensor: one value per row ([-1] in v2 metadata) is [1].
        return [Tensor(name=t.name, dtype=t.dtype, shape=tuple(t.shape[1:]) or (1,)) for t in items]

    grpc_port = args.grpc_port or free_port(args.grpc_host)
    http_port = free_port(args.grpc_host)
    config = TritonConfig(
        http_address=args.grpc_host,
        http_port=http_port,
        grpc_address=args.grpc_host,
        grpc_port=grpc_port,
        allow_metrics=False,
        log_verbose=0,
    )
    triton = Triton(config=config, security_config=TritonSecurityConfig(restricted_endpoints=[]))
    for spec in load_spec(args.spec).values():
        triton.bind(
            model_name=spec.name,
            infer_func=_infer_function(spec),
            inputs=tensors(spec.inputs),
            outputs=tensors(spec.outputs),
            config=ModelConfig(
                max_batch_size=spec.max_batch_size,
                batcher=DynamicBatcher(
                    max_queue_delay_microseconds=spec.max_queue_delay_us,
                    preferred_batch_size=spec.preferred_batch_sizes or None,
                ),
            ),
        )
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    triton.run()  # returns once the server and every model are ready
    announce(args.grpc_host, http_port, "HTTP")
    announce(args.grpc_host, grpc_port)
    try:
        stop.wait()
    finally:
        triton.stop()


if __name__ == "__main__":
    main()
