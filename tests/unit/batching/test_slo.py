import pytest

from batching.config import BatchingConfig
from batching.errors import QueueFullError
from batching.slo import LatencyController
from tests.unit.batching.test_scheduler import Harness, x


def test_batch_limit_is_the_largest_batch_whose_compute_fits_half_the_target() -> None:
    controller = LatencyController(target_s=0.010, max_batch_size=8, instances=1)
    assert controller.batch_limit == 8  # nothing measured: the config's
    controller.observe(rows=1, compute_s=0.001)  # 1 ms a row: 5 rows fill half of 10 ms
    assert controller.batch_limit == 5
    controller.observe(rows=5, compute_s=0.020)  # slower now: the limit follows the estimate
    assert controller.batch_limit < 5
    slow = LatencyController(target_s=0.010, max_batch_size=8, instances=1)
    slow.observe(rows=1, compute_s=0.030)  # one row already misses: batches of one, not zero
    assert slow.batch_limit == 1


def test_delay_is_the_configured_one_capped_by_what_the_target_leaves() -> None:
    controller = LatencyController(
        target_s=0.010, max_batch_size=8, instances=1, max_queue_delay_s=0.0005
    )
    assert controller.max_queue_delay_s() == pytest.approx(0.0005)  # not half the target
    controller.observe(rows=1, compute_s=0.0099)  # a full batch would use all of it
    assert controller.max_queue_delay_s() == pytest.approx(0.0001)
    assert LatencyController(0.010, 8, 1).max_queue_delay_s() == 0.0  # no delay configured


def test_admission_predicts_latency_from_the_queue_and_the_instances() -> None:
    controller = LatencyController(target_s=0.010, max_batch_size=1, instances=2)
    assert not controller.would_miss(queued_rows=1000, rows=1)  # nothing measured yet
    controller.observe(rows=1, compute_s=0.002)
    # 7 queued rows = 7 batches over 2 instances = 3.5 batch times ahead, plus its own: 9 ms.
    assert controller.predicted_latency_s(queued_rows=7, rows=1) == pytest.approx(0.009)
    assert not controller.would_miss(queued_rows=7, rows=1)
    assert controller.would_miss(queued_rows=9, rows=1)


def test_nothing_queued_ahead_is_always_admitted() -> None:
    controller = LatencyController(target_s=0.010, max_batch_size=4, instances=1)
    controller.observe(rows=1, compute_s=0.050)  # estimates from an overloaded moment
    assert controller.predicted_latency_s(queued_rows=0, rows=1) > controller.target_s
    assert not controller.would_miss(queued_rows=0, rows=1)
    assert controller.would_miss(queued_rows=1, rows=1)


def test_scheduler_sheds_at_admission_when_the_queue_would_miss_the_target() -> None:
    h = Harness(BatchingConfig(max_batch_size=1, latency_target_p99_us=10_000))
    h.scheduler._slo.observe(rows=1, compute_s=0.006)
    h.submit(x(0))
    (running,) = h.formed()
    h.submit(x(1))  # nothing queued ahead: admitted
    with pytest.raises(QueueFullError, match="cannot answer within its latency target"):
        h.submit(x(2))  # one batch ahead: 6 + 6 ms > 10 ms
    running.run()
    h.run()
    assert h.runtime.batches() == [[0], [1]]


def test_it_does_not_latch_after_an_overload() -> None:
    # The earlier controller refused every request once its estimates said even one row misses
    # the target; with nothing admitted, nothing ran and the estimates never changed.
    h = Harness(BatchingConfig(max_batch_size=4, latency_target_p99_us=10_000))
    h.scheduler._slo.observe(rows=1, compute_s=0.050)  # measured while the machine was swamped
    for value in range(5):  # light load again: one request at a time
        request = h.submit(x(value))
        h.run()
        assert request.done and request.error is None
    assert h.runtime.batches() == [[0], [1], [2], [3], [4]]


def test_at_light_load_a_lone_request_runs_at_once_as_without_a_target() -> None:
    # The earlier controller made every request wait half the target for company.
    config = BatchingConfig(max_batch_size=8, max_queue_delay_us=0, latency_target_p99_us=15_000)
    h = Harness(config)
    request = h.submit(x(1))
    (lead,) = h.formed()  # formed at submit, before any clock advance: no wait
    lead.run()
    assert request.done and request.error is None


def test_under_overload_batches_stay_large_and_the_instance_stays_busy() -> None:
    h = Harness(BatchingConfig(max_batch_size=8, latency_target_p99_us=10_000), gated=False)
    h.scheduler._slo.observe(rows=8, compute_s=0.004)  # 0.5 ms a row: batches of 8 fit
    h.submit(x(0))
    (running,) = h.formed()  # the instance is busy with request 0
    admitted, refused = [], 0
    for value in range(1, 60):
        try:
            admitted.append(h.submit(x(value)))
        except QueueFullError:
            refused += 1
    assert refused > 0
    # Admitted up to what the target allows behind the running batch: 8 ms ahead + 4 ms own
    # would be 12 ms, so at most 8 queued rows (one full batch) plus the head of the next.
    assert 8 <= len(admitted) <= 16
    running.run()
    h.run()
    assert all(request.error is None for request in admitted)
    assert max(len(batch) for batch in h.runtime.batches()) == 8


def test_scheduler_sheds_requests_that_waited_past_the_target_instead_of_running_them() -> None:
    h = Harness(BatchingConfig(max_batch_size=1, latency_target_p99_us=10_000))
    h.submit(x(0))
    (running,) = h.formed()
    late = h.submit(x(1))
    h.clock.advance(0.011)
    running.run()
    h.run()
    assert isinstance(late.error, QueueFullError)
    assert "waited past the latency target" in str(late.error)
    assert h.runtime.batches() == [[0]]


def test_precheck_refuses_before_decoding_what_submit_would_refuse() -> None:
    h = Harness(BatchingConfig(max_batch_size=1, latency_target_p99_us=10_000))
    h.scheduler._slo.observe(rows=1, compute_s=0.006)
    h.scheduler.precheck()  # nothing queued: admitted
    h.submit(x(0))
    h.formed()  # running
    h.submit(x(1))  # queued
    with pytest.raises(QueueFullError, match="cannot answer within its latency target"):
        h.scheduler.precheck()
    Harness(BatchingConfig(max_batch_size=1)).scheduler.precheck()  # no target: never refuses
