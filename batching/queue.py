"""Bounded per-priority queues of pending requests.

A request leaves its queue either by being taken into a batch or by its future completing
(timeout, cancellation); done requests are skipped lazily when the queue is walked.
"""

from __future__ import annotations

from collections import deque

from batching.config import BatchingConfig
from batching.request import PendingRequest
from runtimes.errors import QueueFullError


class RequestQueues:
    """One FIFO per priority level (1 is served first), with live counts for limits."""

    def __init__(self, config: BatchingConfig) -> None:
        self._config = config
        self._levels: dict[int, deque[PendingRequest]] = {
            level: deque() for level in range(1, config.priority_levels + 1)
        }
        self._live_per_level = dict.fromkeys(self._levels, 0)
        self.live_requests = 0
        self.live_rows = 0

    def admit(self, request: PendingRequest) -> None:
        """Queue `request`, or raise QueueFullError if its level or the whole queue is full."""
        level = request.priority_level
        max_size = self._config.queue_policy(level).max_queue_size
        if max_size and self._live_per_level[level] >= max_size:
            raise QueueFullError(
                f"queue for priority level {level} is full ({max_size} requests); retry later"
            )
        if self.live_requests >= self._config.max_queued_requests:
            raise QueueFullError(
                f"queue is full ({self._config.max_queued_requests} requests); retry later"
            )
        self._levels[level].append(request)
        request.queued = True
        self._live_per_level[level] += 1
        self.live_requests += 1
        self.live_rows += request.rows

    def discard(self, request: PendingRequest) -> None:
        """Stop counting a request that completed while queued; the walk drops it later."""
        if request.queued:
            self._uncount(request)

    def depth(self, level: int) -> int:
        return self._live_per_level[level]

    def oldest(self) -> PendingRequest | None:
        """The first live request of the highest non-empty priority level."""
        for queue in self._levels.values():
            while queue and not queue[0].queued:
                queue.popleft()
            if queue:
                return queue[0]
        return None

    def take(self, first: PendingRequest, max_rows: int) -> list[PendingRequest]:
        """Take `first` and then, in priority and arrival order, every live request that shares
        its group key while the rows fit; requests that timed out with DELAY come last."""
        batch = [first]
        self._take_out(first)
        rows = first.rows
        for allow_delayed in (False, True):
            for queue in self._levels.values():
                rows = self._take_matching(
                    queue, first.group_key, batch, rows, max_rows, allow_delayed
                )
                if rows >= max_rows:
                    return batch
        return batch

    def _take_matching(
        self,
        queue: deque[PendingRequest],
        group_key: tuple,
        batch: list[PendingRequest],
        rows: int,
        max_rows: int,
        allow_delayed: bool,
    ) -> int:
        skipped: list[PendingRequest] = []
        while queue and rows < max_rows:
            request = queue.popleft()
            if not request.queued:
                continue
            fits = rows + request.rows <= max_rows
            if fits and request.group_key == group_key and request.delayed == allow_delayed:
                self._uncount(request)
                batch.append(request)
                rows += request.rows
            else:
                skipped.append(request)
        queue.extendleft(reversed(skipped))
        return rows

    def _take_out(self, request: PendingRequest) -> None:
        queue = self._levels[request.priority_level]
        if queue and queue[0] is request:
            queue.popleft()
        self._uncount(request)

    def _uncount(self, request: PendingRequest) -> None:
        request.queued = False
        self._live_per_level[request.priority_level] -= 1
        self.live_requests -= 1
        self.live_rows -= request.rows

    def drain(self) -> list[PendingRequest]:
        """Remove and return every live request (used when a scheduler is torn down)."""
        live = [r for queue in self._levels.values() for r in queue if r.queued]
        for request in live:
            self._uncount(request)
        for queue in self._levels.values():
            queue.clear()
        return live
