"""Per model version statistics, in the shape ModelStatistics reports them (Triton's semantics).

Every request in a batch is charged the batch's compute durations, as Triton does; counts and
durations only grow. Updated from the threads that run batches and answer requests, under one
lock per model version; read without it (a report may show one update half applied).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from batching.observer import BatchReport


@dataclass
class Duration:
    count: int = 0
    ns: int = 0

    def add(self, seconds: float, times: int = 1) -> None:
        self.count += times
        self.ns += int(seconds * 1e9) * times


@dataclass
class BatchSizeStats:
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)


@dataclass
class ModelStats:
    """Implements batching's BatchObserver; the servicer encodes it into ModelStatistics."""

    success: Duration = field(default_factory=Duration)
    fail: Duration = field(default_factory=Duration)
    queue: Duration = field(default_factory=Duration)
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)
    inference_count: int = 0
    execution_count: int = 0
    last_inference_ms: int = 0
    batch_stats: dict[int, BatchSizeStats] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def batch_completed(self, report: BatchReport) -> None:
        if not report.succeeded:
            return
        with self._lock:
            self._add_batch(report)

    def _add_batch(self, report: BatchReport) -> None:
        requests = len(report.queue_s)
        self.queue.count += requests
        self.queue.ns += int(sum(report.queue_s) * 1e9)
        self.compute_input.add(report.assemble_s, requests)
        self.compute_infer.add(report.infer_s, requests)
        self.compute_output.add(report.split_s, requests)
        self.inference_count += report.batch_rows
        self.execution_count += 1
        self.last_inference_ms = int(time.time() * 1000)
        per_size = self.batch_stats.get(report.batch_rows)
        if per_size is None:
            per_size = self.batch_stats[report.batch_rows] = BatchSizeStats()
        per_size.compute_input.add(report.assemble_s)
        per_size.compute_infer.add(report.infer_s)
        per_size.compute_output.add(report.split_s)

    def request_succeeded(self, seconds: float) -> None:
        with self._lock:
            self.success.add(seconds)

    def request_failed(self, seconds: float) -> None:
        with self._lock:
            self.fail.add(seconds)
