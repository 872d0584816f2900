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

import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

_current = threading.local()


class SlotPool:
    """An executor for grpc.server (only `submit` is used) with run slots."""

    def __init__(self, runnable: int, max_threads: int, name: str = "grpc") -> None:
        if runnable < 1 or max_threads < runnable:
            raise ValueError("need 1 <= runnable <= max_threads")
        self._changed = threading.Condition(threading.Lock())
        self._work: deque[tuple[Future[Any], Callable[..., Any], tuple[Any, ...]]] = deque()
        self._free_slots = runnable
        self._threads = 0
        self._idle = 0
        self._max_threads = max_threads
        self._name = name
        self._closed = False

    def submit(self, fn: Callable[..., Any], /, *args: Any) -> Future[Any]:
        future: Future[Any] = Future()
        with self._changed:
            self._work.append((future, fn, args))
            self._start_work_locked()
        return future

    def blocking(self) -> None:
        """The calling pool thread is about to block: lend its slot to the next call."""
        if getattr(_current, "pool", None) is not self:
            return
        with self._changed:
            self._free_slots += 1
            self._start_work_locked()

    def resumed(self) -> None:
        """It runs again: take the slot back (possibly over budget, see the module docstring)."""
        if getattr(_current, "pool", None) is not self:
            return
        with self._changed:
            self._free_slots -= 1

    def close(self) -> None:
        """Let idle threads end; work already submitted still runs."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    def _start_work_locked(self) -> None:
        if self._free_slots <= 0 or not self._work:
            return
        if self._idle:
            self._changed.notify()
        elif self._threads < self._max_threads:
            self._threads += 1
            name = f"{self._name}-{self._threads}"
            threading.Thread(target=self._serve, name=name, daemon=True).start()

    def _serve(self) -> None:
        _current.pool = self
        changed = self._changed
        while True:
            with changed:
                while not (self._work and self._free_slots > 0):
                    if self._closed:
                        self._threads -= 1
                        return
                    self._idle += 1
                    changed.wait()
                    self._idle -= 1
                future, fn, args = self._work.popleft()
                self._free_slots -= 1
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn(*args))
                except BaseException as error:  # grpc's own code catches what handlers raise
                    future.set_exception(error)
            with changed:
                self._free_slots += 1
                self._start_work_locked()
