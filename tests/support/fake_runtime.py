"""A fake Runtime for scheduler tests: records each call, and can hold it until the test says go.

Without a gate, `infer` runs on the calling thread and returns at once, so a test that runs the
scheduler's batches on its own thread stays single-threaded and deterministic. With `gated`,
each call reports itself (`next_call`) and blocks until the test sets `gate`: for tests where
callers run on threads of their own.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from runtimes.base import RuntimeMetadata, TensorSpec

Compute = Callable[[Mapping[str, np.ndarray], Sequence[str]], dict[str, np.ndarray]]
WAIT_S = 10.0  # a safety limit for a test that went wrong, never a sleep


def double_x(inputs: Mapping[str, np.ndarray], names: Sequence[str]) -> dict[str, np.ndarray]:
    """y = 2 * x, row for row."""
    return {name: inputs["x"] * 2 for name in names}


class FakeRuntime:
    def __init__(self, compute: Compute = double_x, *, gated: bool = False) -> None:
        self.compute = compute
        self.started: queue.Queue[dict[str, np.ndarray]] = queue.Queue()
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
        self.started.put(call)
        if not self.gate.wait(timeout=WAIT_S):
            raise TimeoutError("the test never opened the gate")
        return self.compute(inputs, output_names)

    def close(self) -> None:
        self.closed = True

    def next_call(self) -> dict[str, np.ndarray]:
        """The inputs of the next batch this runtime starts (a safety timeout, not a sleep)."""
        return self.started.get(timeout=WAIT_S)

    def batches(self) -> list[list[float]]:
        """Every call's x values, in call order."""
        return [call["x"].ravel().tolist() for call in self.calls]


class Blocked:
    """Waiter hooks that count the callers that blocked: the test waits on them, not on time."""

    def __init__(self) -> None:
        self._count = threading.Semaphore(0)

    def blocking(self) -> None:
        self._count.release()

    def resumed(self) -> None:
        pass

    def wait_for(self, callers: int) -> None:
        for _ in range(callers):
            assert self._count.acquire(timeout=WAIT_S), "a caller never blocked"
