"""The small Runtime protocol every backend implements.

Contract: `infer` receives every input with the same leading batch dimension N (when the model
batches) and returns every requested output with N rows. The batcher checks that contract.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class TensorSpec:
    """A model tensor: protocol datatype name and shape, -1 marking a variable dimension.

    The shape is the full graph shape, including the batch dimension when the model batches.
    """

    name: str
    datatype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class RuntimeMetadata:
    """What a loaded runtime found in the model."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    # True when every input and output has a variable leading dimension, so rows can be stacked.
    supports_batching: bool
    # The execution provider actually active, e.g. "CPUExecutionProvider".
    device: str


class Runtime(Protocol):
    """A loaded model instance. `infer` may be called from a worker thread, one call at a time."""

    def metadata(self) -> RuntimeMetadata: ...

    def prepare(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Per-request conversions and checks, run before queueing, so that one request's
        bad data fails that request alone rather than the batch it would have joined."""
        ...

    def infer(
        self, inputs: Mapping[str, np.ndarray], output_names: Sequence[str]
    ) -> dict[str, np.ndarray]: ...

    def close(self) -> None: ...
