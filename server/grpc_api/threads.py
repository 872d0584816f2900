"""The handler threads of the gRPC server: many may wait, few run at once.

grpc's synchronous server answers small calls fastest from a small pool (benchmarks/transports.py:
two threads beat grpc.aio and beat larger pools, whose threads fight over the GIL). But a call
that waits for its batch, and an open stream, each hold a thread; with two threads, two waiting
calls would stop the server. So this pool counts run slots, not threads: at most `runnable`
threads run handler code at once, while any number (up to `max_threads`) may be blocked waiting,
each having lent its slot to the next call meanwhile (`blocking` / `resumed`, the waiter hooks of
batching/waiter.py). A thread that resumes takes its slot back even when that puts the pool over
budget, so calls already under way finish before new ones start.
"""

from __future__ import annotations

import _thread
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

_current = threading.local()


class SlotPool:
    """An executor for grpc.server (only `submit` is used) with run slots.

    Idle threads are woken last-in first-out (the one that went idle last has the warmest
    caches), and a thread that finishes a call takes the next queued one itself, waking no
    other: each wake-up is a context switch the call pays for.
    """

    def __init__(self, runnable: int, max_threads: int, name: str = "grpc") -> None:
        if runnable < 1 or max_threads < runnable:
            raise ValueError("need 1 <= runnable <= max_threads")
        self._lock = threading.Lock()
        self._work: deque[tuple[Future[Any], Callable[..., Any], tuple[Any, ...]]] = deque()
        self._free_slots = runnable
        self._threads = 0
        self._sleepers: list[Any] = []  # one held lock per idle thread; releasing wakes it
        self._max_threads = max_threads
        self._name = name
        self._closed = False

    def submit(self, fn: Callable[..., Any], /, *args: Any) -> Future[Any]:
        future: Future[Any] = Future()
        with self._lock:
            self._work.append((future, fn, args))
            self._start_work_locked()
        return future

    def blocking(self) -> None:
        """The calling pool thread is about to block: lend its slot to the next call."""
        if getattr(_current, "pool", None) is not self:
            return
        with self._lock:
            self._free_slots += 1
            self._start_work_locked()

    def resumed(self) -> None:
        """It runs again: take the slot back (possibly over budget, see the module docstring)."""
        if getattr(_current, "pool", None) is not self:
            return
        with self._lock:
            self._free_slots -= 1

    def close(self) -> None:
        """Let idle threads end; work already submitted still runs."""
        with self._lock:
            self._closed = True
            while self._sleepers:
                self._sleepers.pop().release()

    def _start_work_locked(self) -> None:
        if self._free_slots <= 0 or not self._work:
            return
        if self._sleepers:
            self._sleepers.pop().release()
        elif self._threads < self._max_threads:
            self._threads += 1
            name = f"{self._name}-{self._threads}"
            threading.Thread(target=self._serve, name=name, daemon=True).start()

    def _serve(self) -> None:
        _current.pool = self
        lock = self._lock
        while True:
            with lock:
                while not (self._work and self._free_slots > 0):
                    if self._closed:
                        self._threads -= 1
                        return
                    sleeper = _thread.allocate_lock()
                    sleeper.acquire()
                    self._sleepers.append(sleeper)
                    lock.release()
                    try:
                        sleeper.acquire()  # until _start_work_locked or close releases it
                    finally:
                        lock.acquire()
                future, fn, args = self._work.popleft()
                self._free_slots -= 1
                if self._work and self._free_slots > 0:
                    self._start_work_locked()  # more than this thread can take
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn(*args))
                except BaseException as error:  # grpc's own code catches what handlers raise
                    future.set_exception(error)
            # An idle thread must not keep its last call's arguments (an HTTP request's body).
            del future, fn, args
            with lock:
                self._free_slots += 1  # and loop: this thread takes the next call itself
