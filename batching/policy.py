"""Pure batching decisions: when to send the next batch and how many rows to put in it.

Rules (Triton's dynamic batcher semantics):
- send at once when the queue holds max_batch_size rows, or the largest preferred batch size;
- send at once when the next request is not expected before the delay runs out (arrivals are
  further apart than the wait): waiting would add latency and gather nothing. max_queue_delay is
  a maximum, so this stays within Triton's semantics;
- otherwise wait until the oldest request has waited max_queue_delay;
- a batch takes the largest preferred size the queue can fill, else as much as fits.
"""

from __future__ import annotations

from collections.abc import Sequence


def next_flush_s(
    *,
    oldest_enqueued_s: float,
    queued_rows: int,
    max_batch_size: int,
    preferred_batch_sizes: Sequence[int],
    max_queue_delay_s: float,
    now_s: float,
    expected_arrival_gap_s: float | None = None,
) -> float:
    """The time at which the next batch should go; a time not after now means now.

    expected_arrival_gap_s is the typical time between requests (None: not known yet).
    """
    if queued_rows >= max_batch_size:
        return float("-inf")
    if preferred_batch_sizes and queued_rows >= max(preferred_batch_sizes):
        return float("-inf")
    flush_at = oldest_enqueued_s + max_queue_delay_s
    if expected_arrival_gap_s is not None and now_s + expected_arrival_gap_s > flush_at:
        return float("-inf")
    return flush_at


def batch_rows_target(
    *, queued_rows: int, max_batch_size: int, preferred_batch_sizes: Sequence[int]
) -> int:
    """How many rows the batch being formed should hold at most."""
    fitting = [size for size in preferred_batch_sizes if size <= min(queued_rows, max_batch_size)]
    return max(fitting) if fitting else max_batch_size
