"""One served model version: its config, runtime instances, scheduler and instruments."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from batching.scheduler import Scheduler
from runtimes.base import Runtime
from server._proto import model_config_pb2 as mc
from server.dataplane.inference import InferenceRequest
from server.dataplane.validation import validate_inputs, validate_requested_outputs
from server.models.config import ModelSignature
from server.observability.drift import DriftMonitor
from server.observability.metrics import ModelMetrics, NullModelMetrics, outcome_of
from server.observability.stats import ModelStats


@dataclass(eq=False)
class ServedModel:
    """A loaded, running model version. `infer` is the core of the ModelInfer RPC."""

    name: str
    version: int
    config: mc.ModelConfig
    signature: ModelSignature
    instances: tuple[Runtime, ...]
    scheduler: Scheduler
    stats: ModelStats = field(default_factory=ModelStats)
    metrics: ModelMetrics | NullModelMetrics = field(default_factory=NullModelMetrics)
    drift: DriftMonitor | None = None
    in_flight: int = 0

    @property
    def device(self) -> str:
        return self.instances[0].metadata().device

    def request_started(self) -> None:
        """A request for this version is being answered; request_finished must follow."""
        self.in_flight += 1

    def request_finished(self, started_s: float, error: BaseException | None) -> None:
        """Time a whole request (decode to encode, from `started_s` on the monotonic clock)
        into statistics and metrics, with its outcome taken from the error that ended it."""
        seconds = time.monotonic() - started_s
        self.in_flight -= 1
        if error is None:
            self.stats.request_succeeded(seconds)
        else:
            self.stats.request_failed(seconds)
        self.metrics.request_finished(outcome_of(error), seconds)

    async def infer(
        self,
        request: InferenceRequest,
        deadline_s: float | None = None,
        trace: object | None = None,
    ) -> dict[str, np.ndarray]:
        """Validate, queue and run one request; outputs come back in the order to encode them.

        deadline_s is the caller's deadline on the monotonic clock, or None; trace is the
        request's span, handed to the batch that runs it.
        """
        validate_inputs(self.name, self.signature, request.inputs)
        output_names = validate_requested_outputs(
            self.name, self.signature, request.requested_outputs
        )
        inputs = self.instances[0].prepare(request.inputs)
        outputs = await self.scheduler.submit(
            inputs,
            output_names,
            priority_level=request.priority,
            timeout_us=request.timeout_us,
            deadline_s=deadline_s,
            trace=trace,
        )
        ordered = {name: outputs[name] for name in output_names}
        if self.drift is not None:
            self.drift.offer(request.inputs, ordered)
        return ordered

    async def stop(self) -> None:
        """Finish queued work, then release the runtime sessions."""
        await self.scheduler.stop()
        for instance in self.instances:
            instance.close()
        if self.drift is not None:
            self.drift.close()
