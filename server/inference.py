"""Domain objects for one inference call, free of protobuf."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
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
