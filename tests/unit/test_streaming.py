"""grpc_api/streaming.py: concurrent answers, per-request errors, bounded buffering, cancellation.

The handler's requests are answered when the test says so (`Handler.answer`), so every
interleaving is chosen by the test; the stream's reader is a real thread, and the test waits on
what it does (the requests it starts), never on time passing, except to show that it does
nothing more (`nothing_more`, a bounded wait that cannot pass by being slow).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pytest

from batching.errors import RequestCancelledError
from batching.request import PendingRequest
from batching.waiter import Waiter
from server.grpc_api.streaming import ClientGone, serve_stream
from tests.support.fake_runtime import WAIT_S

LIMIT = 4
QUIET_S = 0.2  # how long the test watches for something that must not happen


class Source:
    """A request stream of ints that counts how many were taken from it (endless by default)."""

    def __init__(self, count: int | None = None, fail_after: int | None = None) -> None:
        self.taken = 0
        self.count = count
        self.fail_after = fail_after

    def __iter__(self) -> Iterator[int]:
        return self

    def __next__(self) -> int:
        if self.fail_after is not None and self.taken >= self.fail_after:
            raise ConnectionError("transport broke")
        if self.count is not None and self.taken >= self.count:
            raise StopIteration
        self.taken += 1
        return self.taken - 1


@dataclass(eq=False)
class Ticket:
    request: int
    pending: PendingRequest


class Handler:
    """Starts each request as a pending one and answers it when the test says."""

    def __init__(self, refuse: frozenset[int] = frozenset()) -> None:
        self.refuse = refuse
        self.started: queue.Queue[Ticket] = queue.Queue()
        self.cancelled: list[int] = []
        self.discarded: list[int] = []

    def start(self, request: int, waiter: Waiter) -> tuple[Ticket, None]:
        if request in self.refuse:
            raise ValueError("bad request")
        pending = PendingRequest({}, ("y",), 1, 1, 0.0, waiter)
        ticket = Ticket(request, pending)
        self.started.put(ticket)
        return ticket, None

    def finish(self, ticket: Ticket) -> str:
        if ticket.pending.error is not None:
            raise ticket.pending.take_error()
        return f"answer {ticket.request}"

    def cancel(self, ticket: Ticket) -> None:
        if not ticket.pending.done:
            self.cancelled.append(ticket.request)
            ticket.pending.finish(None, RequestCancelledError("cancelled"))

    def discard(self, ticket: Ticket) -> None:
        self.discarded.append(ticket.request)

    def next_started(self) -> Ticket:
        return self.started.get(timeout=WAIT_S)

    def nothing_more(self) -> bool:
        try:
            self.started.get(timeout=QUIET_S)
        except queue.Empty:
            return True
        return False

    @staticmethod
    def answer(ticket: Ticket) -> None:
        ticket.pending.finish({"y": np.zeros(1)}, None)


def error_answer(request: int, error: Exception) -> str:
    return f"error {request}: {error}"


def test_answers_every_request_concurrently_in_completion_order() -> None:
    handler = Handler()
    stream = serve_stream(Source(3), handler, error_answer, max_in_flight=LIMIT)
    answers: queue.Queue[str] = queue.Queue()
    consumer = threading.Thread(target=lambda: [answers.put(a) for a in stream])
    consumer.start()
    tickets = [handler.next_started() for _ in range(3)]
    for index in (2, 0, 1):  # the last request finishes first: not held up by the others
        handler.answer(tickets[index])
        assert answers.get(timeout=WAIT_S) == f"answer {index}"
    consumer.join(WAIT_S)
    assert not consumer.is_alive()


def test_an_error_answers_its_request_and_the_stream_goes_on() -> None:
    handler = Handler(refuse=frozenset({1}))
    stream = serve_stream(Source(3), handler, error_answer)
    answered: list[str] = []
    consumer = threading.Thread(target=lambda: answered.extend(stream))
    consumer.start()
    for _ in range(2):
        handler.answer(handler.next_started())
    consumer.join(WAIT_S)
    assert sorted(answered) == ["answer 0", "answer 2", "error 1: bad request"]


def test_on_error_that_raises_ends_the_stream_and_cancels_the_rest() -> None:
    handler = Handler()

    def end_stream(request: int, error: Exception) -> str:
        raise error

    stream = serve_stream(Source(3), handler, end_stream, max_in_flight=LIMIT)
    raised: list[BaseException] = []

    def consume() -> None:
        try:
            next(stream)
        except Exception as error:
            raised.append(error)

    consumer = threading.Thread(target=consume)
    consumer.start()
    failing, *others = (handler.next_started() for _ in range(3))
    failing.pending.finish(None, RequestCancelledError("fatal"))  # any error of a request
    consumer.join(WAIT_S)
    assert [str(error) for error in raised] == ["fatal"]
    assert sorted(handler.cancelled) == [t.request for t in others]
    assert sorted(handler.discarded) == [t.request for t in others]  # their books are closed


def test_a_client_that_reads_no_answers_cannot_make_the_stream_buffer_more() -> None:
    handler, source = Handler(), Source()  # endless
    stream = serve_stream(source, handler, error_answer, max_in_flight=LIMIT)
    first = threading.Thread(target=lambda: next(stream))  # the client reads one answer
    first.start()
    tickets = [handler.next_started() for _ in range(LIMIT)]
    assert handler.nothing_more()  # read but unwritten requests never exceed the limit
    handler.answer(tickets[0])
    first.join(WAIT_S)
    assert handler.nothing_more()  # not written yet: grpc resumes the stream once it is
    second = threading.Thread(target=lambda: next(stream), daemon=True)
    second.start()  # written: the stream is asked for the next answer
    handler.next_started()  # the written answer made room for exactly one more request
    assert handler.nothing_more()
    assert source.taken == LIMIT + 1
    handler.answer(tickets[1])
    second.join(WAIT_S)
    stream.close()


def test_closing_the_stream_cancels_requests_in_flight(caplog: pytest.LogCaptureFixture) -> None:
    handler = Handler()
    stream = serve_stream(Source(), handler, error_answer, max_in_flight=LIMIT, name="s")
    with caplog.at_level("INFO", logger="server.grpc_api.streaming"):
        reader = threading.Thread(target=lambda: next(stream))
        reader.start()
        tickets = [handler.next_started() for _ in range(LIMIT)]
        handler.answer(tickets[0])
        reader.join(WAIT_S)
        stream.close()  # what grpc does when the client cancels
    assert sorted(handler.cancelled) == [t.request for t in tickets[1:]]
    assert "s cancelled by the client" in caplog.text
    assert f"{LIMIT - 1} requests in flight dropped" in caplog.text


def test_a_request_running_when_the_stream_closes_has_its_books_closed_when_it_ends() -> None:
    handler = Handler()
    stream = serve_stream(Source(), handler, error_answer, max_in_flight=2)
    reader = threading.Thread(target=lambda: next(stream))
    reader.start()
    first, running = handler.next_started(), handler.next_started()
    handler.answer(first)
    reader.join(WAIT_S)
    running.pending.queued = False  # taken into a batch: cancel() cannot drop it
    handler.cancel = lambda ticket: None  # type: ignore[method-assign]
    stream.close()
    assert handler.discarded == []
    handler.answer(running)  # its batch ends after the client left
    assert handler.discarded == [running.request]


def test_a_failing_request_stream_ends_with_its_error() -> None:
    handler = Handler()
    stream = serve_stream(Source(fail_after=1), handler, error_answer)
    handler_thread = threading.Thread(target=lambda: handler.answer(handler.next_started()))
    handler_thread.start()
    with pytest.raises(ConnectionError, match="transport broke"):
        for _ in stream:
            pass
    handler_thread.join(WAIT_S)


def test_a_client_that_goes_away_while_answers_are_awaited_ends_the_stream() -> None:
    """grpc does not interrupt a handler blocked waiting for answers: the transport's end-of-call
    callback (on_end) wakes the stream, which ends and drops what it had in flight."""
    handler = Handler()
    ended: list[object] = []
    stream = serve_stream(Source(), handler, error_answer, max_in_flight=2, on_end=ended.append)
    raised: list[BaseException] = []

    def consume() -> None:
        try:
            next(stream)
        except ClientGone as error:
            raised.append(error)

    consumer = threading.Thread(target=consume)
    consumer.start()
    tickets = [handler.next_started() for _ in range(2)]
    (client_gone,) = ended
    client_gone()  # type: ignore[operator]
    consumer.join(WAIT_S)
    assert len(raised) == 1
    assert sorted(handler.cancelled) == [t.request for t in tickets]
