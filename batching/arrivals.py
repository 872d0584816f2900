"""What a scheduler expects of the next request, learned from the requests so far.

Two things: the typical gap between arrivals (a moving average), which lets a batch go at once
when the next request is not expected before the queue delay runs out; and whether waiting for
company has been gathering any. A closed-loop client at low concurrency (one request in flight,
the next sent when the answer comes) never sends while its request waits, however short the
gap between its requests, so a queue delay only adds to its latency: after waits that gathered
nothing, lone requests stop waiting, with a probe wait now and then (less and less often while
they keep gathering nothing). A request that arrives while another is queued shows there is
concurrency again and ends the skipping at once.
"""

from __future__ import annotations

import math

# Consecutive futile waits before lone requests stop waiting.
FUTILE_WAITS_TO_STOP = 2
# Lone requests that skip the wait after the first futile streak; doubled after each futile probe.
FIRST_SKIP = 16
LONGEST_SKIP = 1024
_SMOOTHING = 0.2


class ArrivalModel:
    def __init__(self) -> None:
        self.arrivals = 0  # requests seen, for telling whether any arrived during a wait
        self._gap_s: float | None = None
        self._last_s: float | None = None
        self._futile_waits = 0
        self._skips_left = 0
        self._skip_span = FIRST_SKIP

    def arrived(self, now_s: float, others_queued: bool) -> None:
        """A request arrived at now_s; others_queued: requests were already waiting."""
        self.arrivals += 1
        if self._last_s is not None:
            gap = now_s - self._last_s
            previous = self._gap_s
            self._gap_s = gap if previous is None else previous + _SMOOTHING * (gap - previous)
        self._last_s = now_s
        if others_queued:
            self._waiting_pays()
        elif self._skips_left:
            self._skips_left -= 1

    def expected_gap_s(self) -> float | None:
        """The time until the next request is expected (None: not known yet); infinite while
        waiting has been gathering nothing."""
        return math.inf if self._skips_left else self._gap_s

    def wait_ended(self, gathered: bool) -> None:
        """A batch went after waiting for company; gathered: it found some."""
        if gathered:
            self._waiting_pays()
            return
        self._futile_waits += 1
        if self._futile_waits >= FUTILE_WAITS_TO_STOP:
            self._skips_left = self._skip_span
            self._skip_span = min(2 * self._skip_span, LONGEST_SKIP)
            # One more futile probe is enough to stop waiting again.
            self._futile_waits = FUTILE_WAITS_TO_STOP - 1

    @property
    def skipping(self) -> bool:
        return self._skips_left > 0

    def _waiting_pays(self) -> None:
        self._futile_waits = 0
        self._skips_left = 0
        self._skip_span = FIRST_SKIP
