"""The lock-free instruments expose exactly what prometheus_client's own would."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from server.observability.instruments import CounterFamily, HistogramFamily, HotPathCollector

BOUNDS = (1e-4, 2.5e-4, 1e-3, 0.5, 10)
# Values on bucket edges, between them, below the first and above the last.
VALUES = (0.0, 1e-4, 1.5e-4, 2.5e-4, 3e-4, 0.4, 0.5, 9.99, 10, 11, 1e6)


def samples(registry: CollectorRegistry) -> list[str]:
    """Exposition lines without comments and without prometheus_client's _created series."""
    text = generate_latest(registry).decode()
    return sorted(
        line for line in text.splitlines() if not line.startswith("#") and "_created" not in line
    )


def test_histogram_matches_prometheus_client() -> None:
    reference, ours = CollectorRegistry(), CollectorRegistry()
    histogram = Histogram("latency", "doc", ("model",), buckets=BOUNDS, registry=reference)
    family = HistogramFamily("latency", "doc", ("model",), BOUNDS)
    ours.register(HotPathCollector([family]))
    for model in ("a", "b"):
        for value in VALUES:
            histogram.labels(model).observe(value)
            family.child(model).observe(value)
    assert samples(ours) == samples(reference)
    assert 'latency_bucket{le="0.00025",model="a"} 4.0' in samples(ours)


def test_counter_matches_prometheus_client() -> None:
    reference, ours = CollectorRegistry(), CollectorRegistry()
    counter = Counter("calls", "doc", ("method", "code"), registry=reference)
    family = CounterFamily("calls", "doc", ("method", "code"))
    ours.register(HotPathCollector([family]))
    for method, code, times in (("Infer", "OK", 3), ("Infer", "CANCELLED", 1), ("Live", "OK", 0)):
        child = family.child(method, code)
        counter.labels(method, code)
        for _ in range(times):
            counter.labels(method, code).inc()
            child.inc()
    assert samples(ours) == samples(reference)
    assert 'calls_total{code="OK",method="Infer"} 3.0' in samples(ours)


def test_children_are_created_once() -> None:
    family = HistogramFamily("latency", "doc", ("model",), BOUNDS)
    assert family.child("a") is family.child("a")
    assert family.child("a") is not family.child("b")
