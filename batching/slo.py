"""Latency-SLO mode: adapt batch size and queue delay online to a p99 latency target.

The controller follows Clipper's AIMD idea. After each batch it looks at the worst server-side
latency in it (the oldest request's queue wait plus the batch's compute): under the target, the
batch size limit grows by one row; over it, the limit shrinks by 10%. The queue delay is half of
what the target leaves after the expected compute time of a full batch, so a lone request never
waits long. Admission control sheds a request at once (RESOURCE_EXHAUSTED) when the rows already
queued would make it miss the target, instead of letting it queue and time out.

Limits: the target covers time inside the server (queue + compute), not the network or the
client; estimates start empty, so the first batches are never shed; the expected compute time is
an average per row, which overestimates small batches (conservative).
"""

from __future__ import annotations

import math

_DECREASE = 0.9
_SMOOTHING = 0.2


class LatencyController:
    """Pure state; the scheduler feeds it observations and reads its limits."""

    def __init__(self, target_s: float, max_batch_size: int, instances: int) -> None:
        if target_s <= 0:
            raise ValueError("the latency target must be positive")
        self.target_s = target_s
        self._max_batch_size = max(1, max_batch_size)
        self._instances = max(1, instances)
        self._limit = 1.0
        self._seconds_per_row: float | None = None

    @property
    def batch_limit(self) -> int:
        return max(1, min(self._max_batch_size, int(self._limit)))

    def expected_compute_s(self, rows: int) -> float:
        return (self._seconds_per_row or 0.0) * rows

    def max_queue_delay_s(self) -> float:
        return max(0.0, 0.5 * (self.target_s - self.expected_compute_s(self.batch_limit)))

    def predicted_latency_s(self, queued_rows: int, rows: int) -> float:
        """Latency of a new request of `rows` rows behind `queued_rows` already queued."""
        if self._seconds_per_row is None:
            return 0.0
        limit = self.batch_limit
        batches_ahead = math.ceil(queued_rows / limit) / self._instances
        return (batches_ahead + 1) * self.expected_compute_s(max(rows, limit))

    def would_miss(self, queued_rows: int, rows: int) -> bool:
        return self.predicted_latency_s(queued_rows, rows) > self.target_s

    def observe(self, rows: int, compute_s: float, worst_latency_s: float) -> None:
        per_row = compute_s / max(1, rows)
        if self._seconds_per_row is None:
            self._seconds_per_row = per_row
        else:
            self._seconds_per_row += _SMOOTHING * (per_row - self._seconds_per_row)
        if worst_latency_s > self.target_s:
            self._limit = max(1.0, self._limit * _DECREASE)
        elif rows >= self.batch_limit:
            # Grow only when batches fill: a half-empty batch says nothing about a bigger one.
            self._limit = min(float(self._max_batch_size), self._limit + 1.0)
