"""benchmarks/front_end_floor.py: tensorgate's front end with the bare handler must run the same
model and answer what tensorgate answers, or its figures measure something else."""

from __future__ import annotations

import grpc
import numpy as np

from server._proto import grpc_service_pb2 as pb
from server._proto import grpc_service_pb2_grpc as pb_grpc
from tests.support.server_process import ServerProcess

MODEL = "tabular_classifier"


def _request(rows: np.ndarray) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=MODEL, id="floor")
    request.inputs.add(name="features", datatype="FP32", shape=list(rows.shape))
    request.raw_input_contents.append(rows.tobytes())
    return request


def _call(url: str, request: pb.ModelInferRequest) -> tuple[pb.ModelInferResponse, list[str]]:
    with grpc.insecure_channel(url) as channel:
        grpc.channel_ready_future(channel).result(timeout=30)
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        response = stub.ModelInfer(request, timeout=10)
        extensions = list(stub.ServerMetadata(pb.ServerMetadataRequest(), timeout=10).extensions)
    return response, extensions


def test_the_floor_answers_what_tensorgate_answers_and_skips_statistics() -> None:
    rows = np.random.default_rng(7).standard_normal((3, 16)).astype(np.float32)
    request = _request(rows)
    with ServerProcess() as server:
        expected, extensions = _call(server.url, request)
    assert "statistics" in extensions
    floor_args = ("--metrics-port", "0", "--http-port", "-1")
    with ServerProcess(extra_args=floor_args, module="benchmarks.front_end_floor") as floor:
        answered, floor_extensions = _call(floor.url, request)
    assert "statistics" not in floor_extensions  # so perf_analyzer asks for none
    assert answered.model_name == expected.model_name
    assert answered.model_version == expected.model_version
    assert answered.id == "floor"
    assert [(t.name, t.datatype, list(t.shape)) for t in answered.outputs] == [
        (t.name, t.datatype, list(t.shape)) for t in expected.outputs
    ]
    assert list(answered.raw_output_contents) == list(expected.raw_output_contents)
    probabilities = np.frombuffer(answered.raw_output_contents[0], np.float32)
    assert probabilities.size == 3 * 3 and np.isfinite(probabilities).all()
