"""Errors to gRPC status, in one place, and the one way a call is failed.

A TensorgateError becomes its kind's status with its own (client-safe) message. Anything else is
a bug: it is logged with its traceback and answered INTERNAL with a generic message, so nothing
internal leaks to the client.

Every handler fails its call through `fail`, after its `except` block has ended: the block keeps
only the code and the message, so no frame is left holding the error (and, through its
traceback, the frames that hold the request).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import grpc

from runtimes.errors import InvalidInputError, TensorgateError
from server.grpc_api.registration import Undecodable

log = logging.getLogger(__name__)

INTERNAL_MESSAGE = "internal server error; the server log has the details"

T = TypeVar("T")
CallRecorder = Callable[[str, str], None]


def status_of(error: BaseException) -> tuple[grpc.StatusCode, str]:
    if isinstance(error, TensorgateError):
        return grpc.StatusCode[error.kind.name], str(error)
    return grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE


def failure(method: str, error: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status an error leaves as; an unexpected one is logged with its traceback."""
    if not isinstance(error, TensorgateError):
        log.error("unexpected error in %s", method, exc_info=error)
    return status_of(error)


def fail(context: grpc.ServicerContext, code: grpc.StatusCode, message: str) -> NoReturn:
    """End the call with a status (grpc's abort raises; its server catches it)."""
    context.abort(code, message)
    raise AssertionError("abort returned")  # pragma: no cover - abort always raises


def check_decoded(request: object) -> None:
    """Refuse a request whose bytes did not decode (see grpc_api/registration.py)."""
    if isinstance(request, Undecodable):
        raise InvalidInputError(f"the request is not a valid {request.message_type} message")


def unary(method: Callable[..., T]) -> Callable[..., T]:
    """Wrap a unary RPC method so every exception leaves as a precise status. The servicer's
    `record_call(method, code)` counts every call by its outcome."""
    name = method.__name__

    @functools.wraps(method)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> T:
        record: CallRecorder = self.record_call
        try:
            check_decoded(request)
            response = method(self, request, context)
        except Exception as error:
            code, message = failure(name, error)
        else:
            record(name, "OK")
            return response
        record(name, code.name)
        fail(context, code, message)

    return wrapper
