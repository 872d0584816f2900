"""One served model version: its config, runtime instances, scheduler and instruments."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from batching.scheduler import Scheduler
from runtimes.base import Runtime
from server._proto import model_config_pb2 as mc
from server.models.config import ModelSignature
from server.observability.drift import DriftMonitor
from server.observability.metrics import SUCCESS, ModelMetrics, NullModelMetrics
from server.observability.stats import ModelStats


@dataclass(eq=False)
class ServedModel:
    """A loaded, running model version; the data plane runs its requests."""

    name: str
    version: int
    config: mc.ModelConfig
    signature: ModelSignature
    instances: tuple[Runtime, ...]
    scheduler: Scheduler
    stats: ModelStats = field(default_factory=ModelStats)
    metrics: ModelMetrics | NullModelMetrics = field(default_factory=NullModelMetrics)
    drift: DriftMonitor | None = None
    labels: dict[str, tuple[str, ...]] = field(default_factory=dict)  # by output (label_filename)
    in_flight: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def device(self) -> str:
        return self.instances[0].metadata().device

    def request_started(self) -> None:
        """A request for this version is being answered; request_finished must follow."""
        with self._lock:
            self.in_flight += 1

    def request_moved(self) -> None:
        """A request started here went to another version (it raced a reload)."""
        with self._lock:
            self.in_flight -= 1

    def request_finished(self, started_s: float, outcome: str) -> None:
        """Time a whole request (from `started_s` on the monotonic clock) into statistics and
        metrics, with its outcome (observability/metrics.py OUTCOMES)."""
        seconds = time.monotonic() - started_s
        # One lock for the request's statistics and metrics: what a request updates there, a
        # batch never does (those fields have their own lock), so the two never race.
        with self._lock:
            self.in_flight -= 1
            self.stats.add_request(seconds, outcome == SUCCESS)
            self.metrics.add_request(outcome, seconds)

    def stop(self, timeout_s: float | None = None) -> bool:
        """Finish queued work, then release the runtime sessions; False when work was still
        running after timeout_s (the sessions are then left to the process's exit)."""
        drained = self.scheduler.stop(timeout_s)
        if not drained:
            return False
        for instance in self.instances:
            instance.close()
        if self.drift is not None:
            self.drift.close()
        return True
