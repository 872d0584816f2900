"""Scheduler behaviour, driven by a ManualClock and a FakeRuntime (no sleeps).

Most tests are single-threaded: the test submits requests, then runs the batches the scheduler
formed (`Harness.run`), as the callers' threads would; a batch that finishes forms the next one
and hands it on, and `run` goes on until nothing is left to run. Tests of the blocking `infer`
path use real threads and a gated runtime.
"""

from __future__ import annotations

import gc
import threading
import weakref

import numpy as np
import pytest

from batching.clock import ManualClock
from batching.config import BatchingConfig, QueuePolicy, TimeoutAction
from batching.errors import (
    QueueFullError,
    RequestCancelledError,
    RequestTimeoutError,
    SchedulerStoppedError,
)
from batching.observer import BatchReport
from batching.request import PendingRequest
from batching.scheduler import Lead, Scheduler
from batching.waiter import Waiter
from runtimes.errors import InvalidInputError, ModelExecutionError
from tests.support.fake_runtime import WAIT_S, Blocked, FakeRuntime, double_x


def x(*values: float, width: int = 1) -> dict[str, np.ndarray]:
    return {"x": np.array([[v] * width for v in values], dtype=np.float32)}


def y(request: PendingRequest) -> list[float]:
    assert request.done, "not answered"
    assert request.error is None, request.error
    assert request.outputs is not None
    return request.outputs["y"].ravel().tolist()


class Harness:
    def __init__(self, config: BatchingConfig, *, instances: int = 1, gated: bool = False):
        self.clock = ManualClock()
        self.runtimes = [FakeRuntime(gated=gated) for _ in range(instances)]
        self.runtime = self.runtimes[0]
        self.reports: list[BatchReport] = []
        self.scheduler = Scheduler("m", self.runtimes, config, clock=self.clock, observer=self)
        self.scheduler.start()
        self.requests: list[PendingRequest] = []
        self._direct: list[Lead] = []

    def batch_completed(self, report: BatchReport) -> None:
        self.reports.append(report)

    def submit(self, inputs: dict[str, np.ndarray], **kwargs: object) -> PendingRequest:
        request, lead = self.scheduler.submit(inputs, ["y"], waiter=Waiter(), **kwargs)
        if lead is not None:
            self._direct.append(lead)
        self.requests.append(request)
        return request

    def formed(self) -> list[Lead]:
        """Batches formed and not yet run: returned to a submitter or handed to a waiter."""
        leads, self._direct = self._direct, []
        for request in self.requests:
            while request.waiter.leads:
                leads.append(request.waiter.leads.pop(0))
        return leads

    def run(self) -> int:
        """Run every formed batch, and those their completion forms; return how many ran."""
        count = 0
        while leads := self.formed():
            for lead in leads:
                lead.run()
                count += 1
        return count

    def infer(self, inputs: dict[str, np.ndarray], **kwargs: object) -> PendingRequest:
        return self.scheduler.infer(inputs, ["y"], **kwargs)


def batched(max_batch_size: int = 8, delay_us: int = 1_000_000, **kwargs) -> BatchingConfig:
    return BatchingConfig(max_batch_size=max_batch_size, max_queue_delay_us=delay_us, **kwargs)


# --- forming batches ------------------------------------------------------------------------


def test_flushes_at_once_when_max_batch_size_rows_are_queued() -> None:
    h = Harness(batched(max_batch_size=4))
    requests = [h.submit(x(i)) for i in range(4)]
    assert h.run() == 1
    assert h.runtime.batches() == [[0, 1, 2, 3]]
    assert [y(r) for r in requests] == [[0], [2], [4], [6]]


def test_waits_for_the_queue_delay_then_sends_what_is_queued() -> None:
    h = Harness(batched(max_batch_size=8, delay_us=1000))
    requests = [h.submit(x(1)), h.submit(x(2))]
    assert h.run() == 0
    h.clock.advance(0.0009)
    assert h.run() == 0
    h.clock.advance(0.0001)
    assert h.run() == 1
    assert h.runtime.batches() == [[1, 2]]
    assert [y(r) for r in requests] == [[2], [4]]


def test_the_batch_goes_to_the_thread_of_a_caller_in_it() -> None:
    h = Harness(batched(max_batch_size=8, delay_us=1000))
    first, second = h.submit(x(1)), h.submit(x(2))
    h.clock.advance(0.001)
    assert len(first.waiter.leads) == 1 and not second.waiter.leads


def test_sends_the_largest_preferred_size_at_once_and_keeps_the_rest() -> None:
    h = Harness(batched(max_batch_size=8, delay_us=1000, preferred_batch_sizes=(2, 4)))
    for i in range(5):
        h.submit(x(i))
    h.run()
    assert h.runtime.batches() == [[0, 1, 2, 3]]
    h.clock.advance(0.001)
    h.run()
    assert h.runtime.batches()[1:] == [[4]]


def test_at_the_delay_a_preferred_size_is_chosen_over_the_whole_queue() -> None:
    h = Harness(batched(max_batch_size=8, delay_us=1000, preferred_batch_sizes=(2, 8)))
    for i in range(3):
        h.submit(x(i))
    h.clock.advance(0.001)
    h.run()
    assert [len(batch) for batch in h.runtime.batches()] == [2, 1]


def test_with_zero_delay_requests_gather_while_the_instance_is_busy() -> None:
    h = Harness(batched(max_batch_size=8, delay_us=0))
    first = h.submit(x(0))  # an idle instance: it may run at once, on the submitter's thread
    (lead,) = h.formed()
    assert lead.batch == [first]
    waiting = [h.submit(x(i)) for i in range(1, 4)]  # the instance is taken: they queue
    assert h.formed() == []
    lead.run()
    h.run()
    assert h.runtime.batches() == [[0], [1, 2, 3]]
    assert [y(r) for r in [first, *waiting]] == [[0], [2], [4], [6]]


def test_higher_priority_requests_run_first() -> None:
    config = batched(max_batch_size=1, delay_us=0, priority_levels=3, default_priority_level=2)
    h = Harness(config)
    h.submit(x(0))
    (blocker,) = h.formed()
    h.submit(x(3), priority_level=3)
    h.submit(x(2))
    h.submit(x(1), priority_level=1)
    blocker.run()
    h.run()
    assert h.runtime.batches() == [[0], [1], [2], [3]]


def test_priority_outside_the_levels_is_invalid() -> None:
    h = Harness(batched(priority_levels=2))
    with pytest.raises(InvalidInputError, match=r"priority 3 is out of range.*1 to 2"):
        h.submit(x(1), priority_level=3)


def test_requests_with_different_shapes_are_not_concatenated() -> None:
    h = Harness(batched(max_batch_size=8, delay_us=1000))
    narrow = [h.submit(x(1)), h.submit(x(2))]
    wide = h.submit(x(3, width=2))
    h.clock.advance(0.001)
    h.run()
    assert [call["x"].shape for call in h.runtime.calls] == [(2, 1), (1, 2)]
    assert [y(r) for r in narrow] == [[2], [4]] and y(wide) == [6, 6]


def test_padding_batches_ragged_requests_and_slices_each_answer_back() -> None:
    config = batched(
        max_batch_size=8,
        delay_us=1000,
        padded_inputs=frozenset({"x"}),
        sliced_outputs=frozenset({"y"}),
        pad_value=-1,
    )
    h = Harness(config)
    short = h.submit({"x": np.array([[1, 2]], np.float32)})
    long = h.submit({"x": np.array([[3, 4, 5, 6]], np.float32)})
    h.clock.advance(0.001)
    h.run()
    assert h.runtime.calls[0]["x"].tolist() == [[1, 2, -1, -1], [3, 4, 5, 6]]
    assert y(short) == [2, 4] and y(long) == [6, 8, 10, 12]


def test_inputs_padded_together_must_agree_in_shape() -> None:
    h = Harness(batched(padded_inputs=frozenset({"x", "mask"})))
    inputs = {"x": np.ones((1, 3), np.float32), "mask": np.ones((1, 4), np.float32)}
    with pytest.raises(InvalidInputError, match=r"padded together .*'x' \[1, 3\]"):
        h.submit(inputs)


def test_multi_row_requests_count_against_max_batch_size() -> None:
    h = Harness(batched(max_batch_size=4, delay_us=1000))
    three, two = h.submit(x(1, 2, 3)), h.submit(x(4, 5))
    h.clock.advance(0.001)
    h.run()
    assert h.runtime.batches() == [[1, 2, 3], [4, 5]]  # 3 + 2 rows would not fit in 4
    assert y(three) == [2, 4, 6] and y(two) == [8, 10]


def test_a_request_larger_than_max_batch_size_is_invalid() -> None:
    h = Harness(batched(max_batch_size=2))
    with pytest.raises(InvalidInputError, match="3 rows, more than max_batch_size 2"):
        h.submit(x(1, 2, 3))


def test_instances_run_batches_in_parallel() -> None:
    h = Harness(batched(max_batch_size=1, delay_us=0), instances=2)
    h.submit(x(1))
    h.submit(x(2))
    first, second = h.formed()  # both instances were idle: each request has one
    assert first.instance is not second.instance


def test_a_model_without_batching_runs_requests_alone_without_a_batch_dimension() -> None:
    h = Harness(BatchingConfig(max_batch_size=0))
    one = h.submit({"x": np.array([1.0, 2.0], np.float32)})
    two = h.submit({"x": np.array([3.0], np.float32)})
    h.run()
    assert h.runtime.batches() == [[1, 2], [3]]
    assert y(one) == [2, 4] and y(two) == [6]


def test_without_dynamic_batching_each_request_runs_as_its_own_batch() -> None:
    h = Harness(batched(max_batch_size=8, delay_us=0, dynamic_batching=False))
    for values in ((0,), (1, 2), (3,)):
        h.submit(x(*values))
    h.run()
    assert h.runtime.batches() == [[0], [1, 2], [3]]


# --- the queue's limits and timeouts --------------------------------------------------------


def test_a_full_queue_answers_at_once_with_queue_full() -> None:
    h = Harness(batched(max_batch_size=1, delay_us=0, default_queue_policy=QueuePolicy(2)))
    h.submit(x(0))  # takes the instance
    h.submit(x(1))
    h.submit(x(2))
    with pytest.raises(QueueFullError, match=r"priority level 1 is full \(2 requests\)"):
        h.submit(x(3))
    h.run()
    assert h.runtime.batches() == [[0], [1], [2]]


def test_the_hard_queue_cap_holds_without_a_policy() -> None:
    h = Harness(batched(max_batch_size=1, delay_us=0, max_queued_requests=1))
    h.submit(x(0))
    h.submit(x(1))
    with pytest.raises(QueueFullError, match=r"queue is full \(1 requests\)"):
        h.submit(x(2))


def test_queue_timeout_reject_answers_deadline_exceeded_and_never_runs() -> None:
    policy = QueuePolicy(default_timeout_us=1000)
    h = Harness(batched(max_batch_size=1, delay_us=0, default_queue_policy=policy))
    h.submit(x(0))
    (blocker,) = h.formed()
    late = h.submit(x(1))
    h.clock.advance(0.001)
    assert late.done and isinstance(late.error, RequestTimeoutError)
    assert "timed out after waiting in the queue of model 'm'" in str(late.error)
    assert h.scheduler.queued_requests == 0
    blocker.run()
    h.run()
    assert h.runtime.batches() == [[0]]


def test_request_timeout_may_shorten_but_not_lengthen_the_policy_timeout() -> None:
    policy = QueuePolicy(default_timeout_us=10_000, allow_timeout_override=True)
    h = Harness(batched(max_batch_size=1, delay_us=0, default_queue_policy=policy))
    h.submit(x(0))
    short = h.submit(x(1), timeout_us=1000)
    long = h.submit(x(2), timeout_us=50_000)
    h.clock.advance(0.001)
    assert short.done and not long.done
    h.clock.advance(0.009)
    assert isinstance(short.error, RequestTimeoutError)
    assert isinstance(long.error, RequestTimeoutError)


def test_request_timeout_is_ignored_when_override_is_not_allowed() -> None:
    h = Harness(batched(max_batch_size=1, delay_us=0))
    h.submit(x(0))
    queued = h.submit(x(1), timeout_us=1000)
    h.clock.advance(1.0)
    assert not queued.done
    h.run()
    assert y(queued) == [2]


def test_queue_timeout_delay_moves_the_request_behind_the_others() -> None:
    policy = QueuePolicy(default_timeout_us=1000, timeout_action=TimeoutAction.DELAY)
    h = Harness(batched(max_batch_size=1, delay_us=0, default_queue_policy=policy))
    h.submit(x(0))
    (blocker,) = h.formed()
    h.submit(x(1))
    h.clock.advance(0.001)
    h.submit(x(2))
    blocker.run()
    h.run()
    assert h.runtime.batches() == [[0], [2], [1]]


def test_an_expired_caller_deadline_drops_the_request_before_it_runs() -> None:
    h = Harness(batched(max_batch_size=1, delay_us=0))
    h.submit(x(0))
    doomed = h.submit(x(1), deadline_s=h.clock.now() + 0.5)
    h.clock.advance(0.5)
    assert isinstance(doomed.error, RequestTimeoutError)
    h.run()
    assert h.runtime.batches() == [[0]]


def test_a_request_already_past_its_deadline_never_runs_even_at_an_idle_instance() -> None:
    h = Harness(batched(max_batch_size=8, delay_us=0))
    late = h.submit(x(1), deadline_s=h.clock.now())
    h.run()
    assert isinstance(late.error, RequestTimeoutError)
    assert h.runtime.calls == []


def test_a_cancelled_request_is_dropped_from_the_queue() -> None:
    h = Harness(batched(max_batch_size=8, delay_us=0))
    h.submit(x(0))
    (blocker,) = h.formed()
    cancelled, kept = h.submit(x(1)), h.submit(x(2))
    assert h.scheduler.queued_requests == 2
    h.scheduler.cancel(cancelled)
    assert isinstance(cancelled.error, RequestCancelledError)
    assert h.scheduler.queued_requests == 1
    blocker.run()
    h.run()
    assert h.runtime.batches() == [[0], [2]]
    assert y(kept) == [4]


# --- failures -------------------------------------------------------------------------------


def fails_on_negative(inputs, names):
    if (inputs["x"] < 0).any():
        raise RuntimeError("node Relu_3: bad value -1")
    return double_x(inputs, names)


def test_a_failing_batch_fails_only_its_requests_and_the_model_stays_up() -> None:
    h = Harness(batched(max_batch_size=8, delay_us=0))
    h.runtime.compute = fails_on_negative
    failed = h.submit(x(-1))
    h.run()
    assert isinstance(failed.error, ModelExecutionError)
    assert "model 'm' failed to run the request" in str(failed.error)
    assert "Relu_3" not in str(failed.error)
    assert failed.error.__traceback__ is None
    later = h.submit(x(2))
    h.run()
    assert y(later) == [4]


def test_a_runtime_failure_in_a_shared_batch_fails_only_the_bad_request() -> None:
    def refuses_negative(inputs, names):
        if (inputs["x"] < 0).any():
            raise InvalidInputError("index -1 out of range in node 'lookup'")
        return double_x(inputs, names)

    h = Harness(batched(max_batch_size=8, delay_us=1000))
    h.runtime.compute = refuses_negative
    good, bad = h.submit(x(1)), h.submit(x(-1))
    h.clock.advance(0.001)
    h.run()
    assert y(good) == [2]
    assert isinstance(bad.error, InvalidInputError)
    assert "model 'm' rejected the request" in str(bad.error)
    assert "lookup" not in str(bad.error)
    assert h.runtime.batches() == [[1, -1], [1], [-1]]


def test_a_runtime_returning_the_wrong_number_of_rows_breaks_the_contract() -> None:
    h = Harness(batched(max_batch_size=8, delay_us=1000))
    h.runtime.compute = lambda inputs, names: {n: inputs["x"][:1] for n in names}
    requests = [h.submit(x(1)), h.submit(x(2))]
    h.clock.advance(0.001)
    h.run()
    for request in requests:
        assert isinstance(request.error, ModelExecutionError)
        assert "returned 1 rows for output 'y' from a batch of 2 rows" in str(request.error)
        assert request.error.__traceback__ is None


def test_a_runtime_leaving_out_an_output_breaks_the_contract() -> None:
    h = Harness(batched(max_batch_size=8, delay_us=0))
    h.runtime.compute = lambda inputs, names: {}
    request = h.submit(x(1))
    h.run()
    assert "did not return output(s) ['y']" in str(request.error)


def inputs_outlive_their_failed_request(config: BatchingConfig, *, shared: bool) -> bool:
    """Whether a failed request's inputs are still alive once the caller has dropped them and
    its answer, with the garbage collector off: alive means a reference cycle holds them, and a
    stream of failing large requests would pile up until a full collection."""
    h = Harness(config)
    h.runtime.compute = fails_on_negative
    inputs = x(-1)
    alive = weakref.ref(inputs["x"])
    failing = h.submit(inputs)
    good = h.submit(x(2)) if shared else None
    h.clock.advance(config.max_queue_delay_us / 1e6)
    h.run()
    assert isinstance(failing.error, ModelExecutionError)
    if good is not None:
        assert y(good) == [4]
    h.requests.clear()
    del inputs, failing
    return alive() is not None


@pytest.mark.parametrize(
    ("config", "shared"),
    [(batched(delay_us=0), False), (batched(delay_us=1000), True)],
    ids=["alone", "in a shared batch"],
)
def test_a_failed_requests_inputs_are_freed_with_its_error(
    config: BatchingConfig, shared: bool
) -> None:
    gc.collect()
    gc.disable()
    try:
        outlived = inputs_outlive_their_failed_request(config, shared=shared)
    finally:
        gc.enable()
    assert not outlived


# --- ordering, reports, stopping ------------------------------------------------------------


def test_preserve_ordering_releases_answers_in_batch_order() -> None:
    config = batched(max_batch_size=1, delay_us=0, preserve_ordering=True)
    h = Harness(config, instances=2)
    first, second = h.submit(x(1)), h.submit(x(2))
    early, late = h.formed()
    late.run()  # the second batch finishes first
    assert len(h.reports) == 1 and not second.done
    early.run()
    assert y(first) == [2] and y(second) == [4]


def test_a_request_run_at_once_is_reported_like_any_batch() -> None:
    h = Harness(batched(max_batch_size=8, delay_us=0))
    h.clock.advance(0.25)
    request = h.submit(x(3, 4))
    h.run()
    assert y(request) == [6, 8]
    (report,) = h.reports
    assert (report.batch_rows, report.queue_s, report.succeeded) == (2, (0.0,), True)
    assert report.started_s == report.finished_s == h.clock.now()


class CountingHooks:
    def __init__(self) -> None:
        self.lent = 0

    def blocking(self) -> None:
        self.lent += 1

    def resumed(self) -> None:
        pass


def lends_per_run(run_seconds: list[float]) -> list[bool]:
    """Run one request per entry, each run taking that long on the scheduler's clock; whether
    the thread lent its run slot during each."""
    h = Harness(batched(max_batch_size=8, delay_us=0))
    durations = iter(run_seconds)

    def timed(inputs, names):
        h.clock.advance(next(durations))
        return double_x(inputs, names)

    h.runtime.compute = timed
    lent = []
    for _ in run_seconds:
        hooks = CountingHooks()
        request = h.submit(x(1))
        (lead,) = h.formed()
        lead.run(hooks)
        assert y(request) == [2]
        lent.append(hooks.lent == 1)
    return lent


def test_a_tiny_model_stops_lending_even_when_some_runs_wait_long_for_the_gil() -> None:
    # A run's wall time includes taking the GIL back: one in the window is 5 ms long.
    window = [10e-6] * 7 + [5e-3] + [10e-6] * 8
    lent = lends_per_run(window * 2)
    assert lent[:16] == [True] * 16  # no full window yet: lend
    assert lent[16:] == [False] * 16


def test_a_model_whose_every_run_is_long_keeps_lending() -> None:
    assert lends_per_run([1e-3] * 40) == [True] * 40


def test_stop_runs_what_is_queued_then_refuses_new_requests() -> None:
    h = Harness(batched(max_batch_size=8, delay_us=10_000_000))
    queued = [h.submit(x(1)), h.submit(x(2))]
    stopper = threading.Thread(target=h.scheduler.stop)
    stopper.start()
    # Stopping flushes the queue at once (no delay to wait out) and waits for the batch.
    lead = None
    while lead is None:
        queued[0].waiter.wait()
        lead = queued[0].waiter.leads.pop(0) if queued[0].waiter.leads else None
    lead.run()
    stopper.join(WAIT_S)
    assert not stopper.is_alive()
    assert [y(r) for r in queued] == [[2], [4]]
    with pytest.raises(SchedulerStoppedError, match="model 'm' is shutting down"):
        h.submit(x(3))


# --- waiting for company --------------------------------------------------------------------


def test_a_lone_request_goes_at_once_when_requests_arrive_further_apart_than_the_delay() -> None:
    h = Harness(batched(max_batch_size=8, delay_us=1000))
    h.submit(x(1))
    h.clock.advance(0.001)
    h.run()
    h.clock.advance(0.5)  # a quiet half second: the arrival gap is now 0.5 s
    second = h.submit(x(2))
    assert h.run() == 1  # no clock advance: it did not wait for the delay
    assert y(second) == [4]


def test_lone_requests_stop_waiting_when_it_gathers_nothing_and_resume_with_company() -> None:
    """A closed-loop client (one request in flight) never sends while its request waits: after
    two waits that gathered nothing, lone requests go at once; requests that queue up behind
    one another bring the wait back."""
    h = Harness(batched(max_batch_size=8, delay_us=1000))
    h.submit(x(0))
    h.submit(x(0))  # requests close together: a small gap
    h.clock.advance(0.001)
    h.run()
    for value in (1, 2):  # each waits the whole delay: nobody else is sending
        h.submit(x(value))
        assert h.run() == 0
        h.clock.advance(0.001)
        assert h.run() == 1
    went_at_once = h.submit(x(3))
    assert h.run() == 1  # the clock did not move
    assert y(went_at_once) == [6]

    running = h.submit(x(4))
    (lead,) = h.formed()  # it goes at once, and holds the instance
    behind = [h.submit(x(5)), h.submit(x(6))]  # the second arrives while the first queues
    lead.run()
    assert h.run() == 0  # waiting again, for company
    h.clock.advance(0.001)
    assert h.run() == 1
    assert h.runtime.batches()[-1] == [5, 6]
    assert y(running) == [8] and [y(r) for r in behind] == [[10], [12]]


# --- the blocking path, on real threads -----------------------------------------------------


def test_concurrent_callers_form_batches_and_each_runs_on_a_callers_thread() -> None:
    """While one caller's batch runs (held by the gate), the others queue; when it finishes,
    the next batch goes to one of their threads, which answers all of them."""
    h = Harness(batched(max_batch_size=8, delay_us=0), gated=True)
    blocked = Blocked()
    answers: dict[int, list[float]] = {}

    def call(i: int) -> None:
        answers[i] = y(h.infer(x(i), waiter=Waiter(hooks=blocked)))

    callers = [threading.Thread(target=call, args=(i,)) for i in range(4)]
    callers[0].start()
    h.runtime.next_call()  # caller 0 runs its request alone, on its own thread
    for caller in callers[1:]:
        caller.start()
    blocked.wait_for(3)
    assert h.scheduler.queued_requests == 3
    h.runtime.gate.set()
    for caller in callers:
        caller.join(WAIT_S)
    assert answers == {i: [2.0 * i] for i in range(4)}
    assert sorted(h.runtime.batches()[1]) == [1, 2, 3]
    caller_threads = {caller.ident for caller in callers}
    assert set(h.runtime.threads) <= caller_threads


def test_a_caller_that_goes_away_is_dropped_while_queued() -> None:
    h = Harness(batched(max_batch_size=8, delay_us=10_000_000))
    blocked = Blocked()
    waiter = Waiter(hooks=blocked)
    result: list[PendingRequest] = []
    caller = threading.Thread(target=lambda: result.append(h.infer(x(1), waiter=waiter)))
    caller.start()
    blocked.wait_for(1)
    waiter.cancelled = True
    waiter.notify()
    caller.join(WAIT_S)
    assert isinstance(result[0].error, RequestCancelledError)
    assert h.scheduler.queued_requests == 0 and h.runtime.calls == []


def test_a_batch_of_requests_whose_waiters_cannot_lead_runs_on_a_helper_thread() -> None:
    """A stream's waiter never leads (its thread may be held by its client): its batches run
    on the scheduler's own threads."""
    h = Harness(batched(max_batch_size=8, delay_us=1000))
    waiter = Waiter(can_lead=False)
    requests = [h.scheduler.submit(x(value), ["y"], waiter=waiter)[0] for value in (1, 2)]
    h.clock.advance(0.001)
    while not all(request.done for request in requests):
        waiter.wait()  # each answer wakes it
    assert [y(r) for r in requests] == [[2], [4]]
    assert h.runtime.threads[0] != threading.get_ident()


def test_a_hung_batch_fails_its_requests_at_the_execution_timeout_and_others_go_on() -> None:
    config = batched(max_batch_size=1, delay_us=0, execution_timeout_us=500_000)
    h = Harness(config, instances=2, gated=True)
    results: list[PendingRequest] = []
    hung = threading.Thread(target=lambda: results.append(h.infer(x(1))))
    hung.start()
    assert h.runtimes[0].next_call()["x"].item() == 1
    h.clock.advance(0.5)
    hung.join(WAIT_S)
    assert isinstance(results[0].error, ModelExecutionError)
    assert "within its execution timeout of 500000" in str(results[0].error)
    # The hung instance is out of service: the next request goes to the other one.
    busy = threading.Thread(target=lambda: results.append(h.infer(x(2))))
    busy.start()
    assert h.runtimes[1].next_call()["x"].item() == 2
    # Once the hung call returns, its instance serves again (the other is still busy).
    h.runtimes[0].gate.set()
    assert y(h.infer(x(3))) == [6]
    assert [c["x"].item() for c in h.runtimes[0].calls] == [1, 3]
    h.runtimes[1].gate.set()
    busy.join(WAIT_S)
    assert y(results[1]) == [4]
