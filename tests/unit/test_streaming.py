"""server.streaming: concurrent answers, per-request errors, bounded buffering, cancellation.

Handlers are gated by asyncio events, so every interleaving is chosen by the test; `_settle`
only lets already-runnable tasks run (it waits for no time).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from server.grpc_api.streaming import serve_stream

LIMIT = 4


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), timeout=30))


async def _settle() -> None:
    for _ in range(50):
        await asyncio.sleep(0)


class Source:
    """An endless request stream that counts how many requests were taken from it."""

    def __init__(self, count: int | None = None) -> None:
        self.taken = 0
        self.count = count

    def __aiter__(self) -> AsyncIterator[int]:
        return self

    async def __anext__(self) -> int:
        if self.count is not None and self.taken >= self.count:
            raise StopAsyncIteration
        self.taken += 1
        return self.taken - 1


def _error_answer(request: int, error: Exception) -> str:
    return f"error {request}: {error}"


def test_answers_every_request_concurrently_in_completion_order():
    async def test() -> None:
        gates = [asyncio.Event() for _ in range(3)]

        async def handle(request: int) -> str:
            await gates[request].wait()
            return f"answer {request}"

        stream = serve_stream(Source(3), handle, _error_answer, max_in_flight=LIMIT)
        gates[2].set()  # the last request finishes first: it is not held up by the others
        assert await anext(stream) == "answer 2"
        gates[0].set()
        assert await anext(stream) == "answer 0"
        gates[1].set()
        assert await anext(stream) == "answer 1"
        with pytest.raises(StopAsyncIteration):
            await anext(stream)

    run(test)


def test_an_error_answers_its_request_and_the_stream_goes_on():
    async def test() -> None:
        async def handle(request: int) -> str:
            if request == 1:
                raise ValueError("bad request")
            return f"answer {request}"

        answers = [a async for a in serve_stream(Source(3), handle, _error_answer)]
        assert sorted(answers) == ["answer 0", "answer 2", "error 1: bad request"]

    run(test)


def test_on_error_that_raises_ends_the_stream_and_cancels_the_rest():
    async def test() -> None:
        cancelled = []
        never = asyncio.Event()

        async def handle(request: int) -> str:
            if request == 0:
                raise ValueError("fatal")
            try:
                await never.wait()
            except asyncio.CancelledError:
                cancelled.append(request)
                raise
            return "unreachable"

        def end_stream(request: int, error: Exception) -> str:
            raise error

        stream = serve_stream(Source(3), handle, end_stream, max_in_flight=LIMIT)
        with pytest.raises(ValueError, match="fatal"):
            await anext(stream)
        assert sorted(cancelled) == [1, 2]

    run(test)


def test_a_client_that_reads_no_answers_cannot_make_the_stream_buffer_more():
    async def test() -> None:
        source = Source()  # endless

        async def handle(request: int) -> int:
            return request

        stream = serve_stream(source, handle, _error_answer, max_in_flight=LIMIT)
        first = await anext(stream)  # one answer is taken; the client then reads no more
        assert first == 0
        await _settle()
        # Read but unwritten requests never exceed the limit, however fast the source is.
        assert source.taken == LIMIT
        await anext(stream)  # each answer written makes room for exactly one more request
        await _settle()
        assert source.taken == LIMIT + 1
        await stream.aclose()

    run(test)


def test_slow_requests_hold_their_slots():
    async def test() -> None:
        source = Source()
        gate = asyncio.Event()

        async def handle(request: int) -> int:
            await gate.wait()
            return request

        stream = serve_stream(source, handle, _error_answer, max_in_flight=LIMIT)
        waiting = asyncio.ensure_future(anext(stream))
        await _settle()
        assert source.taken == LIMIT and not waiting.done()
        gate.set()
        assert await waiting in range(LIMIT)
        await stream.aclose()

    run(test)


def test_closing_the_stream_cancels_requests_in_flight(caplog: pytest.LogCaptureFixture):
    async def test() -> None:
        gate = asyncio.Event()
        cancelled = []

        async def handle(request: int) -> int:
            if request == 0:
                return 0
            try:
                await gate.wait()
            except asyncio.CancelledError:
                cancelled.append(request)
                raise
            return request

        source = Source()
        stream = serve_stream(source, handle, _error_answer, max_in_flight=LIMIT, name="s")
        assert await anext(stream) == 0
        await _settle()
        await stream.aclose()  # what grpc does when the client cancels
        assert sorted(cancelled) == list(range(1, source.taken))
        assert len(cancelled) == LIMIT - 1  # the answered one still held its slot

    with caplog.at_level("INFO", logger="server.grpc_api.streaming"):
        run(test)
    assert "s cancelled by the client" in caplog.text
    assert "requests in flight dropped" in caplog.text


def test_a_failing_request_stream_ends_with_its_error():
    async def test() -> None:
        async def requests() -> AsyncIterator[int]:
            yield 0
            raise ConnectionError("transport broke")

        async def handle(request: int) -> int:
            return request

        stream = serve_stream(requests(), handle, _error_answer)
        with pytest.raises(ConnectionError, match="transport broke"):
            async for _ in stream:
                pass

    run(test)
