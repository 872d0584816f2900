"""--trace-exporter otlp: a real server sends its spans to a real OTLP/gRPC receiver.

The receiver is the OpenTelemetry collector protocol's own TraceService (opentelemetry-proto),
served on loopback by the test: what Jaeger, Tempo or an OpenTelemetry Collector listen with
(deploy/compose runs tensorgate against Jaeger this way). The caller's W3C traceparent must
come back as the trace of the server's spans.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent import futures

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.trace.v1 import trace_pb2

from tests.integration.conftest import wait_until_ready
from tests.support.server_process import ServerProcess

TRACE_ID = 0x5EED00000000000000000000000A11CE
PARENT_SPAN_ID = 0xCA11E4
TRACEPARENT = f"00-{TRACE_ID:032x}-{PARENT_SPAN_ID:016x}-01"


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    """Keeps every exported span with its resource's attributes; wakes waiters on each export."""

    def __init__(self) -> None:
        self.spans: list[tuple[dict[str, str], trace_pb2.Span]] = []
        self._changed = threading.Condition()

    def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: object
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        with self._changed:
            for resource_spans in request.resource_spans:
                resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
                for scope_spans in resource_spans.scope_spans:
                    self.spans += [(resource, span) for span in scope_spans.spans]
            self._changed.notify_all()
        return trace_service_pb2.ExportTraceServiceResponse()

    def wait_for(self, names: set[str], timeout_s: float = 30.0) -> dict[str, trace_pb2.Span]:
        """The first span of each name in `names` from the test's trace, once all have come."""

        def found() -> dict[str, trace_pb2.Span]:
            spans: dict[str, trace_pb2.Span] = {}
            for _, span in self.spans:
                if int.from_bytes(span.trace_id, "big") == TRACE_ID:
                    spans.setdefault(span.name, span)
            return spans

        with self._changed:
            self._changed.wait_for(lambda: names <= found().keys(), timeout_s)
            return found()


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, int]]:
    spans = Receiver()
    server = grpc.server(futures.ThreadPoolExecutor(2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(spans, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield spans, port
    finally:
        server.stop(0)


def test_inference_spans_reach_an_otlp_receiver_in_the_callers_trace(
    receiver: tuple[Receiver, int],
) -> None:
    spans, port = receiver
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
        "OTEL_BSP_SCHEDULE_DELAY": "100",  # ms: export soon after the request
    }
    with ServerProcess(extra_args=["--trace-exporter", "otlp"], env=env) as server:
        wait_until_ready(server.url)
        with triton.InferenceServerClient(server.url) as client:
            features = triton.InferInput("features", [2, 16], "FP32")
            features.set_data_from_numpy(np.ones((2, 16), np.float32))
            client.infer("tabular_classifier", [features], headers={"traceparent": TRACEPARENT})
        found = spans.wait_for({"ModelInfer", "queue"})

    assert {"ModelInfer", "queue"} <= found.keys(), [s.name for _, s in spans.spans]
    request = found["ModelInfer"]
    assert int.from_bytes(request.parent_span_id, "big") == PARENT_SPAN_ID
    assert request.kind == trace_pb2.Span.SPAN_KIND_SERVER
    attributes = {a.key: a.value.string_value for a in request.attributes}
    assert attributes["tensorgate.model"] == "tabular_classifier"
    assert attributes["tensorgate.outcome"] == "success"
    assert found["queue"].parent_span_id == request.span_id
    resources = [resource for resource, span in spans.spans if span.name == "ModelInfer"]
    assert resources[0]["service.name"] == "tensorgate"
