"""Clocks the scheduler reads time from and sets timers on.

The scheduler never calls time or asyncio timers directly, so tests drive it with ManualClock and
advance time explicitly instead of sleeping.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable
from typing import Protocol


class TimerHandle(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    """Monotonic seconds and timers on that same time line."""

    def now(self) -> float: ...

    def call_at(self, when_s: float, callback: Callable[[], None]) -> TimerHandle: ...


class MonotonicClock:
    """The real clock: the event loop's monotonic time and timers."""

    def now(self) -> float:
        return time.monotonic()

    def call_at(self, when_s: float, callback: Callable[[], None]) -> TimerHandle:
        loop = asyncio.get_running_loop()
        return loop.call_later(max(0.0, when_s - time.monotonic()), callback)


class _ManualTimer:
    __slots__ = ("callback", "cancelled")

    def __init__(self, callback: Callable[[], None]) -> None:
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class ManualClock:
    """A clock that moves only when told to; due timers fire inside `advance`, in time order."""

    def __init__(self, start_s: float = 1000.0) -> None:
        self._now = start_s
        self._timers: list[tuple[float, int, _ManualTimer]] = []
        self._sequence = itertools.count()

    def now(self) -> float:
        return self._now

    def call_at(self, when_s: float, callback: Callable[[], None]) -> TimerHandle:
        timer = _ManualTimer(callback)
        heapq.heappush(self._timers, (when_s, next(self._sequence), timer))
        return timer

    def advance(self, seconds: float) -> None:
        target = self._now + seconds
        while self._timers and self._timers[0][0] <= target:
            when, _, timer = heapq.heappop(self._timers)
            self._now = max(self._now, when)
            if not timer.cancelled:
                timer.callback()
        self._now = target

    @property
    def pending_timers(self) -> int:
        return sum(1 for _, _, timer in self._timers if not timer.cancelled)


async def wait_for_event(clock: Clock, event: asyncio.Event, until_s: float | None) -> None:
    """Wait until `event` is set or the clock reaches `until_s` (None: no time limit)."""
    if until_s is None:
        await event.wait()
        return
    if clock.now() >= until_s:
        return
    timer = clock.call_at(until_s, event.set)
    try:
        await event.wait()
    finally:
        timer.cancel()
