import math

from batching.policy import batch_rows_target, next_flush_s


def flush_at(
    queued_rows: int,
    preferred: tuple[int, ...] = (),
    delay_s: float = 0.5,
    now_s: float = 10.1,
    gap_s: float | None = None,
) -> float:
    return next_flush_s(
        oldest_enqueued_s=10.0,
        queued_rows=queued_rows,
        max_batch_size=8,
        preferred_batch_sizes=preferred,
        max_queue_delay_s=delay_s,
        now_s=now_s,
        expected_arrival_gap_s=gap_s,
    )


def test_a_full_batch_goes_now() -> None:
    assert flush_at(8) == -math.inf
    assert flush_at(9) == -math.inf


def test_a_partial_batch_waits_until_the_oldest_request_has_waited_the_delay() -> None:
    assert flush_at(3) == 10.5
    assert flush_at(1, delay_s=0.0) == 10.0


def test_reaching_the_largest_preferred_size_goes_now_but_a_smaller_one_waits() -> None:
    assert flush_at(4, preferred=(2, 4)) == -math.inf
    assert flush_at(2, preferred=(2, 4)) == 10.5


def test_batch_target_is_the_largest_preferred_size_that_the_queue_fills() -> None:
    assert batch_rows_target(queued_rows=5, max_batch_size=8, preferred_batch_sizes=(2, 4)) == 4
    assert batch_rows_target(queued_rows=3, max_batch_size=8, preferred_batch_sizes=(4,)) == 8
    assert batch_rows_target(queued_rows=20, max_batch_size=8, preferred_batch_sizes=()) == 8
    assert batch_rows_target(queued_rows=20, max_batch_size=8, preferred_batch_sizes=(16,)) == 8


def test_no_wait_when_the_next_request_is_not_expected_before_the_delay_runs_out() -> None:
    # Oldest waited 0.1 s of 0.5 s; requests arrive 0.5 s apart: the next comes too late.
    assert flush_at(1, gap_s=0.5) == -math.inf
    # Requests 0.1 s apart: more will come within the remaining 0.4 s, so wait.
    assert flush_at(1, gap_s=0.1) == 10.5
    # Unknown rate: wait as Triton does.
    assert flush_at(1, gap_s=None) == 10.5
