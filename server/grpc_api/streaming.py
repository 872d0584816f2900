"""Bidirectional inference streams on threads, with bounded buffering.

Each request read from the stream is submitted to its model as it arrives, so the requests of
one stream are batched together (and with unary ones) by the model's scheduler; answers leave in
the order they complete and carry their request's id, as Triton's do.

Two threads serve a stream: a reader (started here) that reads and submits requests, and the
gRPC handler thread, which waits for answers and writes them. The stream's waiter never leads a
batch (batching/waiter.py): its thread may be held up by its client's flow control.

Flow control: a stream holds at most `max_in_flight` requests that have been read but whose
answers are not yet written. At the limit the reader stops reading, so gRPC's HTTP/2 flow control
pushes back on the client; an answer the client does not read stalls the write of the next one,
and so reading too. A fast or stalled client therefore costs the server at most `max_in_flight`
requests and answers, whatever it sends.

An error in one request becomes that request's answer (`on_error`), and the stream goes on; when
`on_error` raises instead, the stream ends with that error. When the client cancels, every
request still queued is dropped, never run.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Iterator
from typing import Generic, Protocol, TypeVar

from batching.request import PendingRequest
from batching.scheduler import Lead
from batching.waiter import BlockingHooks, Waiter

log = logging.getLogger(__name__)

Request = TypeVar("Request")
Response = TypeVar("Response")
# The same for StreamHandler, which only takes requests and only gives answers.
Request_contra = TypeVar("Request_contra", contravariant=True)
Response_co = TypeVar("Response_co", covariant=True)
DEFAULT_MAX_IN_FLIGHT = 64


class Submitted(Protocol):
    """What the handler's `start` returns for a request it queued."""

    pending: PendingRequest


Ticket = TypeVar("Ticket", bound=Submitted)


class StreamHandler(Protocol[Request_contra, Ticket, Response_co]):
    def start(self, request: Request_contra, waiter: Waiter) -> tuple[Ticket, Lead | None]:
        """Queue one request (raises when it is refused); a Lead is a batch to run now."""
        ...

    def finish(self, ticket: Ticket) -> Response_co:
        """The answer of an answered request (raises the error that failed it)."""
        ...

    def cancel(self, ticket: Ticket) -> None:
        """Drop the request if it is still queued."""
        ...

    def discard(self, ticket: Ticket) -> None:
        """Close the books on an answered request whose answer nobody will read."""
        ...


class ClientGone(Exception):
    """The client ended the stream (cancelled, or went away) while answers were awaited."""


def serve_stream(
    requests: Iterator[Request],
    handler: StreamHandler[Request, Ticket, Response],
    on_error: Callable[[Request, Exception], Response],
    *,
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
    hooks: BlockingHooks | None = None,
    on_end: Callable[[Callable[[], None]], object] | None = None,
    name: str = "stream",
) -> Iterator[Response]:
    """Answer every request of `requests`, concurrently, at most `max_in_flight` at a time;
    yield the answers as they complete.

    on_end(callback) asks the transport to call back when the call ends (grpc's
    context.add_callback): a client that goes away while the stream waits for answers ends it
    with ClientGone, and everything it had in flight is dropped.
    """
    if max_in_flight < 1:
        raise ValueError("max_in_flight must be at least 1")
    stream = _Stream(requests, handler, on_error, max_in_flight, hooks, name)
    if on_end is not None:
        on_end(stream.client_gone)
    return stream.answers()


class _AnsweredSink(Protocol):
    def answered(self, pending: PendingRequest) -> None: ...


class _StreamWaiter(Waiter):
    """The stream's waiter: answers go to the stream, which writes them or, once the stream
    has stopped, closes their books at once."""

    __slots__ = ("stream",)

    def __init__(self, stream: _AnsweredSink, hooks: BlockingHooks | None) -> None:
        super().__init__(can_lead=False, hooks=hooks)
        self.stream = stream

    def tell_answered(self, request: PendingRequest) -> None:
        self.stream.answered(request)


class _Stream(Generic[Request, Ticket, Response]):
    def __init__(
        self,
        requests: Iterator[Request],
        handler: StreamHandler[Request, Ticket, Response],
        on_error: Callable[[Request, Exception], Response],
        max_in_flight: int,
        hooks: BlockingHooks | None,
        name: str,
    ) -> None:
        self._requests = requests
        self._handler = handler
        self._on_error = on_error
        self._name = name
        self._waiter = _StreamWaiter(self, hooks)
        self._slots = threading.Semaphore(max_in_flight)
        self._lock = threading.Lock()
        # Submitted and not yet written, and the answered ones among them, in answer order.
        self._tickets: dict[PendingRequest, tuple[Request, Ticket]] = {}
        self._answered: deque[PendingRequest] = deque()
        self._refused: deque[Response] = deque()  # answers made when a request was refused
        self._reading = True
        self._read_error: BaseException | None = None
        self._stopped = False
        self._gone = False

    def client_gone(self) -> None:
        self._gone = True
        self._waiter.notify()

    def answers(self) -> Iterator[Response]:
        reader = threading.Thread(target=self._read, name=f"{self._name}-reader", daemon=True)
        reader.start()
        ending = ""
        try:
            yield from self._answer_until_done()
        except (GeneratorExit, ClientGone):
            ending = "cancelled by the client"
            raise
        except Exception:
            ending = "ended by an error"
            raise
        finally:
            dropped = self._stop()
            if ending:
                log.info("%s %s; %d requests in flight dropped", self._name, ending, dropped)

    def answered(self, pending: PendingRequest) -> None:
        """A request's answer came (on whichever thread ran its batch)."""
        with self._lock:
            if not self._stopped:
                self._answered.append(pending)
                abandoned = None
            else:
                abandoned = self._tickets.pop(pending, None)
        if abandoned is None:
            self._waiter.notify()
        else:
            self._handler.discard(abandoned[1])

    def _answer_until_done(self) -> Iterator[Response]:
        while True:
            for answer in self._take_answers():
                yield answer
                self._slots.release()  # written: room for one more request
            with self._lock:
                done = not self._reading and not self._tickets and not self._refused
                error = self._read_error
            if done:
                if error is not None:
                    raise error  # the request stream itself failed
                return
            if self._gone:
                raise ClientGone
            self._waiter.wait()

    def _take_answers(self) -> Iterator[Response]:
        with self._lock:
            refused = list(self._refused)
            self._refused.clear()
            matched = []
            waiting: deque[PendingRequest] = deque()
            while self._answered:
                pending = self._answered.popleft()
                entry = self._tickets.pop(pending, None)
                if entry is None:
                    waiting.append(pending)  # answered before the reader filed its ticket
                else:
                    matched.append(entry)
            self._answered = waiting
        yield from refused
        for request, ticket in matched:
            try:
                answer = self._handler.finish(ticket)
            except Exception as error:
                answer = self._on_error(request, error)  # raises when the stream must end
            yield answer

    def _read(self) -> None:
        try:
            while True:
                self._slots.acquire()
                if self._stopped:
                    return
                try:
                    request = next(self._requests)
                except StopIteration:
                    return
                self._submit(request)
        except Exception as error:  # the request stream broke (not a refused request)
            with self._lock:
                self._read_error = error
        finally:
            with self._lock:
                self._reading = False
            self._waiter.notify()

    def _submit(self, request: Request) -> None:
        try:
            ticket, lead = self._handler.start(request, self._waiter)
        except Exception as error:
            with self._lock:
                self._refused.append(self._on_error(request, error))
            self._waiter.notify()
            return
        with self._lock:
            stopped = self._stopped
            if not stopped:
                self._tickets[ticket.pending] = (request, ticket)
        if stopped:  # the stream ended while this request was being submitted
            self._abandon(request, ticket)
            return
        self._waiter.notify()  # its answer may have come already
        if lead is not None:
            lead.run()  # on this (reader) thread: nothing else is waiting for it

    def _stop(self) -> int:
        """Stop reading; drop what is still queued, and close the books on every request whose
        answer will not be written. Returns how many requests were in flight."""
        with self._lock:
            self._stopped = True
            in_flight = list(self._tickets.values())
            answered = [self._tickets.pop(p, None) for p in self._answered]
            self._answered.clear()
        self._slots.release()  # a reader waiting for room sees the stop
        for entry in answered:
            if entry is not None:
                self._handler.discard(entry[1])
        for _, ticket in in_flight:
            self._handler.cancel(ticket)  # answered now, or when its batch ends: `answered`
        return len(in_flight)

    def _abandon(self, request: Request, ticket: Ticket) -> None:
        self._handler.cancel(ticket)
        if ticket.pending.done:
            self._handler.discard(ticket)
        else:  # running: its answer goes to `answered`, which discards it
            with self._lock:
                self._tickets[ticket.pending] = (request, ticket)
            if ticket.pending.done:  # answered meanwhile, before it was filed
                with self._lock:
                    entry = self._tickets.pop(ticket.pending, None)
                if entry is not None:
                    self._handler.discard(ticket)
