"""The server's own error meanings; the layers below have theirs (runtimes/, batching/)."""

from __future__ import annotations

from runtimes.errors import ErrorKind, TensorgateError


class ModelNotFoundError(TensorgateError):
    kind = ErrorKind.NOT_FOUND


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


class RegionNotFoundError(TensorgateError):
    """A request or call names a shared memory region that is not registered."""

    kind = ErrorKind.NOT_FOUND


class AlreadyExistsError(TensorgateError):
    kind = ErrorKind.ALREADY_EXISTS


class UnauthenticatedError(TensorgateError):
    kind = ErrorKind.UNAUTHENTICATED


class PermissionDeniedError(TensorgateError):
    kind = ErrorKind.PERMISSION_DENIED
