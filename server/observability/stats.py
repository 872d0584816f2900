"""Per model version statistics, in the shape ModelStatistics reports them (Triton's semantics).

Every request in a batch is charged the batch's compute durations, as Triton does; counts and
durations only grow. Updated from the threads that run batches (under this object's lock) and
answer requests (under their model's lock; the two touch different fields); read without a lock
(a report may show one update half applied).
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
        # Straight-line arithmetic, not Duration.add: this runs once per batch.
        requests = len(report.queue_s)
        input_ns = int(report.assemble_s * 1e9)
        infer_ns = int(report.infer_s * 1e9)
        output_ns = int(report.split_s * 1e9)
        self.queue.count += requests
        self.queue.ns += int(sum(report.queue_s) * 1e9)
        self.compute_input.count += requests
        self.compute_input.ns += input_ns * requests
        self.compute_infer.count += requests
        self.compute_infer.ns += infer_ns * requests
        self.compute_output.count += requests
        self.compute_output.ns += output_ns * requests
        self.inference_count += report.batch_rows
        self.execution_count += 1
        self.last_inference_ms = int(time.time() * 1000)
        per_size = self.batch_stats.get(report.batch_rows)
        if per_size is None:
            per_size = self.batch_stats[report.batch_rows] = BatchSizeStats()
        per_size.compute_input.count += 1
        per_size.compute_input.ns += input_ns
        per_size.compute_infer.count += 1
        per_size.compute_infer.ns += infer_ns
        per_size.compute_output.count += 1
        per_size.compute_output.ns += output_ns

    def add_request(self, seconds: float, succeeded: bool) -> None:
        """One request answered; the caller holds its model's lock (served.py): batches
        never touch these two durations."""
        (self.success if succeeded else self.fail).add(seconds)
