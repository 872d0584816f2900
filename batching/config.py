"""Typed batching settings, derived by the server from a model's config.

Units are in every name. Priority levels count from 1 (highest); level 0 is never used.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class TimeoutAction(enum.Enum):
    REJECT = "REJECT"  # a request past its queue timeout is answered DEADLINE_EXCEEDED
    DELAY = "DELAY"  # it stays queued but runs only after requests that have not timed out


@dataclass(frozen=True)
class QueuePolicy:
    """Limits of one priority level's queue (Triton's ModelQueuePolicy)."""

    max_queue_size: int = 0  # 0: unbounded by this policy (the scheduler's hard cap still holds)
    default_timeout_us: int = 0  # 0: no queue timeout
    allow_timeout_override: bool = False
    timeout_action: TimeoutAction = TimeoutAction.REJECT


@dataclass(frozen=True)
class BatchingConfig:
    """How one model version's scheduler gathers requests into batches.

    max_batch_size 0 means the model takes no batch dimension: every request runs alone.
    """

    max_batch_size: int = 0
    # False (no dynamic_batching in the config): each request runs as its own batch.
    dynamic_batching: bool = True
    max_queue_delay_us: int = 0
    preferred_batch_sizes: tuple[int, ...] = ()
    preserve_ordering: bool = False
    priority_levels: int = 1
    default_priority_level: int = 1
    default_queue_policy: QueuePolicy = field(default_factory=QueuePolicy)
    priority_queue_policies: dict[int, QueuePolicy] = field(default_factory=dict)
    # Inputs whose dimensions (other than the batch one) may differ between requests; a batch
    # pads them with pad_value to the longest request. Outputs are then sliced back per request.
    padded_inputs: frozenset[str] = frozenset()
    pad_value: int = 0
    # Outputs whose non-batch dimensions follow the padded inputs' lengths and must be sliced.
    sliced_outputs: frozenset[str] = frozenset()
    # A queue never holds more requests than this, whatever the policies say.
    max_queued_requests: int = 10_000
    # Latency-SLO mode: adapt delay and batch size online to keep p99 under this target (0: off).
    latency_target_p99_us: int = 0
    # A batch still running after this long is abandoned: its requests fail (0: no limit).
    execution_timeout_us: int = 0

    def queue_policy(self, priority_level: int) -> QueuePolicy:
        return self.priority_queue_policies.get(priority_level, self.default_queue_policy)

    @property
    def batches(self) -> bool:
        return self.max_batch_size > 0

    @property
    def combines_requests(self) -> bool:
        return self.batches and self.dynamic_batching
