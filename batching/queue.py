"""Bounded per-priority queues of pending requests.

A request leaves its queue either by being taken into a batch or by its future completing
(timeout, cancellation); completed requests stop counting at once and are skipped lazily when
the queue is walked. Requests whose queue timeout passed with action DELAY move to a separate
queue that is served only after every level's own requests.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

from batching.config import BatchingConfig
from batching.errors import QueueFullError
from batching.request import PendingRequest


class RequestQueues:
    """One FIFO per priority level (1 is served first), with live counts for limits."""

    def __init__(self, config: BatchingConfig) -> None:
        self._config = config
        self._levels: dict[int, deque[PendingRequest]] = {
            level: deque() for level in range(1, config.priority_levels + 1)
        }
        self._delayed: deque[PendingRequest] = deque()
        self._live_per_level = dict.fromkeys(self._levels, 0)
        self.live_requests = 0
        self.live_rows = 0

    def admit(self, request: PendingRequest) -> None:
        """Queue `request`, or raise QueueFullError if its level or the whole queue is full."""
        level = request.priority_level
        max_size = self._config.queue_policy(level).max_queue_size
        if max_size and self._live_per_level[level] >= max_size:
            raise QueueFullError(
                f"the queue for priority level {level} is full ({max_size} requests); retry later"
            )
        if self.live_requests >= self._config.max_queued_requests:
            raise QueueFullError(
                f"the queue is full ({self._config.max_queued_requests} requests); retry later"
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

    def delay(self, request: PendingRequest) -> None:
        """Move a request whose queue timeout passed (action DELAY) behind all others."""
        if request.queued and not request.delayed:
            self._levels[request.priority_level].remove(request)
            request.delayed = True
            self._delayed.append(request)

    def depth(self, level: int) -> int:
        return self._live_per_level[level]

    def oldest(self) -> PendingRequest | None:
        """The request the next batch starts from: the first live one in serving order."""
        for queue in self._serving_order():
            while queue and not queue[0].queued:
                queue.popleft()
            if queue:
                return queue[0]
        return None

    def take(self, first: PendingRequest, max_rows: int) -> list[PendingRequest]:
        """Take `first` and then, in serving order, every live request that shares its group
        key while the rows fit."""
        batch: list[PendingRequest] = []
        rows = 0
        for queue in self._serving_order():
            rows = self._take_matching(queue, first.group_key, batch, rows, max_rows)
            if rows >= max_rows:
                break
        return batch

    def drain(self) -> list[PendingRequest]:
        """Remove and return every live request."""
        live = [r for queue in self._serving_order() for r in queue if r.queued]
        for request in live:
            self._uncount(request)
        for queue in self._serving_order():
            queue.clear()
        return live

    def _serving_order(self) -> Iterator[deque[PendingRequest]]:
        yield from self._levels.values()
        yield self._delayed

    def _take_matching(
        self,
        queue: deque[PendingRequest],
        group_key: tuple[object, ...],
        batch: list[PendingRequest],
        rows: int,
        max_rows: int,
    ) -> int:
        skipped: list[PendingRequest] = []
        while queue and rows < max_rows:
            request = queue.popleft()
            if not request.queued:
                continue
            if request.group_key == group_key and rows + request.rows <= max_rows:
                self._uncount(request)
                batch.append(request)
                rows += request.rows
            else:
                skipped.append(request)
        queue.extendleft(reversed(skipped))
        return rows

    def _uncount(self, request: PendingRequest) -> None:
        request.queued = False
        self._live_per_level[request.priority_level] -= 1
        self.live_requests -= 1
        self.live_rows -= request.rows
