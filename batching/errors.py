"""What the batcher answers a request with when it does not run it (or cannot finish it)."""

from __future__ import annotations

from runtimes.errors import ErrorKind, TensorgateError


class QueueFullError(TensorgateError):
    """The queue (a priority level's, or the model's cap) is full, or in latency-SLO mode the
    request could not be answered within the target."""

    kind = ErrorKind.RESOURCE_EXHAUSTED


class RequestTimeoutError(TensorgateError):
    """The request's queue timeout or its caller's deadline passed before it ran."""

    kind = ErrorKind.DEADLINE_EXCEEDED


class RequestCancelledError(TensorgateError):
    """The caller went away while the request was queued; it never ran."""

    kind = ErrorKind.CANCELLED


class SchedulerStoppedError(TensorgateError):
    """The model version is being retired and takes no new requests."""

    kind = ErrorKind.UNAVAILABLE
