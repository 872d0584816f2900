"""tensorgate's own gRPC front end with the bare handler in place of the data plane.

    .venv/bin/python -m benchmarks.front_end_floor serve [tensorgate serve options]

The real `tensorgate serve` (its run slots, channel options, registration, concurrency limit,
call metrics), except that ModelInfer skips the data plane: it views the raw inputs, calls the
model's runtime instance and builds the response, as benchmarks/bare_models.py's synchronous
handler does. Served beside tensorgate and the bare handlers (benchmarks/cpu_per_request.py),
it splits the gap between them: what the front end costs, and what the data plane costs.

The statistics extension is not advertised (this handler keeps none), so perf_analyzer does not
ask for server-side statistics.
"""

from __future__ import annotations

import sys

import numpy as np

from runtimes import datatypes
from server._proto import grpc_service_pb2 as pb
from server.cli import main
from server.grpc_api import servicer as servicer_module
from server.grpc_api.servicer import InferenceServicer
from server.models.registry import ModelRegistry


def bare_model_infer(
    self: InferenceServicer, request: pb.ModelInferRequest, context: object
) -> pb.ModelInferResponse:
    return bare_handler(self._plane.registry, request)


def bare_handler(registry: ModelRegistry, request: pb.ModelInferRequest) -> pb.ModelInferResponse:
    """What the bare handler does in place of the data plane (request_path.py times it too)."""
    model = registry.resolve(request.model_name, request.model_version)
    feeds = {
        tensor.name: np.frombuffer(raw, datatypes.BY_NAME[tensor.datatype].numpy).reshape(
            tuple(tensor.shape)
        )
        for tensor, raw in zip(request.inputs, request.raw_input_contents, strict=True)
    }
    names = model.signature.output_names
    outputs = model.instances[0].infer(feeds, list(names))
    response = pb.ModelInferResponse(
        model_name=model.name, model_version=str(model.version), id=request.id
    )
    for name in names:
        value = outputs[name]
        response.outputs.add(
            name=name, datatype=datatypes.from_numpy(value.dtype).name, shape=value.shape
        )
        response.raw_output_contents.append(value.tobytes())
    return response


if __name__ == "__main__":
    InferenceServicer.ModelInfer = bare_model_infer  # type: ignore[method-assign]
    servicer_module.EXTENSIONS = tuple(e for e in servicer_module.EXTENSIONS if e != "statistics")
    raise SystemExit(main(sys.argv[1:]))
