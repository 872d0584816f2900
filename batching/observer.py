"""What a scheduler reports about each executed batch (statistics and metrics listen)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(slots=True)
class BatchReport:
    """One executed batch. Durations in seconds; queue_s and traces have one entry per request.

    started_s and finished_s are on the scheduler's clock; traces are the opaque objects the
    callers passed to submit (the server's request spans), None where there were none.
    """

    batch_rows: int
    queue_s: tuple[float, ...]
    assemble_s: float
    infer_s: float
    split_s: float
    succeeded: bool
    started_s: float = 0.0
    finished_s: float = 0.0
    traces: tuple[object | None, ...] = ()


class BatchObserver(Protocol):
    def batch_completed(self, report: BatchReport) -> None: ...


class NullObserver:
    def batch_completed(self, report: BatchReport) -> None:
        pass


class FanOut:
    """Hands each report to several observers (statistics, metrics, traces)."""

    def __init__(self, *observers: BatchObserver) -> None:
        self._observers = observers

    def batch_completed(self, report: BatchReport) -> None:
        for observer in self._observers:
            observer.batch_completed(report)
