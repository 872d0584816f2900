"""A fake Runtime for scheduler tests: records calls and can be held until the test says go.

infer runs on the scheduler's worker thread; it reports each call to the event loop through an
asyncio.Queue (thread-safe hand-off) and then, if gated, blocks on a threading.Event.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from runtimes.base import RuntimeMetadata, TensorSpec

Compute = Callable[[Mapping[str, np.ndarray], Sequence[str]], dict[str, np.ndarray]]


def double_x(inputs: Mapping[str, np.ndarray], names: Sequence[str]) -> dict[str, np.ndarray]:
    """y = 2 * x, row for row."""
    return {name: inputs["x"] * 2 for name in names}


class FakeRuntime:
    def __init__(self, compute: Compute = double_x, *, gated: bool = False) -> None:
        self._compute = compute
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self.started: asyncio.Queue[dict[str, np.ndarray]] = asyncio.Queue()
        self.calls: list[dict[str, np.ndarray]] = []
        self.threads: list[int] = []  # thread ident of each call
        self.gate = threading.Event()
        if not gated:
            self.gate.set()
        self.closed = False

    def metadata(self) -> RuntimeMetadata:
        spec = TensorSpec("x", "FP32", (-1, 1))
        return RuntimeMetadata((spec,), (TensorSpec("y", "FP32", (-1, 1)),), True, "fake")

    def prepare(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return inputs

    def infer(
        self, inputs: Mapping[str, np.ndarray], output_names: Sequence[str]
    ) -> dict[str, np.ndarray]:
        call = {name: np.array(value) for name, value in inputs.items()}
        self.calls.append(call)
        self.threads.append(threading.get_ident())
        if threading.get_ident() == self._loop_thread:
            self.started.put_nowait(call)
            return self._compute(inputs, output_names)
        self._loop.call_soon_threadsafe(self.started.put_nowait, call)
        if not self.gate.wait(timeout=10):
            raise TimeoutError("test never opened the gate")
        return self._compute(inputs, output_names)

    def close(self) -> None:
        self.closed = True

    async def next_call(self, timeout_s: float = 5.0) -> dict[str, np.ndarray]:
        """The inputs of the next batch this runtime starts (a safety timeout, not a sleep)."""
        return await asyncio.wait_for(self.started.get(), timeout_s)
