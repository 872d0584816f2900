"""Clocks the scheduler reads time from and sets timers on.

The scheduler never calls time or timers directly, so tests drive it with ManualClock and
advance time explicitly instead of sleeping. The real clock runs every timer of the process on
one daemon thread (TimerThread): a timer callback only takes a lock, moves requests and wakes
their callers; it never runs a model.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol

log = logging.getLogger(__name__)


class TimerHandle(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    """Monotonic seconds and timers on that same time line."""

    def now(self) -> float: ...

    def call_at(self, when_s: float, callback: Callable[[], None]) -> TimerHandle: ...


class _Timer:
    __slots__ = ("callback", "cancelled", "owner")

    def __init__(self, callback: Callable[[], None], owner: _TimerHeap) -> None:
        self.callback = callback
        self.cancelled = False
        self.owner = owner

    def cancel(self) -> None:
        if not self.cancelled:
            self.cancelled = True
            self.owner.cancelled += 1


class _TimerHeap:
    """Timers in time order; cancelled ones are skipped, and swept out when they are most of
    the heap (a deadline per request at thousands of requests a second would otherwise pile up
    until each one's time came)."""

    def __init__(self) -> None:
        self.entries: list[tuple[float, int, _Timer]] = []
        self.cancelled = 0
        self._sequence = itertools.count()

    def push(self, when_s: float, callback: Callable[[], None]) -> _Timer:
        timer = _Timer(callback, self)
        heapq.heappush(self.entries, (when_s, next(self._sequence), timer))
        if self.cancelled > 64 and self.cancelled * 2 > len(self.entries):
            self.entries = [entry for entry in self.entries if not entry[2].cancelled]
            heapq.heapify(self.entries)
            self.cancelled = 0
        return timer

    def pop_due(self, now_s: float) -> list[_Timer]:
        due = []
        while self.entries and self.entries[0][0] <= now_s:
            _, _, timer = heapq.heappop(self.entries)
            if timer.cancelled:
                self.cancelled -= 1
            else:
                timer.cancelled = True  # fired: a later cancel() is a no-op
                due.append(timer)
        return due

    def next_s(self) -> float | None:
        return self.entries[0][0] if self.entries else None


class TimerThread:
    """One daemon thread that runs due timer callbacks in time order, started on first use."""

    def __init__(self) -> None:
        self._heap = _TimerHeap()
        self._changed = threading.Condition(threading.Lock())
        self._thread: threading.Thread | None = None

    def call_at(self, when_s: float, callback: Callable[[], None]) -> TimerHandle:
        with self._changed:
            earliest = self._heap.next_s()
            timer = self._heap.push(when_s, callback)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="timers", daemon=True)
                self._thread.start()
            elif earliest is None or when_s < earliest:
                self._changed.notify()
        return timer

    def _run(self) -> None:
        while True:
            with self._changed:
                due = self._heap.pop_due(time.monotonic())
                while not due:
                    next_s = self._heap.next_s()
                    timeout = None if next_s is None else max(0.0, next_s - time.monotonic())
                    self._changed.wait(timeout)
                    due = self._heap.pop_due(time.monotonic())
            for timer in due:
                try:
                    timer.callback()
                except Exception:  # a bug in a callback must not stop every other timer
                    log.exception("timer callback failed")


_TIMERS = TimerThread()


class MonotonicClock:
    """The real clock: time.monotonic and the process's timer thread."""

    # time.monotonic itself, not a method that calls it: read several times per request.
    now = staticmethod(time.monotonic)

    def call_at(self, when_s: float, callback: Callable[[], None]) -> TimerHandle:
        return _TIMERS.call_at(when_s, callback)


class ManualClock:
    """A clock that moves only when told to; due timers fire inside `advance`, in time order,
    on the thread that advances it."""

    def __init__(self, start_s: float = 1000.0) -> None:
        self._now = start_s
        self._heap = _TimerHeap()
        self._lock = threading.Lock()

    def now(self) -> float:
        return self._now

    def call_at(self, when_s: float, callback: Callable[[], None]) -> TimerHandle:
        with self._lock:
            return self._heap.push(when_s, callback)

    def advance(self, seconds: float) -> None:
        target = self._now + seconds
        while True:
            with self._lock:
                next_s = self._heap.next_s()
                if next_s is None or next_s > target:
                    break
                self._now = max(self._now, next_s)
                due = self._heap.pop_due(self._now)
            for timer in due:
                timer.callback()
        self._now = target

    @property
    def pending_timers(self) -> int:
        with self._lock:
            return sum(1 for _, _, timer in self._heap.entries if not timer.cancelled)
