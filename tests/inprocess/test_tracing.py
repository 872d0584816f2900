"""Traces from a real server running in this process, read with the SDK's in-memory exporter.

The client uses tensorgate's own stubs over a real gRPC channel (tritonclient cannot share this
process with them), sending a W3C traceparent the way an instrumented caller would.
"""

from __future__ import annotations

from pathlib import Path

import grpc
import numpy as np
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from server._proto import grpc_service_pb2 as pb
from server._proto import grpc_service_pb2_grpc as pb_grpc
from server.app import TensorgateServer
from server.settings import ServerSettings
from tests.support.model_factory import write_add_sub_model

# Requests arriving together within 200 ms share a batch (three of them fill it at once).
BATCHING = "dynamic_batching { max_queue_delay_microseconds: 200000 preferred_batch_size: [3] }"


def request(index: int) -> pb.ModelInferRequest:
    tensor = pb.ModelInferRequest.InferInputTensor
    data = np.full((1, 16), index, np.float32).tobytes()
    return pb.ModelInferRequest(
        model_name="m",
        id=f"request-{index}",
        inputs=[
            tensor(name="INPUT0", datatype="FP32", shape=[1, 16]),
            tensor(name="INPUT1", datatype="FP32", shape=[1, 16]),
        ],
        raw_input_contents=[data, data],
    )


def traceparent(index: int) -> tuple[int, int, str]:
    trace_id, span_id = 0xABC000 + index, 0xDEF000 + index
    return trace_id, span_id, f"00-{trace_id:032x}-{span_id:016x}-01"


def run_traffic(repo: Path, exporter: InMemorySpanExporter) -> list[pb.ModelInferResponse]:
    settings = ServerSettings(
        model_repository=repo, grpc_host="127.0.0.1", grpc_port=0, metrics_enabled=False
    )
    server = TensorgateServer(settings, span_processors=[SimpleSpanProcessor(exporter)])
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            stub.ServerLive(pb.ServerLiveRequest())  # health RPCs are not traced
            calls = [
                stub.ModelInfer.future(
                    request(i), metadata=(("traceparent", traceparent(i)[2]),), timeout=60
                )
                for i in range(3)
            ]
            return [call.result() for call in calls]
    finally:
        server.stop(grace_s=1)


def test_request_spans_continue_the_callers_trace_and_link_to_their_batch(
    tmp_path: Path,
) -> None:
    write_add_sub_model(tmp_path, "m", max_batch_size=8, config_extra=BATCHING)
    exporter = InMemorySpanExporter()
    responses = run_traffic(tmp_path, exporter)
    assert [r.id for r in responses] == ["request-0", "request-1", "request-2"]

    spans = exporter.get_finished_spans()
    requests = {s.attributes["tensorgate.request_id"]: s for s in spans if s.name == "ModelInfer"}
    assert sorted(requests) == ["request-0", "request-1", "request-2"]
    assert {s.name for s in spans} == {"ModelInfer", "decode", "queue", "encode", "batch"}

    for index in range(3):
        span = requests[f"request-{index}"]
        trace_id, parent_span_id, _ = traceparent(index)
        assert span.context.trace_id == trace_id
        assert span.parent.span_id == parent_span_id
        assert span.attributes["tensorgate.model"] == "m"
        assert span.attributes["tensorgate.version"] == "1"
        assert span.attributes["tensorgate.outcome"] == "success"
        assert span.attributes["tensorgate.batch_size"] == 3
        children = sorted(
            s.name for s in spans if s.parent and s.parent.span_id == span.context.span_id
        )
        assert children == ["decode", "encode", "queue"]

    (batch,) = [s for s in spans if s.name == "batch"]
    assert batch.attributes["tensorgate.batch_size"] == 3
    linked = {link.context.span_id for link in batch.links}
    assert linked == {s.context.span_id for s in requests.values()}
    queue_spans = [s for s in spans if s.name == "queue"]
    assert all(q.end_time == batch.start_time for q in queue_spans)
    assert not [s for s in spans if "Live" in s.name]


def test_a_failed_request_span_records_its_outcome(tmp_path: Path) -> None:
    write_add_sub_model(tmp_path, "m", max_batch_size=8)
    exporter = InMemorySpanExporter()

    def bad_request() -> grpc.StatusCode:
        settings = ServerSettings(
            model_repository=tmp_path, grpc_host="127.0.0.1", grpc_port=0, metrics_enabled=False
        )
        server = TensorgateServer(settings, span_processors=[SimpleSpanProcessor(exporter)])
        server.start()
        try:
            with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
                stub = pb_grpc.GRPCInferenceServiceStub(channel)
                broken = request(0)
                broken.inputs[0].shape[:] = [1, 15]
                try:
                    stub.ModelInfer(broken, timeout=60)
                except grpc.RpcError as error:
                    return error.code()
                return grpc.StatusCode.OK
        finally:
            server.stop(grace_s=1)

    assert bad_request() == grpc.StatusCode.INVALID_ARGUMENT
    (span,) = [s for s in exporter.get_finished_spans() if s.name == "ModelInfer"]
    assert span.attributes["tensorgate.outcome"] == "invalid_input"
    assert not span.status.is_ok


def test_log_records_carry_the_trace_id_of_the_current_span() -> None:
    import logging

    from opentelemetry.sdk.trace import TracerProvider

    from server.observability.tracing import TraceIdFilter

    record = logging.LogRecord("t", logging.INFO, __file__, 1, "message", None, None)
    TraceIdFilter().filter(record)
    assert record.trace_id == "-"
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("request") as span:
        TraceIdFilter().filter(record)
    assert record.trace_id == format(span.get_span_context().trace_id, "032x")
