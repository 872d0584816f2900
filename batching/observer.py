"""What a scheduler reports about each executed batch (statistics and metrics listen)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class BatchReport:
    """One executed batch. Durations in seconds; queue_s has one entry per request."""

    batch_rows: int
    queue_s: tuple[float, ...]
    assemble_s: float
    infer_s: float
    split_s: float
    succeeded: bool


class BatchObserver(Protocol):
    def batch_completed(self, report: BatchReport) -> None: ...


class NullObserver:
    def batch_completed(self, report: BatchReport) -> None:
        pass
