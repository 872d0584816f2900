"""OpenTelemetry traces for inference requests.

One TracerProvider per server instance (never the global one). An inference request gets a server
span that continues the caller's W3C traceparent (gRPC metadata or HTTP headers), with child spans
for decode, queue wait and encode; each executed batch gets its own span linked to every request
span it served, and each request span records the size of the batch it ran in. With the exporter
"none" nothing is created at all, so tracing costs the request path nothing when it is off.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Mapping, Sequence

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from batching.observer import BatchReport
from server.observability.metrics import SUCCESS

EXPORTERS = ("none", "console", "otlp")
# Monotonic seconds (the scheduler's clock) to epoch nanoseconds (OpenTelemetry's timestamps).
_EPOCH_OFFSET_NS = time.time_ns() - time.monotonic_ns()
_NOTHING = contextlib.nullcontext()


RequestSpan = trace.Span


def _epoch_ns(monotonic_s: float) -> int:
    return int(monotonic_s * 1e9) + _EPOCH_OFFSET_NS


class Tracing:
    def __init__(
        self,
        exporter: str = "none",
        sample_ratio: float = 1.0,
        processors: Sequence[SpanProcessor] = (),
    ) -> None:
        self.enabled = exporter != "none" or bool(processors)
        self._provider: TracerProvider | None = None
        if not self.enabled:
            return
        provider = TracerProvider(
            sampler=ParentBased(TraceIdRatioBased(sample_ratio)),
            resource=Resource.create({"service.name": "tensorgate"}),
        )
        if exporter == "console":
            provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
        elif exporter == "otlp":
            provider.add_span_processor(BatchSpanProcessor(_otlp_exporter()))
        for processor in processors:
            provider.add_span_processor(processor)
        self._provider = provider
        self._tracer = provider.get_tracer("tensorgate")
        self._propagator = TraceContextTextMapPropagator()

    def start_request(
        self,
        headers: Mapping[str, str] | Sequence[tuple[str, str]] | None,
        model: str,
        version: int,
        request_id: str,
    ) -> RequestSpan | None:
        """The server span of one inference request, continuing the caller's traceparent from
        `headers`; end it with end_request. None when tracing is off."""
        if not self.enabled:
            return None
        items = headers.items() if isinstance(headers, Mapping) else headers or ()
        carrier = {key.lower(): value for key, value in items if isinstance(value, str)}
        attributes = {"tensorgate.model": model, "tensorgate.version": str(version)}
        if request_id:
            attributes["tensorgate.request_id"] = request_id
        return self._tracer.start_span(
            "ModelInfer",
            context=self._propagator.extract(carrier),
            kind=SpanKind.SERVER,
            attributes=attributes,
        )

    def end_request(self, span: RequestSpan | None, outcome: str) -> None:
        if span is None:
            return
        span.set_attribute("tensorgate.outcome", outcome)
        if outcome != SUCCESS:
            span.set_status(Status(StatusCode.ERROR, outcome))
        span.end()

    def child(
        self, parent: RequestSpan | None, name: str
    ) -> contextlib.AbstractContextManager[object]:
        """A child span of a request (decode, encode), current for the duration of the block
        so that log records made in it carry the trace id."""
        if parent is None:
            return _NOTHING
        return self._tracer.start_as_current_span(name, context=trace.set_span_in_context(parent))

    def batch_observer(self, model: str, version: int) -> BatchSpans:
        return BatchSpans(self._tracer if self.enabled else None, model, version)

    def shutdown(self) -> None:
        if self._provider is not None:
            self._provider.shutdown()


class BatchSpans:
    """A BatchObserver that turns each executed batch into a span linked to its requests."""

    def __init__(self, tracer: trace.Tracer | None, model: str, version: int) -> None:
        self._tracer = tracer
        self._attributes = {"tensorgate.model": model, "tensorgate.version": str(version)}

    def batch_completed(self, report: BatchReport) -> None:
        # The traces are opaque to the scheduler; the ones the data plane passed are its spans.
        spans = [span for span in report.traces if isinstance(span, trace.Span)]
        if self._tracer is None or not spans:
            return
        started_ns = _epoch_ns(report.started_s)
        batch = self._tracer.start_span(
            "batch",
            context=trace.set_span_in_context(trace.INVALID_SPAN),
            start_time=started_ns,
            links=[Link(span.get_span_context()) for span in spans],
            attributes={
                **self._attributes,
                "tensorgate.batch_size": report.batch_rows,
                "tensorgate.requests": len(report.traces),
                "tensorgate.outcome": SUCCESS if report.succeeded else "failed",
            },
        )
        batch.end(end_time=_epoch_ns(report.finished_s))
        for span, queued_s in zip(report.traces, report.queue_s, strict=True):
            if not isinstance(span, trace.Span):
                continue
            span.set_attribute("tensorgate.batch_size", report.batch_rows)
            queue = self._tracer.start_span(
                "queue",
                context=trace.set_span_in_context(span),
                start_time=started_ns - int(queued_s * 1e9),
            )
            queue.end(end_time=started_ns)


def _otlp_exporter() -> SpanExporter:
    try:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    except ImportError as exc:
        raise RuntimeError(
            "--trace-exporter otlp needs the package opentelemetry-exporter-otlp-proto-grpc"
        ) from exc
    exporter: SpanExporter = OTLPSpanExporter()  # Any where the package is not installed
    return exporter


class TraceIdFilter(logging.Filter):
    """Adds `trace_id` to every log record: the current span's, or '-' outside a request."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = trace.get_current_span().get_span_context()
        record.trace_id = format(context.trace_id, "032x") if context.is_valid else "-"
        return True
