"""The one error tree every layer raises.

It lives in the bottom layer so runtimes and the batcher can raise errors without knowing gRPC.
Each class names a canonical status (ErrorKind); server/status.py turns that into a gRPC code in
one place. The message of a TensorgateError is written for the client and is safe to send.
"""

from __future__ import annotations

import enum


class ErrorKind(enum.Enum):
    """Canonical error categories; names match grpc.StatusCode members."""

    INVALID_ARGUMENT = enum.auto()
    NOT_FOUND = enum.auto()
    ALREADY_EXISTS = enum.auto()
    UNAVAILABLE = enum.auto()
    UNIMPLEMENTED = enum.auto()
    FAILED_PRECONDITION = enum.auto()
    RESOURCE_EXHAUSTED = enum.auto()
    DEADLINE_EXCEEDED = enum.auto()
    CANCELLED = enum.auto()
    INTERNAL = enum.auto()


class TensorgateError(Exception):
    """Base of all expected errors; `str(error)` is the client-facing message."""

    kind: ErrorKind = ErrorKind.INTERNAL


class InvalidInputError(TensorgateError):
    kind = ErrorKind.INVALID_ARGUMENT


class ModelNotFoundError(TensorgateError):
    kind = ErrorKind.NOT_FOUND


class RegionNotFoundError(TensorgateError):
    """A request or call names a shared memory region that is not registered."""

    kind = ErrorKind.NOT_FOUND


class AlreadyExistsError(TensorgateError):
    kind = ErrorKind.ALREADY_EXISTS


class ModelNotReadyError(TensorgateError):
    kind = ErrorKind.UNAVAILABLE


class ShuttingDownError(TensorgateError):
    kind = ErrorKind.UNAVAILABLE


class UnsupportedError(TensorgateError):
    kind = ErrorKind.UNIMPLEMENTED


class NotAllowedError(TensorgateError):
    """The request is valid but the server's mode does not allow it (e.g. repository control
    without --model-control-mode explicit)."""

    kind = ErrorKind.FAILED_PRECONDITION


class CapacityError(TensorgateError):
    """A server-wide capacity limit is reached (e.g. concurrent streams); retry later."""

    kind = ErrorKind.RESOURCE_EXHAUSTED


class QueueFullError(TensorgateError):
    kind = ErrorKind.RESOURCE_EXHAUSTED


class RequestTimeoutError(TensorgateError):
    kind = ErrorKind.DEADLINE_EXCEEDED


class RequestCancelledError(TensorgateError):
    kind = ErrorKind.CANCELLED


class ModelLoadError(TensorgateError):
    """A model could not be loaded; the message says why (shown in repository index)."""

    kind = ErrorKind.INTERNAL


class ModelExecutionError(TensorgateError):
    """The runtime failed or broke its contract while running a batch."""

    kind = ErrorKind.INTERNAL
