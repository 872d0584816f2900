"""Prometheus metrics: one CollectorRegistry per server instance (never the global one).

Per-request and per-batch updates go through plain children (observability/instruments.py)
bound once per model version and updated under one lock per model version, so the hot path does
no label lookups and takes one uncontended lock. Queue depths,
requests in flight and model states are read when Prometheus scrapes, by a collector, so they
cost the request path nothing.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CollectorRegistry,
    Gauge,
    PlatformCollector,
    ProcessCollector,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from batching.observer import BatchReport
from runtimes.errors import ErrorKind, TensorgateError
from server.observability.instruments import (
    CounterChild,
    CounterFamily,
    HistogramFamily,
    HotPathCollector,
)

log = logging.getLogger(__name__)

# Request outcomes, by the error kind that ended the request; any other kind counts as internal.
SUCCESS = "success"
INTERNAL = "internal"
OUTCOME_OF_KIND = {
    ErrorKind.INVALID_ARGUMENT: "invalid_input",
    ErrorKind.RESOURCE_EXHAUSTED: "queue_full",
    ErrorKind.DEADLINE_EXCEEDED: "timeout",
    ErrorKind.CANCELLED: "cancelled",
    ErrorKind.UNAVAILABLE: "unavailable",
    ErrorKind.UNIMPLEMENTED: "unsupported",
}
OUTCOMES = (SUCCESS, INTERNAL, *sorted(OUTCOME_OF_KIND.values()))

# Latency buckets from 100 us to 10 s; batch sizes as powers of two up to 1024.
# Finer between 5 and 25 ms, where latency targets (latency_target_p99_us) usually sit, so a
# p99 can be read against them from the histogram.
_SECONDS = (
    1e-4,
    2.5e-4,
    5e-4,
    1e-3,
    2.5e-3,
    5e-3,
    0.0075,
    0.01,
    0.015,
    0.02,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    10,
)
_ROWS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


def outcome_of(error: BaseException | None) -> str:
    if error is None:
        return SUCCESS
    if isinstance(error, TensorgateError):
        return OUTCOME_OF_KIND.get(error.kind, INTERNAL)
    return INTERNAL


class ModelMetrics:
    """A model version's metric children; implements batching's BatchObserver."""

    def __init__(self, metrics: ServerMetrics, name: str, version: str) -> None:
        labels = (name, version)
        self._requests = {o: metrics.requests.child(*labels, o) for o in OUTCOMES}
        self._request_seconds = metrics.request_seconds.child(*labels)
        self._queue_seconds = metrics.queue_seconds.child(*labels)
        self._compute_seconds = metrics.compute_seconds.child(*labels)
        self._batch_rows = metrics.batch_rows.child(*labels)
        self._inferences = metrics.inferences.child(*labels)
        self._executions = metrics.executions.child(*labels)
        worker = () if metrics.worker is None else (metrics.worker,)
        self._load_seconds = metrics.load_seconds.labels(*labels, *worker)
        self._lock = threading.Lock()

    def add_request(self, outcome: str, seconds: float) -> None:
        """One request answered; the caller holds its model's lock (served.py): batches never
        touch the request series."""
        self._requests[outcome].inc()
        self._request_seconds.observe(seconds)

    def batch_completed(self, report: BatchReport) -> None:
        if not report.succeeded:
            return
        with self._lock:
            observe_queued = self._queue_seconds.observe
            for queued in report.queue_s:
                observe_queued(queued)
            self._compute_seconds.observe(report.infer_s)
            self._batch_rows.observe(report.batch_rows)
            self._inferences.inc(report.batch_rows)
            self._executions.inc()

    def loaded(self, seconds: float) -> None:
        self._load_seconds.set(seconds)


class NullModelMetrics:
    """Metrics turned off: every update is a no-op."""

    def add_request(self, outcome: str, seconds: float) -> None:
        pass

    def batch_completed(self, report: BatchReport) -> None:
        pass

    def loaded(self, seconds: float) -> None:
        pass


class ServerMetrics:
    """Every metric family of one server, in its own registry.

    The families updated per request or per batch are plain numbers
    (observability/instruments.py), updated under their owner's lock.
    """

    def __init__(self, worker: str | None = None) -> None:
        """worker: this process is `--workers` child number `worker`; its values go to
        prometheus_client's multiprocess directory (PROMETHEUS_MULTIPROC_DIR, set by the parent)
        with a `worker` label, and the parent serves them (server/workers.py)."""
        self.registry = CollectorRegistry()
        self.worker = worker
        model = ("model", "version")
        self.requests = CounterFamily(
            "tensorgate_requests", "Inference requests by outcome", (*model, "outcome"), worker
        )
        self.request_seconds = HistogramFamily(
            "tensorgate_request_duration_seconds",
            "Time from receiving an inference request to answering it",
            model,
            _SECONDS,
            worker,
        )
        self.queue_seconds = HistogramFamily(
            "tensorgate_queue_duration_seconds",
            "Time a request waited in the scheduler queue",
            model,
            _SECONDS,
            worker,
        )
        self.compute_seconds = HistogramFamily(
            "tensorgate_compute_duration_seconds",
            "Time the runtime took to execute one batch",
            model,
            _SECONDS,
            worker,
        )
        self.batch_rows = HistogramFamily(
            "tensorgate_batch_size", "Rows in each executed batch", model, _ROWS, worker
        )
        self.inferences = CounterFamily("tensorgate_inferences", "Rows inferred", model, worker)
        self.executions = CounterFamily("tensorgate_executions", "Batches executed", model, worker)
        self.grpc_calls = CounterFamily(
            "tensorgate_grpc_calls",
            "gRPC calls by method and status code",
            ("method", "code"),
            worker,
        )
        self.http_calls = CounterFamily(
            "tensorgate_http_requests",
            "HTTP requests by endpoint and status code",
            ("endpoint", "code"),
            worker,
        )
        self.registry.register(
            HotPathCollector(
                (
                    self.requests,
                    self.request_seconds,
                    self.queue_seconds,
                    self.compute_seconds,
                    self.batch_rows,
                    self.inferences,
                    self.executions,
                    self.grpc_calls,
                    self.http_calls,
                )
            )
        )
        self.load_seconds = Gauge(
            "tensorgate_model_load_duration_seconds",
            "How long the last load of a model version took",
            (*model, "worker") if worker is not None else model,
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self._call_children: dict[tuple[str, str, str], CounterChild] = {}
        self._calls_lock = threading.Lock()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        _register_gpu_collector(self.registry)
        self._http: tuple[WSGIServer, threading.Thread] | None = None
        self._shared_gauges: SharedGauges | None = None

    def for_model(self, name: str, version: int) -> ModelMetrics:
        return ModelMetrics(self, name, str(version))

    def grpc_call(self, method: str, code: str) -> None:
        self._count_call(self.grpc_calls, method, code)

    def http_call(self, endpoint: str, code: str) -> None:
        self._count_call(self.http_calls, endpoint, code)

    def _count_call(self, family: CounterFamily, name: str, code: str) -> None:
        key = (family.name, name, code)
        with self._calls_lock:
            child = self._call_children.get(key)
            if child is None:
                child = self._call_children[key] = family.child(name, code)
            child.inc()

    def add_collector(self, collector: Collector) -> None:
        """A scrape-time collector; in a `--workers` child, its gauges are written to the
        shared directory every second instead (the parent cannot call it)."""
        if self.worker is None:
            self.registry.register(collector)
            return
        if self._shared_gauges is None:
            self._shared_gauges = SharedGauges(self.worker)
        self._shared_gauges.add(collector)

    def serve(self, host: str, port: int) -> int:
        """Expose /metrics over HTTP on a background thread; returns the bound port."""
        try:
            server, thread = start_http_server(port, addr=host, registry=self.registry)
        except OSError as error:
            raise OSError(
                f"cannot serve metrics on {host}:{port} ({error.strerror}); choose another "
                "--metrics-port or turn metrics off with --metrics false"
            ) from error
        self._http = (server, thread)
        return server.server_port

    def close(self) -> None:
        if self._shared_gauges is not None:
            self._shared_gauges.close()
        if self._http is not None:
            server, thread = self._http
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)
            self._http = None


class SharedGauges:
    """In a `--workers` child: what scrape-time collectors report (queue depths, states, drift),
    written to prometheus_client's multiprocess gauges every `interval_s`, labelled with the
    worker, so the parent's /metrics serves every worker's without calling any of them."""

    def __init__(self, worker: str, interval_s: float = 1.0) -> None:
        self._worker = worker
        self._collectors: list[Collector] = []
        self._gauges: dict[str, Gauge] = {}
        self._stop = threading.Event()
        self._interval_s = interval_s
        self._thread = threading.Thread(target=self._run, name="shared-gauges", daemon=True)
        self._thread.start()

    def add(self, collector: Collector) -> None:
        self._collectors.append(collector)
        self.write()

    def write(self) -> None:
        for collector in list(self._collectors):
            for family in collector.collect():
                for sample in family.samples:
                    self._gauge(family, tuple(sample.labels)).labels(
                        *sample.labels.values(), self._worker
                    ).set(sample.value)

    def _gauge(self, family: Metric, labels: tuple[str, ...]) -> Gauge:
        gauge = self._gauges.get(family.name)
        if gauge is None:
            gauge = self._gauges[family.name] = Gauge(
                family.name,
                family.documentation,
                (*labels, "worker"),
                registry=None,
                multiprocess_mode="livesum",  # one process writes each series; dead ones drop
            )
        return gauge

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                self.write()
            except Exception:  # a registry that changed mid-read: the next round catches up
                log.debug("writing shared gauges failed", exc_info=True)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)


@dataclass(frozen=True)
class ModelRow:
    """One model version as the scrape-time collector reports it."""

    name: str
    version: int
    state: str
    queue_depths: tuple[tuple[int, int], ...]  # (priority level, requests queued)
    in_flight: int
    # Drift monitoring, when the model has it on: (feature, PSI, KS) and the alert.
    drift_scores: tuple[tuple[str, float, float], ...] = ()
    drift_alert: bool | None = None
    drift_window_rows: int = 0


class ModelStateCollector:
    """Scrape-time gauges: state, queue depth per priority, requests in flight.

    `rows` is called on the HTTP thread; it must copy what it reads.
    """

    def __init__(self, rows: Callable[[], list[ModelRow]]) -> None:
        self._rows = rows

    def collect(self) -> Iterator[GaugeMetricFamily]:
        state = GaugeMetricFamily(
            "tensorgate_model_state",
            "1 for the state each model version is in",
            labels=("model", "version", "state"),
        )
        depth = GaugeMetricFamily(
            "tensorgate_queue_depth",
            "Requests waiting in a model version's queue, per priority level",
            labels=("model", "version", "priority"),
        )
        in_flight = GaugeMetricFamily(
            "tensorgate_requests_in_flight",
            "Inference requests being handled by a model version",
            labels=("model", "version"),
        )
        drift = _DriftFamilies()
        for row in self._rows():
            name, version = row.name, str(row.version)
            for candidate in ("LOADING", "READY", "UNLOADING", "UNAVAILABLE"):
                state.add_metric((name, version, candidate), 1.0 if row.state == candidate else 0.0)
            for level, queued in row.queue_depths:
                depth.add_metric((name, version, str(level)), float(queued))
            in_flight.add_metric((name, version), float(row.in_flight))
            drift.add(row)
        yield from (state, depth, in_flight, *drift.families())


class _DriftFamilies:
    def __init__(self) -> None:
        labels = ("model", "version", "feature")
        self.psi = GaugeMetricFamily(
            "tensorgate_drift_psi", "Population stability index of a feature", labels=labels
        )
        self.ks = GaugeMetricFamily(
            "tensorgate_drift_ks", "Kolmogorov-Smirnov statistic of a feature", labels=labels
        )
        self.alert = GaugeMetricFamily(
            "tensorgate_drift_alert",
            "1 when some feature's PSI is over the model's threshold",
            labels=("model", "version"),
        )
        self.window = GaugeMetricFamily(
            "tensorgate_drift_window_rows",
            "Rows in the drift window compared with the reference",
            labels=("model", "version"),
        )

    def add(self, row: ModelRow) -> None:
        if row.drift_alert is None:
            return
        name, version = row.name, str(row.version)
        for feature, psi, ks in row.drift_scores:
            self.psi.add_metric((name, version, feature), psi)
            self.ks.add_metric((name, version, feature), ks)
        self.alert.add_metric((name, version), 1.0 if row.drift_alert else 0.0)
        self.window.add_metric((name, version), float(row.drift_window_rows))

    def families(self) -> tuple[GaugeMetricFamily, ...]:
        return (self.psi, self.ks, self.alert, self.window)


def _register_gpu_collector(registry: CollectorRegistry) -> None:
    """GPU utilisation and memory through NVML, when pynvml and a GPU are present."""
    try:
        import pynvml  # optional dependency

        pynvml.nvmlInit()
    except Exception:
        return
    registry.register(_GpuCollector(pynvml))


class _NvmlUtilization(Protocol):
    @property
    def gpu(self) -> int: ...


class _NvmlMemory(Protocol):
    @property
    def used(self) -> int: ...


class _Nvml(Protocol):
    """The part of the pynvml module (an optional dependency, untyped) the collector reads."""

    def nvmlDeviceGetCount(self) -> int: ...

    def nvmlDeviceGetHandleByIndex(self, index: int) -> object: ...

    def nvmlDeviceGetUtilizationRates(self, handle: object) -> _NvmlUtilization: ...

    def nvmlDeviceGetMemoryInfo(self, handle: object) -> _NvmlMemory: ...


class _GpuCollector:
    def __init__(self, nvml: _Nvml) -> None:
        self._nvml = nvml

    def collect(self) -> Iterator[GaugeMetricFamily]:
        nvml = self._nvml
        utilisation = GaugeMetricFamily(
            "tensorgate_gpu_utilization_ratio", "GPU busy fraction", labels=("gpu",)
        )
        used = GaugeMetricFamily(
            "tensorgate_gpu_memory_used_bytes", "GPU memory in use", labels=("gpu",)
        )
        for index in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            utilisation.add_metric(
                (str(index),), nvml.nvmlDeviceGetUtilizationRates(handle).gpu / 100
            )
            used.add_metric((str(index),), float(nvml.nvmlDeviceGetMemoryInfo(handle).used))
        yield from (utilisation, used)


@dataclass(frozen=True)
class SourceStatus:
    """Where models come from, when that is a registry (server/models/mlflow_source.py)."""

    source: str  # "mlflow"
    reachable: bool  # the last contact succeeded
    failures: int  # failed contacts in a row
    served: list[tuple[str, str, str, str]]  # (model, version, aliases, run id) of each


class ModelSourceCollector:
    """Scrape-time gauges of a model registry: reachable or not, and which registry version
    (aliases, training run) each served version is."""

    def __init__(self, status: Callable[[], SourceStatus]) -> None:
        self._status = status

    def collect(self) -> Iterator[GaugeMetricFamily]:
        status = self._status()
        up = GaugeMetricFamily(
            "tensorgate_model_source_up",
            "1 when the last contact with the model registry succeeded",
            labels=("source",),
        )
        up.add_metric((status.source,), 1.0 if status.reachable else 0.0)
        failed = GaugeMetricFamily(
            "tensorgate_model_source_failures",
            "Failed contacts with the model registry in a row",
            labels=("source",),
        )
        failed.add_metric((status.source,), float(status.failures))
        info = GaugeMetricFamily(
            "tensorgate_model_source_info",
            "1 for each served version: its registry version, aliases and training run",
            labels=("model", "version", "source", "aliases", "run_id"),
        )
        for model, version, aliases, run_id in status.served:
            info.add_metric((model, version, status.source, aliases, run_id), 1.0)
        yield from (up, failed, info)
