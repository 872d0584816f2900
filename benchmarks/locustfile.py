"""Locust load against tensorgate (or any KServe v2 / Triton gRPC server) over gRPC.

    .venv/bin/locust -f benchmarks/locustfile.py --headless -u 8 -r 8 -t 30s \
        --host 127.0.0.1:8001 [--model tabular_classifier] [--csv out/prefix]

Each simulated user holds one gRPC channel and calls ModelInfer through tensorgate's generated
stubs (server._proto) in a closed loop, with the realistic rows of benchmarks/workloads.py, and
reports every call to Locust as a request of type "grpc" named after the model: response time,
response size, and the gRPC error as the exception, so Locust's statistics, CSV and web UI treat it
like any HTTP user. `--host` is host:port without a scheme; loopback in the tests.

gRPC's C core is not gevent-aware by itself: `grpc.experimental.gevent.init_gevent()` makes its
blocking calls yield to other greenlets, and must run before any channel exists.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import grpc
import grpc.experimental.gevent as grpc_gevent
from locust import User, events, task
from locust.exception import StopUser

grpc_gevent.init_gevent()

_REPO_ROOT = Path(__file__).resolve().parents[1]
if str(_REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(_REPO_ROOT))

from benchmarks.workloads import WORKLOADS  # noqa: E402
from server._proto import grpc_service_pb2 as pb  # noqa: E402
from server._proto import grpc_service_pb2_grpc as pb_grpc  # noqa: E402

_DATATYPES = {"float32": "FP32", "int64": "INT64"}
_SAMPLES = 16


@events.init_command_line_parser.add_listener
def _add_arguments(parser) -> None:
    parser.add_argument(
        "--model",
        default="tabular_classifier",
        choices=sorted(WORKLOADS),
        help="bundled model to call (default tabular_classifier)",
    )
    parser.add_argument(
        "--deadline-s", type=float, default=10.0, help="gRPC deadline of each ModelInfer call"
    )


def build_requests(model: str, samples: int = _SAMPLES) -> list[pb.ModelInferRequest]:
    """ModelInfer requests of one row each, from the workload's realistic rows."""
    workload = WORKLOADS[model]
    requests = []
    for seed in range(samples):
        request = pb.ModelInferRequest(model_name=model)
        for name, value in workload.batch(1, seed=seed).items():
            request.inputs.add(
                name=name, datatype=_DATATYPES[value.dtype.name], shape=list(value.shape)
            )
            request.raw_input_contents.append(value.tobytes())
        requests.append(request)
    return requests


class ModelInferUser(User):
    """A client in a closed loop: one ModelInfer after another, no think time."""

    def on_start(self) -> None:
        if not self.host:
            raise StopUser("give the server as --host HOST:PORT")
        options = self.environment.parsed_options
        self.model = getattr(options, "model", "tabular_classifier")
        self.deadline_s = getattr(options, "deadline_s", 10.0)
        self.channel = grpc.insecure_channel(self.host.removeprefix("grpc://"))
        self.stub = pb_grpc.GRPCInferenceServiceStub(self.channel)
        self.requests = build_requests(self.model)
        self.sent = 0

    def on_stop(self) -> None:
        self.channel.close()

    @task
    def model_infer(self) -> None:
        request = self.requests[self.sent % len(self.requests)]
        self.sent += 1
        started = time.perf_counter()
        exception: Exception | None = None
        length = 0
        try:
            response = self.stub.ModelInfer(request, timeout=self.deadline_s)
            length = response.ByteSize()
        except grpc.RpcError as error:
            exception = error
        self.environment.events.request.fire(
            request_type="grpc",
            name=f"ModelInfer {self.model}",
            response_time=(time.perf_counter() - started) * 1000,
            response_length=length,
            exception=exception,
            context={},
        )
