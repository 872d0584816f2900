"""Domain objects for one inference call, free of protobuf."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(slots=True)  # not frozen: a frozen dataclass is slower to build, once per request
class InferenceRequest:
    """A decoded ModelInfer request.

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


@dataclass(frozen=True)
class SharedMemoryLocation:
    """Where a tensor lives in a registered system shared memory region."""

    region: str
    offset: int
    byte_size: int
