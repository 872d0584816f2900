"""A request in a scheduler: its inputs, who waits for it, the times that govern it, its answer."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from batching.clock import TimerHandle
from batching.waiter import Waiter
from runtimes.errors import TensorgateError


@dataclass(eq=False, slots=True)
class PendingRequest:
    """`rows` is the leading (batch) dimension the request brings. `group_key` holds the
    non-batch shape of every input that cannot be padded: only requests with equal keys share a
    batch. Once `done`, exactly one of `outputs` and `error` is set; the error was made, not
    raised, so it carries no traceback (and no frames holding requests alive)."""

    inputs: dict[str, np.ndarray]
    output_names: tuple[str, ...]
    rows: int
    priority_level: int
    enqueued_s: float
    waiter: Waiter
    group_key: tuple[object, ...] = ()
    # Past this time the request is answered DEADLINE_EXCEEDED and never runs.
    reject_at_s: float | None = None
    # Past this time (timeout_action DELAY) it runs only after requests that have not timed out.
    delay_at_s: float | None = None
    delayed: bool = False
    queued: bool = False
    # Opaque to the scheduler: handed back in the BatchReport (the server's request span).
    trace: object | None = None
    timers: list[TimerHandle] | None = None  # its queue timeout and deadline, when armed
    done: bool = False
    outputs: dict[str, np.ndarray] | None = None
    error: TensorgateError | None = None

    def finish(self, outputs: dict[str, np.ndarray] | None, error: TensorgateError | None) -> None:
        """Answer the request (once: a later answer is ignored) and tell its waiter."""
        if self.done:
            return
        self.outputs, self.error, self.done = outputs, error, True
        self.inputs = {}  # the caller has its own reference; the queue need not keep them
        if self.timers:
            for timer in self.timers:
                timer.cancel()
            self.timers = None
        self.waiter.tell_answered(self)

    def take_error(self) -> TensorgateError:
        """The error that failed the request, handed over to be raised: the request lets go
        of it, so the frames its traceback will hold cannot reach it again through the
        request (a reference cycle that would keep the inputs alive until a full collection)."""
        error, self.error = self.error, None
        assert error is not None
        return error


def group_key_of(
    inputs: dict[str, np.ndarray], padded_inputs: frozenset[str]
) -> tuple[object, ...]:
    """Non-batch shapes of the inputs that must match exactly for requests to share a batch."""
    return tuple(
        (name, array.shape[1:])
        for name, array in sorted(inputs.items())
        if name not in padded_inputs
    )
