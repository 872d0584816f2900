"""Errors to gRPC status, in one place.

A TensorgateError becomes its kind's status with its own (client-safe) message. Anything else is
a bug: it is logged with its traceback and answered INTERNAL with a generic message, so nothing
internal leaks to the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc

from runtimes.errors import InvalidInputError, TensorgateError
from server.grpc_api.registration import Undecodable

log = logging.getLogger(__name__)

INTERNAL_MESSAGE = "internal server error; the server log has the details"

T = TypeVar("T")


def status_of(error: BaseException) -> tuple[grpc.StatusCode, str]:
    if isinstance(error, TensorgateError):
        return grpc.StatusCode[error.kind.name], str(error)
    return grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE


def _log_unexpected(method: str, error: BaseException) -> None:
    if not isinstance(error, TensorgateError):
        log.error("unexpected error in %s", method, exc_info=error)


# Aborting. Every wrapper aborts after its `except` block, having dropped its reference to the
# request. grpc.aio keeps the AbortError that abort() raises in a reference cycle (through the
# call's state), so whatever that exception reaches stays until a full garbage collection. Raised
# inside the `except`, it would reach the error being handled, its traceback's frames and the
# request they hold: under a stream of large malformed requests that piled up tens of MiB between
# collections (tests/inprocess/test_error_memory.py).
def _failure(
    method: str, error: Exception, record: Callable[[str, str], None]
) -> tuple[grpc.StatusCode, str]:
    """The status an error leaves as (counted, and logged if unexpected)."""
    _log_unexpected(method, error)
    code, message = status_of(error)
    record(method, code.name)
    return code, message


def check_decoded(request: object) -> None:
    """Refuse a request whose bytes did not decode (see server/registration.py)."""
    if isinstance(request, Undecodable):
        raise InvalidInputError(f"the request is not a valid {request.message_type} message")


def unary(method: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
    """Wrap a unary RPC method so every exception leaves as a precise status. The servicer's
    `record_call(method, code)` (if it has one) counts every call by its outcome."""
    name = method.__name__

    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> T:
        record = self.record_call
        try:
            check_decoded(request)
            response = await method(self, request, context)
        except asyncio.CancelledError:
            record(name, "CANCELLED")
            raise
        except grpc.aio.AbortError:
            raise
        except Exception as error:
            code, message = _failure(name, error, record)
        else:
            record(name, "OK")
            return response
        del request  # see "Aborting" above _failure
        await context.abort(code, message)

    return wrapper


def streaming(
    method: Callable[..., AsyncIterator[T]],
) -> Callable[..., AsyncIterator[T]]:
    """Wrap a response-streaming RPC method the same way."""

    @functools.wraps(method)
    async def wrapper(
        self: Any, request: Any, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[T]:
        try:
            async for item in method(self, request, context):
                yield item
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise
        except Exception as error:
            _log_unexpected(method.__name__, error)
            code, message = status_of(error)
        else:
            return
        del request  # see "Aborting" above _failure
        await context.abort(code, message)

    return wrapper


def bidi_streaming(
    method: Callable[..., AsyncIterator[T]],
) -> Callable[..., AsyncIterator[T]]:
    """Wrap a bidirectional-streaming RPC method: an error that ends the stream leaves as its
    precise status, and the call is counted once by its outcome (`record_call`). The method's
    generator is always closed, so its cleanup runs when the client cancels mid-stream."""
    name = method.__name__

    @functools.wraps(method)
    async def wrapper(
        self: Any, request_iterator: Any, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[T]:
        record = self.record_call
        try:
            async with contextlib.aclosing(method(self, request_iterator, context)) as stream:
                async for item in stream:
                    yield item
        except (asyncio.CancelledError, GeneratorExit):
            record(name, "CANCELLED")
            raise
        except grpc.aio.AbortError:
            raise
        except Exception as error:
            code, message = _failure(name, error, record)
        else:
            record(name, "OK")
            return
        del request_iterator  # see "Aborting" above _failure
        await context.abort(code, message)

    return wrapper


def error_message(method: str, error: Exception) -> str:
    """The client-facing message of an error answered inside a stream (the stream goes on);
    an unexpected error is logged with its traceback, as for a status."""
    _log_unexpected(method, error)
    return status_of(error)[1]
