"""One served model version: its config, runtime instances, scheduler and statistics."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from batching.scheduler import Scheduler
from runtimes.base import Runtime
from server._proto import model_config_pb2 as mc
from server.inference import InferenceRequest
from server.model_config import ModelSignature
from server.stats import ModelStats
from server.validation import validate_inputs, validate_requested_outputs


@dataclass
class ServedModel:
    """A loaded, running model version. `infer` is the core of the ModelInfer RPC."""

    name: str
    version: int
    config: mc.ModelConfig
    signature: ModelSignature
    instances: tuple[Runtime, ...]
    scheduler: Scheduler
    stats: ModelStats = field(default_factory=ModelStats)

    @property
    def device(self) -> str:
        return self.instances[0].metadata().device

    async def infer(
        self, request: InferenceRequest, deadline_s: float | None = None
    ) -> dict[str, np.ndarray]:
        """Validate, queue and run one request; outputs come back in the order to encode them.

        deadline_s is the caller's deadline on the monotonic clock, or None.
        """
        started = time.monotonic()
        try:
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
            )
        except BaseException:
            self.stats.request_failed(time.monotonic() - started)
            raise
        self.stats.request_succeeded(time.monotonic() - started)
        return {name: outputs[name] for name in output_names}

    async def stop(self) -> None:
        """Finish queued work, then release the runtime sessions."""
        await self.scheduler.stop()
        for instance in self.instances:
            instance.close()
