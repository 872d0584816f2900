"""Counters and histograms for the request path: plain numbers, locked by their owner.

prometheus_client's Counter and Histogram take a lock per value on every update (a histogram
observation is two locked increments plus checks). These instruments are plain numbers; their owner
(a model version's metrics, observability/metrics.py) updates a request's or a batch's several
instruments under one lock of its own; the metrics HTTP thread reads them at scrape time through
`HotPathCollector`, copying each list before it turns it into samples. A scrape may see one
request's update half applied (a bucket counted, the sum not yet), which Prometheus tolerates: every
series only grows.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Sequence
from typing import Protocol

from prometheus_client import Counter, Histogram
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString


class CounterChild(Protocol):
    """A counter family's child: a LocalCounter, or prometheus_client's in a `--workers` child."""

    def inc(self, amount: float = 1.0, /) -> None: ...


class HistogramChild(Protocol):
    """A histogram family's child: a LocalHistogram, or prometheus_client's (as CounterChild)."""

    def observe(self, value: float, /) -> None: ...


class LocalCounter:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount


class LocalHistogram:
    """Prometheus histogram semantics: a value v counts in every bucket whose bound >= v."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(sorted(bounds))
        self.counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def cumulative(self) -> list[tuple[str, float]]:
        """(le, count of values <= le) pairs, +Inf last, from a copy of the counts."""
        counts = list(self.counts)
        buckets, total = [], 0
        for bound, count in zip((*self.bounds, float("inf")), counts, strict=True):
            total += count
            buckets.append((_le(bound), float(total)))
        return buckets


class CounterFamily:
    """A labelled counter whose children are created once and then updated as plain numbers.

    With `worker` (a `--workers` child, prometheus_client's multiprocess mode on), children are
    prometheus_client's own, labelled with the worker, whose values the parent reads from the
    shared directory.
    """

    def __init__(
        self, name: str, documentation: str, labels: Sequence[str], worker: str | None = None
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labels = tuple(labels)
        self._children: dict[tuple[str, ...], LocalCounter] = {}
        self._worker = worker
        self._shared = (
            Counter(name, documentation, (*labels, "worker"), registry=None)
            if worker is not None
            else None
        )

    def child(self, *values: str) -> CounterChild:
        if self._shared is not None:
            return self._shared.labels(*values, self._worker)
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = LocalCounter()
        return child

    def metric(self) -> Metric:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labels)
        for values, child in list(self._children.items()):
            family.add_metric(values, child.value)
        return family


class HistogramFamily:
    """A labelled histogram; `worker` as for CounterFamily."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labels: Sequence[str],
        bounds: Sequence[float],
        worker: str | None = None,
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labels = tuple(labels)
        self._bounds = tuple(bounds)
        self._children: dict[tuple[str, ...], LocalHistogram] = {}
        self._worker = worker
        self._shared = (
            Histogram(name, documentation, (*labels, "worker"), registry=None, buckets=bounds)
            if worker is not None
            else None
        )

    def child(self, *values: str) -> HistogramChild:
        if self._shared is not None:
            return self._shared.labels(*values, self._worker)
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = LocalHistogram(self._bounds)
        return child

    def metric(self) -> Metric:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labels)
        for values, child in list(self._children.items()):
            family.add_metric(values, child.cumulative(), sum_value=child.sum)
        return family


class HotPathCollector:
    """Exposes the families to a prometheus_client registry at scrape time."""

    def __init__(self, families: Sequence[CounterFamily | HistogramFamily]) -> None:
        self._families = tuple(families)

    def collect(self) -> Iterator[Metric]:
        for family in self._families:
            yield family.metric()


def _le(bound: float) -> str:
    # The same labels prometheus_client's Histogram writes (it leaves this unannotated).
    label: str = floatToGoString(bound)  # type: ignore[no-untyped-call]
    return label
