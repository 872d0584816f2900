"""The small Runtime protocol every backend implements.

Contract: `infer` receives every input with the same leading batch dimension N (when the model
batches) and returns every requested output with N rows. The batcher checks that contract.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
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


@dataclass(frozen=True)
class RuntimeSpec:
    """Everything a runtime factory needs to build one instance of a model version.

    declared_inputs/outputs come from the model's config (full shapes, -1 for the batch
    dimension when max_batch_size > 0); runtimes that read a graph may ignore them, runtimes
    that have no graph (python) report them as their metadata. An empty model_filename means
    the runtime's own default file name.
    """

    model_name: str
    version_dir: Path
    model_filename: str = ""
    parameters: Mapping[str, str] = field(default_factory=dict)
    declared_inputs: tuple[TensorSpec, ...] = ()
    declared_outputs: tuple[TensorSpec, ...] = ()
    max_batch_size: int = 0
    device: str = "cpu"  # "cpu" or "gpu"
    device_id: int = 0
    accelerator: str = ""  # e.g. "tensorrt"
    accelerator_parameters: Mapping[str, str] = field(default_factory=dict)


class RuntimeFactory(Protocol):
    """Builds a loaded Runtime; raises runtimes.errors.ModelLoadError with a clear reason."""

    def __call__(self, spec: RuntimeSpec) -> Runtime: ...


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
