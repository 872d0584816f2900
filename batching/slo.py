"""Latency-SLO mode: batch sizes and admission chosen online to keep server-side latency (queue
wait + compute) under a p99 target, serving as much as the instances can.

Three rules, each from a failure of the earlier AIMD controller (issue: it latched into refusing
everything after an overload, served a quarter of the plain batcher's goodput under overload,
and was slower than no target at light load):

- **Batch limit from the compute estimate.** The largest batch whose expected compute fits in
  half the target (the other half is for waiting behind the batch running); the whole
  max_batch_size until something is measured. Under overload, batches stay as large as the
  target allows, which is where goodput comes from; queueing never shrinks them.
- **The plain batcher's delay.** A lone request waits no longer than the model's configured
  max_queue_delay (capped by what the target leaves after a full batch): room under the target
  is not a reason to wait. With an idle instance and nothing queued, a request runs at once.
- **Admission.** A request is refused at once (RESOURCE_EXHAUSTED) when the rows queued ahead of
  it would make it miss the target; a request with nothing queued ahead is always admitted. That
  keeps an instance busy whenever requests are being refused, and it is how the estimates follow
  the load back down after an overload: a controller that refused such a request would never
  measure again.

Limits: the target covers time inside the server, not the network or the client; the compute
estimate is an average per row, which overestimates small batches (errs on the side of
shedding); requests that waited past the target anyway are answered RESOURCE_EXHAUSTED instead
of being run (batching/scheduler.py `_drop_late`).
"""

from __future__ import annotations

import math

_SMOOTHING = 0.2


class LatencyController:
    """Pure state; the scheduler feeds it observations and reads its limits."""

    def __init__(
        self,
        target_s: float,
        max_batch_size: int,
        instances: int,
        max_queue_delay_s: float = 0.0,
    ) -> None:
        if target_s <= 0:
            raise ValueError("the latency target must be positive")
        self.target_s = target_s
        self._max_batch_size = max(1, max_batch_size)
        self._instances = max(1, instances)
        self._configured_delay_s = max(0.0, max_queue_delay_s)
        self._seconds_per_row: float | None = None

    @property
    def batch_limit(self) -> int:
        if not self._seconds_per_row:
            return self._max_batch_size
        fits = int(0.5 * self.target_s / self._seconds_per_row)
        return max(1, min(self._max_batch_size, fits))

    def expected_compute_s(self, rows: int) -> float:
        return (self._seconds_per_row or 0.0) * rows

    def max_queue_delay_s(self) -> float:
        room = self.target_s - self.expected_compute_s(self.batch_limit)
        return max(0.0, min(self._configured_delay_s, room))

    def predicted_latency_s(self, queued_rows: int, rows: int) -> float:
        """Latency of a new request of `rows` rows behind `queued_rows` already queued: the
        batches ahead of it, shared among the instances, then its own."""
        if self._seconds_per_row is None:
            return 0.0
        limit = self.batch_limit
        batches_ahead = math.ceil(queued_rows / limit) / self._instances
        return (batches_ahead + 1) * self.expected_compute_s(max(rows, limit))

    def would_miss(self, queued_rows: int, rows: int) -> bool:
        if queued_rows == 0:
            return False  # runs as soon as an instance frees: always admitted (see above)
        return self.predicted_latency_s(queued_rows, rows) > self.target_s

    def observe(self, rows: int, compute_s: float) -> None:
        """A batch of `rows` rows took `compute_s` in the runtime."""
        per_row = compute_s / max(1, rows)
        if self._seconds_per_row is None:
            self._seconds_per_row = per_row
        else:
            self._seconds_per_row += _SMOOTHING * (per_row - self._seconds_per_row)
