"""Whether the server takes new work, and how much accepted work it is still answering."""

from __future__ import annotations

import threading
import time


class ServerState:
    """Flipped once, at shutdown (`stopping` True: not ready, still serving through the
    shutdown delay; then `accepting` False); counts the inference requests in flight so that
    shutdown can wait for exactly those (refused calls do not count)."""

    def __init__(self) -> None:
        self.accepting = False
        self.stopping = False
        self.last_refused_s = 0.0  # monotonic time of the last request refused while stopping
        # Shutdown's last steps: the accepted work is answered (`drained`), then the transport
        # begins to stop (listener closed, GOAWAY sent); see hold_refusal.
        self.drained = False
        self.transport_stopping = threading.Event()
        self._in_flight = 0
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)  # notified only while stopping

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def begin(self) -> None:
        """A request is being answered; end() must follow (a plain pair, not a context
        manager: this runs on every request)."""
        with self._lock:
            self._in_flight += 1

    def end(self) -> None:
        with self._lock:
            self._in_flight -= 1
            if not self._in_flight and not self.accepting:
                self._idle.notify_all()

    def wait_idle(self, deadline_s: float) -> bool:
        """Wait until no request is in flight; False if the monotonic deadline passed first."""
        with self._lock:
            while self._in_flight:
                remaining = deadline_s - time.monotonic()
                if remaining <= 0:
                    return False
                self._idle.wait(remaining)
        return True

    def wait_settled(self, quiet_s: float, deadline_s: float) -> None:
        """After the drain: wait until no request has been refused for quiet_s, or the
        deadline. A call that reaches gRPC just as its server stops is cancelled, not refused
        (grpc's Python servers take one call at a time off the transport, and those still
        waiting there are dropped); clients whose last request was just answered send their
        next one now, so a short quiet lets those be refused UNAVAILABLE instead. Bounded:
        clients that retry without pause cannot hold shutdown beyond deadline_s."""
        started_s = time.monotonic()
        while (now := time.monotonic()) < deadline_s:
            remaining_quiet = quiet_s - (now - max(started_s, self.last_refused_s))
            if remaining_quiet <= 0:
                return
            time.sleep(min(remaining_quiet, deadline_s - now))

    def hold_refusal(self, limit_s: float) -> None:
        """For a call that arrived after `accepting` turned False: once the accepted work is
        drained, keep it until the transport has begun to stop (or limit_s passes); then it is
        refused. During the drain it is refused at once, so clients go elsewhere without delay.

        A client that retries each refusal at once keeps calls arriving in the transport, and
        grpc cancels those it has not handed to a handler when its server stops: CANCELLED,
        which clients do not retry. Held here, each such client has its one call in a handler
        when the server stops; the refusal (UNAVAILABLE) goes out after the listener has closed
        and the connection been told to go away, so its retry finds no server instead."""
        if not self.drained:
            return
        self.last_refused_s = time.monotonic()  # shutdown waits for arrivals to settle
        self.transport_stopping.wait(max(0.0, limit_s))
