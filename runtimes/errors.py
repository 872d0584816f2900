"""The neutral error base every layer raises, and the errors of the runtime layer.

It lives in the bottom layer so that runtimes and the batcher can raise errors without knowing
any transport. Each class names a canonical status (ErrorKind); a front end turns that into its
own code (a gRPC status, an HTTP status) in one place. The message of a TensorgateError is
written for the client and is safe to send. Errors of the layers above live with them:
batching/errors.py (queueing) and server/dataplane/errors.py (the server's meanings).
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
    UNAUTHENTICATED = enum.auto()
    PERMISSION_DENIED = enum.auto()
    INTERNAL = enum.auto()


class TensorgateError(Exception):
    """Base of all expected errors; `str(error)` is the client-facing message."""

    kind: ErrorKind = ErrorKind.INTERNAL


class InvalidInputError(TensorgateError):
    """The request's data cannot be run: names, datatypes, shapes or values."""

    kind = ErrorKind.INVALID_ARGUMENT


class ModelLoadError(TensorgateError):
    """A model could not be loaded; the message says why (shown in repository index)."""

    kind = ErrorKind.INTERNAL


class ModelExecutionError(TensorgateError):
    """The runtime failed or broke its contract while running a batch."""

    kind = ErrorKind.INTERNAL
