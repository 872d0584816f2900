import pytest

from batching.config import BatchingConfig
from batching.errors import QueueFullError
from batching.slo import LatencyController
from tests.unit.batching.test_scheduler import Harness, x


def test_batch_limit_grows_by_one_per_full_batch_within_target() -> None:
    controller = LatencyController(target_s=0.010, max_batch_size=4, instances=1)
    assert controller.batch_limit == 1
    for expected in (2, 3, 4, 4):
        controller.observe(rows=controller.batch_limit, compute_s=0.001, worst_latency_s=0.002)
        assert controller.batch_limit == expected


def test_batch_limit_does_not_grow_on_half_empty_batches() -> None:
    controller = LatencyController(target_s=0.010, max_batch_size=8, instances=1)
    controller.observe(rows=1, compute_s=0.001, worst_latency_s=0.002)
    controller.observe(rows=1, compute_s=0.001, worst_latency_s=0.002)
    assert controller.batch_limit == 2


def test_a_missed_target_shrinks_the_limit_by_ten_percent() -> None:
    controller = LatencyController(target_s=0.010, max_batch_size=64, instances=1)
    for _ in range(30):
        controller.observe(rows=controller.batch_limit, compute_s=0.001, worst_latency_s=0.002)
    assert controller.batch_limit == 31
    controller.observe(rows=31, compute_s=0.001, worst_latency_s=0.011)
    assert controller.batch_limit == 27


def test_delay_is_half_of_what_the_target_leaves_after_compute() -> None:
    controller = LatencyController(target_s=0.010, max_batch_size=8, instances=1)
    assert controller.max_queue_delay_s() == pytest.approx(0.005)
    controller.observe(rows=1, compute_s=0.002, worst_latency_s=0.003)  # 2 ms a row, limit 2
    assert controller.max_queue_delay_s() == pytest.approx(0.5 * (0.010 - 0.004))


def test_admission_predicts_latency_from_the_queue_and_the_instances() -> None:
    controller = LatencyController(target_s=0.010, max_batch_size=1, instances=2)
    assert not controller.would_miss(queued_rows=1000, rows=1)  # nothing measured yet
    controller.observe(rows=1, compute_s=0.002, worst_latency_s=0.002)
    # 7 queued rows = 7 batches over 2 instances = 3.5 batch times ahead, plus its own: 9 ms.
    assert controller.predicted_latency_s(queued_rows=7, rows=1) == pytest.approx(0.009)
    assert not controller.would_miss(queued_rows=7, rows=1)
    assert controller.would_miss(queued_rows=9, rows=1)


def test_scheduler_sheds_at_admission_when_the_queue_would_miss_the_target() -> None:
    h = Harness(BatchingConfig(max_batch_size=1, latency_target_p99_us=10_000))
    h.scheduler._slo.observe(rows=1, compute_s=0.006, worst_latency_s=0.006)
    h.submit(x(0))
    (running,) = h.formed()
    h.submit(x(1))  # nothing queued ahead: its own 6 ms, within 10 ms
    with pytest.raises(QueueFullError, match="cannot answer within its latency target"):
        h.submit(x(2))  # one batch ahead: 12 ms
    running.run()
    h.run()
    assert h.runtime.batches() == [[0], [1]]


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
