"""Bidirectional inference streams with bounded buffering; knows nothing of protobuf.

Each request read from the stream runs as its own task, so the requests of one stream are
batched together (and with unary ones) by the model's scheduler; answers leave in the order they
complete and carry their request's id, as Triton's do.

Flow control: a stream holds at most `max_in_flight` requests that have been read but whose
answers are not yet written. At the limit it stops reading, so gRPC's HTTP/2 flow control
pushes back on the client; an answer that the client does not read stalls the write of the
next one, and so reading too. A fast or stalled client therefore costs the server at most
`max_in_flight` requests and answers, whatever it sends.

An error in one request becomes that request's answer (`on_error`), and the stream goes on;
when `on_error` raises instead, the stream ends with that error. When the client cancels, every
request still in flight is cancelled (queued ones are dropped by the scheduler, never run).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

log = logging.getLogger(__name__)

Request = TypeVar("Request")
Response = TypeVar("Response")

DEFAULT_MAX_IN_FLIGHT = 64


async def serve_stream(
    requests: AsyncIterator[Request],
    handle: Callable[[Request], Awaitable[Response]],
    on_error: Callable[[Request, Exception], Response],
    *,
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
    name: str = "stream",
) -> AsyncIterator[Response]:
    """Answer every request of `requests` with `handle`, concurrently, at most `max_in_flight`
    at a time; yield the answers as they complete."""
    if max_in_flight < 1:
        raise ValueError("max_in_flight must be at least 1")
    slots = asyncio.Semaphore(max_in_flight)
    # Finished request tasks, then one end marker: None, or the error that ended reading.
    finished: asyncio.Queue[asyncio.Task[Response] | _End] = asyncio.Queue()
    running: set[asyncio.Task[Response]] = set()

    async def answer(request: Request) -> Response:
        try:
            return await handle(request)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            return on_error(request, error)

    async def read() -> None:
        error: BaseException | None = None
        try:
            while True:
                await slots.acquire()
                try:
                    request = await anext(requests)
                except StopAsyncIteration:
                    return
                task = asyncio.create_task(answer(request))
                running.add(task)
                task.add_done_callback(finished.put_nowait)
        except Exception as exc:
            error = exc
        finally:
            finished.put_nowait(_End(error))

    reader = asyncio.create_task(read(), name=f"{name}-reader")
    reading = True
    ending = ""  # why the stream ends before its requests do
    try:
        while reading or running:
            item = await finished.get()
            if isinstance(item, _End):
                reading = False
                if item.error is not None:
                    raise item.error  # the request stream itself failed
                continue
            running.discard(item)
            yield item.result()  # raises when on_error chose to end the stream
            slots.release()  # written: room for one more request
    except (asyncio.CancelledError, GeneratorExit):
        ending = "cancelled by the client"
        raise
    except Exception:
        ending = "ended by an error"
        raise
    finally:
        dropped = len(running)
        reader.cancel()
        for task in running:
            task.cancel()
        await asyncio.gather(reader, *running, return_exceptions=True)
        if ending:
            log.info("%s %s; %d requests in flight dropped", name, ending, dropped)


class _End:
    __slots__ = ("error",)

    def __init__(self, error: BaseException | None) -> None:
        self.error = error
