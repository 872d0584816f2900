"""Dynamic micro-batching: gathers concurrent requests into batches; knows nothing of gRPC."""

from batching.config import BatchingConfig, QueuePolicy, TimeoutAction
from batching.scheduler import Scheduler

__all__ = ["BatchingConfig", "QueuePolicy", "Scheduler", "TimeoutAction"]
