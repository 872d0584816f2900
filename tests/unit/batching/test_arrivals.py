"""The arrival model: the gap between requests, and when waiting for company stops paying."""

from __future__ import annotations

import math

from batching.arrivals import FIRST_SKIP, LONGEST_SKIP, ArrivalModel


def test_gap_is_a_moving_average_of_the_time_between_arrivals() -> None:
    model = ArrivalModel()
    model.arrived(10.0, others_queued=False)
    assert model.expected_gap_s() is None
    model.arrived(11.0, others_queued=False)
    assert model.expected_gap_s() == 1.0
    model.arrived(11.5, others_queued=False)
    assert math.isclose(model.expected_gap_s(), 1.0 + 0.2 * (0.5 - 1.0))


def test_two_futile_waits_stop_lone_requests_waiting_then_a_probe_waits_again() -> None:
    model = ArrivalModel()
    model.arrived(0.0, others_queued=False)
    model.wait_ended(gathered=False)
    assert not model.skipping
    model.wait_ended(gathered=False)
    assert model.skipping and model.expected_gap_s() == math.inf
    for i in range(FIRST_SKIP):
        assert model.skipping
        model.arrived(1.0 + i, others_queued=False)
    assert not model.skipping  # the probe: this request waits again
    model.wait_ended(gathered=False)  # one futile probe is enough now, for twice as long
    for i in range(2 * FIRST_SKIP):
        assert model.skipping
        model.arrived(100.0 + i, others_queued=False)
    assert not model.skipping


def test_the_skip_span_stops_growing() -> None:
    model = ArrivalModel()
    model.wait_ended(gathered=False)
    spans = []
    for _ in range(12):
        model.wait_ended(gathered=False)
        span = 0
        while model.skipping:
            model.arrived(float(span), others_queued=False)
            span += 1
        spans.append(span)
    assert spans[:4] == [FIRST_SKIP, 2 * FIRST_SKIP, 4 * FIRST_SKIP, 8 * FIRST_SKIP]
    assert max(spans) == LONGEST_SKIP


def test_company_ends_the_skipping_at_once() -> None:
    for company in ("a wait that gathered", "an arrival while others are queued"):
        model = ArrivalModel()
        model.arrived(0.0, others_queued=False)
        model.arrived(0.001, others_queued=False)
        model.wait_ended(gathered=False)
        model.wait_ended(gathered=False)
        assert model.skipping
        if company == "a wait that gathered":
            model.wait_ended(gathered=True)
        else:
            model.arrived(0.002, others_queued=True)
        assert not model.skipping
        assert model.expected_gap_s() is not None and model.expected_gap_s() < 1
        model.wait_ended(gathered=False)  # the streak starts over: one futile wait is not enough
        assert not model.skipping
