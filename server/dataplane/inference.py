"""Domain objects for one inference call, free of any transport's types."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from batching.waiter import Waiter


@dataclass(frozen=True)
class RequestLimits:
    """What one inference request may carry; beyond it the request is INVALID_ARGUMENT."""

    max_inputs: int = 64
    max_tensor_elements: int = 1 << 26
    max_tensor_bytes: int = 256 << 20
    max_bytes_element: int = 16 << 20  # one element of a BYTES tensor


DEFAULT_LIMITS = RequestLimits()


@dataclass(frozen=True)
class SharedMemoryLocation:
    """Where a tensor lives in a registered system shared memory region."""

    region: str
    offset: int
    byte_size: int


@dataclass(slots=True)  # not frozen: a frozen dataclass is slower to build, once per request
class InferenceRequest:
    """A decoded inference request.

    inputs keep the request's order. requested_outputs is empty when the client asked for all.
    priority 0 means the model's default level; timeout_us 0 means the queue policy's default.
    """

    model_name: str
    model_version: str
    id: str
    inputs: dict[str, np.ndarray]
    requested_outputs: tuple[str, ...] = ()
    priority: int = 0
    timeout_us: int = 0
    # Outputs to write into system shared memory instead of the response, by output name.
    shared_memory_outputs: dict[str, SharedMemoryLocation] = field(default_factory=dict)
    # Outputs to answer as their top-k classes (the classification extension), by output name.
    # None unless a request asks: nothing to build per request.
    classifications: Mapping[str, int] | None = None


@dataclass(slots=True)
class InferenceResult:
    """The answer to an InferenceRequest: outputs in the order to send them."""

    model_name: str
    model_version: str
    id: str
    outputs: dict[str, np.ndarray]
    shared_memory_outputs: dict[str, SharedMemoryLocation]


@dataclass(slots=True)
class Call:
    """What a front end knows of the call that carries a request.

    deadline_s is the caller's deadline on the monotonic clock (None: none). waiter is the
    thread that waits for the answer (a front end's, with its blocking hooks); None for a
    plain one. trace_headers carry the caller's W3C trace context (`traceparent`).
    """

    deadline_s: float | None = None
    waiter: Waiter | None = None
    trace_headers: Mapping[str, str] | Sequence[tuple[str, str]] | None = None
