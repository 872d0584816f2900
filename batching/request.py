"""A request waiting in a scheduler queue."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import numpy as np


@dataclass(eq=False, slots=True)
class PendingRequest:
    """Inputs and the future its caller awaits, plus the times that govern it.

    `rows` is the leading (batch) dimension the request brings. `group_key` holds the non-batch
    shape of every input that cannot be padded: only requests with equal keys share a batch.
    """

    inputs: dict[str, np.ndarray]
    output_names: tuple[str, ...]
    rows: int
    priority_level: int
    enqueued_s: float
    future: asyncio.Future[dict[str, np.ndarray]]
    group_key: tuple[object, ...] = ()
    # Past this time the request is answered DEADLINE_EXCEEDED and never runs.
    reject_at_s: float | None = None
    # Past this time (timeout_action DELAY) it runs only after requests that have not timed out.
    delay_at_s: float | None = None
    delayed: bool = False
    queued: bool = field(default=False)
    # Opaque to the scheduler: handed back in the BatchReport (the server's request span).
    trace: object | None = None

    @property
    def live(self) -> bool:
        """Still wanted: not answered, timed out or cancelled by its caller."""
        return not self.future.done()


def group_key_of(inputs: dict[str, np.ndarray], padded_inputs: frozenset[str]) -> tuple:
    """Non-batch shapes of the inputs that must match exactly for requests to share a batch."""
    return tuple(
        (name, array.shape[1:])
        for name, array in sorted(inputs.items())
        if name not in padded_inputs
    )
