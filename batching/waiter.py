"""The thread that waits for answers, and may be handed a batch to run (leader/follower).

A waiting caller costs nothing: it blocks on a lock, without the GIL. When a batch that holds
one of its requests is formed, the batch is handed to its waiter, whose thread wakes up, runs it
and answers every request in it. A unary call has a waiter of its own; a stream has one for all
of its requests, which is told of each answer but never leads (a stream's thread may be held up
by its client's flow control, and a batch holds other clients' requests).

A front end can pass `hooks`: told when its thread blocks and when it resumes (it lends its
thread's run slot to another call meanwhile), or subclass the waiter to do more there (the gRPC
front end also watches for the client going away); and `compute_hooks`, told the same around a
batch this thread runs in the runtime (which releases the GIL: other calls can run).
"""

from __future__ import annotations

import _thread
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from batching.request import PendingRequest
    from batching.scheduler import Lead


class BlockingHooks(Protocol):
    def blocking(self) -> None:
        """The calling thread is about to block."""

    def resumed(self) -> None:
        """It runs again."""


class Waiter:
    __slots__ = ("_signal", "can_lead", "cancelled", "compute_hooks", "hooks", "leads")

    def __init__(
        self,
        *,
        can_lead: bool = True,
        hooks: BlockingHooks | None = None,
        compute_hooks: BlockingHooks | None = None,
    ) -> None:
        # Locked: nothing to report. Released: something happened (signals coalesce).
        self._signal = _thread.allocate_lock()
        self._signal.acquire()
        self.can_lead = can_lead
        self.hooks = hooks
        self.compute_hooks = compute_hooks
        self.leads: list[Lead] = []  # batches handed to this thread (rarely more than one)
        # Set (then notify) by the front end when its caller went away.
        self.cancelled = False

    def notify(self) -> None:
        """Wake the waiting thread (from any thread; several notifications may coalesce)."""
        try:  # noqa: SIM105 (contextlib.suppress costs more, and this runs once per request)
            self._signal.release()
        except RuntimeError:  # already released: a wake-up is pending anyway
            pass

    def wait(self) -> None:
        """Block until notified (at once if a notification is pending)."""
        if self._signal.acquire(blocking=False):
            return
        self.blocking()
        try:
            self._signal.acquire()
        finally:
            self.resumed()

    def blocking(self) -> None:
        """The waiting thread is about to block: tell `hooks` (a subclass may do more)."""
        if self.hooks is not None:
            self.hooks.blocking()

    def resumed(self) -> None:
        """It runs again: tell `hooks`."""
        if self.hooks is not None:
            self.hooks.resumed()

    def give(self, lead: Lead) -> None:
        """Hand this waiter's thread a batch to run."""
        self.leads.append(lead)
        self.notify()

    def tell_answered(self, request: PendingRequest) -> None:
        """One of the waiter's requests is answered (a stream's waiter also files it)."""
        self.notify()
