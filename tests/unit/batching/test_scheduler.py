"""Scheduler behaviour, driven by a ManualClock and a FakeRuntime gated by events (no sleeps).

`settle()` yields to the event loop until the scheduler has nothing left to do right now; it
never waits for time to pass.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import threading
import weakref
from collections.abc import Callable, Coroutine

import numpy as np
import pytest

from batching.clock import ManualClock
from batching.config import BatchingConfig, QueuePolicy, TimeoutAction
from batching.observer import BatchReport
from batching.scheduler import Scheduler
from runtimes.errors import (
    InvalidInputError,
    ModelExecutionError,
    QueueFullError,
    RequestTimeoutError,
    ShuttingDownError,
)
from tests.support.fake_runtime import FakeRuntime, double_x


def async_test(test: Callable[[], Coroutine]) -> Callable[[], None]:
    @functools.wraps(test)
    def wrapper() -> None:
        asyncio.run(asyncio.wait_for(test(), timeout=30))

    return wrapper


async def settle() -> None:
    for _ in range(50):
        await asyncio.sleep(0)


def x(*values: float, width: int = 1) -> dict[str, np.ndarray]:
    return {"x": np.array([[v] * width for v in values], dtype=np.float32)}


class RecordingObserver:
    """Hands each BatchReport to the test; the scheduler reports just before it answers."""

    def __init__(self) -> None:
        self.reports: asyncio.Queue[BatchReport] = asyncio.Queue()

    def batch_completed(self, report: BatchReport) -> None:
        self.reports.put_nowait(report)

    async def next(self) -> BatchReport:
        return await asyncio.wait_for(self.reports.get(), 5)


class Harness:
    def __init__(self, config: BatchingConfig, *, instances: int = 1, gated: bool = False):
        self.clock = ManualClock()
        self.runtimes = [FakeRuntime(gated=gated) for _ in range(instances)]
        self.runtime = self.runtimes[0]
        self.observer = RecordingObserver()
        self.scheduler = Scheduler(
            "m", self.runtimes, config, clock=self.clock, observer=self.observer
        )

    async def __aenter__(self) -> Harness:
        await self.scheduler.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        for runtime in self.runtimes:
            runtime.gate.set()
        await self.scheduler.stop()

    def submit(self, inputs: dict[str, np.ndarray], **kwargs: object) -> asyncio.Task:
        return asyncio.create_task(self.scheduler.submit(inputs, ["y"], **kwargs))


def batched(max_batch_size: int = 8, delay_us: int = 1_000_000, **kwargs) -> BatchingConfig:
    return BatchingConfig(max_batch_size=max_batch_size, max_queue_delay_us=delay_us, **kwargs)


@async_test
async def test_flushes_at_once_when_max_batch_size_rows_are_queued() -> None:
    async with Harness(batched(max_batch_size=4)) as h:
        tasks = [h.submit(x(i)) for i in range(4)]
        call = await h.runtime.next_call()
        assert call["x"].ravel().tolist() == [0, 1, 2, 3]
        results = await asyncio.gather(*tasks)
        assert [r["y"].ravel().tolist() for r in results] == [[0], [2], [4], [6]]


@async_test
async def test_waits_for_the_queue_delay_then_sends_what_is_queued() -> None:
    async with Harness(batched(max_batch_size=8, delay_us=1000)) as h:
        tasks = [h.submit(x(1)), h.submit(x(2))]
        await settle()
        assert h.runtime.calls == []
        h.clock.advance(0.0009)
        await settle()
        assert h.runtime.calls == []
        h.clock.advance(0.0001)
        call = await h.runtime.next_call()
        assert call["x"].ravel().tolist() == [1, 2]
        await asyncio.gather(*tasks)


@async_test
async def test_sends_the_largest_preferred_size_at_once_and_keeps_the_rest() -> None:
    config = batched(max_batch_size=8, delay_us=1000, preferred_batch_sizes=(2, 4))
    async with Harness(config) as h:
        tasks = [h.submit(x(i)) for i in range(5)]
        first = await h.runtime.next_call()
        assert first["x"].shape[0] == 4
        await settle()
        assert len(h.runtime.calls) == 1
        h.clock.advance(0.001)
        second = await h.runtime.next_call()
        assert second["x"].ravel().tolist() == [4]
        await asyncio.gather(*tasks)


@async_test
async def test_at_the_delay_a_preferred_size_is_chosen_over_the_whole_queue() -> None:
    config = batched(max_batch_size=8, delay_us=1000, preferred_batch_sizes=(2, 8))
    async with Harness(config) as h:
        tasks = [h.submit(x(i)) for i in range(3)]
        await settle()
        h.clock.advance(0.001)
        assert (await h.runtime.next_call())["x"].shape[0] == 2
        assert (await h.runtime.next_call())["x"].shape[0] == 1
        await asyncio.gather(*tasks)


@async_test
async def test_with_zero_delay_requests_gather_while_the_instance_is_busy() -> None:
    async with Harness(batched(max_batch_size=8, delay_us=0), gated=True) as h:
        first = h.submit(x(0))
        await h.runtime.next_call()
        waiting = [h.submit(x(i)) for i in range(1, 4)]
        await settle()
        h.runtime.gate.set()
        call = await h.runtime.next_call()
        assert call["x"].ravel().tolist() == [1, 2, 3]
        await asyncio.gather(first, *waiting)


@async_test
async def test_higher_priority_requests_run_first() -> None:
    config = batched(max_batch_size=1, delay_us=0, priority_levels=3, default_priority_level=2)
    async with Harness(config, gated=True) as h:
        blocker = h.submit(x(0))
        await h.runtime.next_call()
        low = h.submit(x(3), priority_level=3)
        default = h.submit(x(2))
        high = h.submit(x(1), priority_level=1)
        await settle()
        h.runtime.gate.set()
        order = [(await h.runtime.next_call())["x"].item() for _ in range(3)]
        assert order == [1, 2, 3]
        await asyncio.gather(blocker, low, default, high)


@async_test
async def test_priority_outside_the_levels_is_invalid() -> None:
    async with Harness(batched(priority_levels=2)) as h:
        with pytest.raises(InvalidInputError, match=r"priority 3 is out of range.*1 to 2"):
            await h.scheduler.submit(x(1), ["y"], priority_level=3)


@async_test
async def test_a_full_queue_answers_at_once_with_queue_full() -> None:
    config = batched(max_batch_size=1, delay_us=0, default_queue_policy=QueuePolicy(2))
    async with Harness(config, gated=True) as h:
        running = h.submit(x(0))
        await h.runtime.next_call()
        queued = [h.submit(x(1)), h.submit(x(2))]
        await settle()
        with pytest.raises(QueueFullError, match="priority level 1 is full \\(2 requests\\)"):
            await h.scheduler.submit(x(3), ["y"])
        h.runtime.gate.set()
        await asyncio.gather(running, *queued)


@async_test
async def test_the_hard_queue_cap_holds_without_a_policy() -> None:
    config = batched(max_batch_size=1, delay_us=0, max_queued_requests=1)
    async with Harness(config, gated=True) as h:
        running = h.submit(x(0))
        await h.runtime.next_call()
        queued = h.submit(x(1))
        await settle()
        with pytest.raises(QueueFullError, match="queue is full \\(1 requests\\)"):
            await h.scheduler.submit(x(2), ["y"])
        h.runtime.gate.set()
        await asyncio.gather(running, queued)


@async_test
async def test_queue_timeout_reject_answers_deadline_exceeded_and_never_runs() -> None:
    policy = QueuePolicy(default_timeout_us=1000)
    config = batched(max_batch_size=1, delay_us=0, default_queue_policy=policy)
    async with Harness(config, gated=True) as h:
        running = h.submit(x(0))
        await h.runtime.next_call()
        late = h.submit(x(1))
        await settle()
        h.clock.advance(0.001)
        with pytest.raises(RequestTimeoutError, match=r"timed out .* queue of model 'm'"):
            await late
        assert h.scheduler.queued_requests == 0
        h.runtime.gate.set()
        await running
        await settle()
        assert [c["x"].item() for c in h.runtime.calls] == [0]


@async_test
async def test_request_timeout_may_shorten_but_not_lengthen_the_policy_timeout() -> None:
    policy = QueuePolicy(default_timeout_us=10_000, allow_timeout_override=True)
    config = batched(max_batch_size=1, delay_us=0, default_queue_policy=policy)
    async with Harness(config, gated=True) as h:
        running = h.submit(x(0))
        await h.runtime.next_call()
        short = h.submit(x(1), timeout_us=1000)
        long = h.submit(x(2), timeout_us=50_000)
        await settle()
        h.clock.advance(0.001)
        await settle()
        assert short.done() and not long.done()
        h.clock.advance(0.009)
        await settle()
        assert long.done()
        for task in (short, long):
            with pytest.raises(RequestTimeoutError):
                await task
        h.runtime.gate.set()
        await running


@async_test
async def test_request_timeout_is_ignored_when_override_is_not_allowed() -> None:
    async with Harness(batched(max_batch_size=1, delay_us=0), gated=True) as h:
        running = h.submit(x(0))
        await h.runtime.next_call()
        queued = h.submit(x(1), timeout_us=1000)
        await settle()
        h.clock.advance(1.0)
        await settle()
        assert not queued.done()
        h.runtime.gate.set()
        await asyncio.gather(running, queued)


@async_test
async def test_queue_timeout_delay_moves_the_request_behind_the_others() -> None:
    policy = QueuePolicy(default_timeout_us=1000, timeout_action=TimeoutAction.DELAY)
    config = batched(max_batch_size=1, delay_us=0, default_queue_policy=policy)
    async with Harness(config, gated=True) as h:
        running = h.submit(x(0))
        await h.runtime.next_call()
        delayed = h.submit(x(1))
        await settle()
        h.clock.advance(0.001)
        fresh = h.submit(x(2))
        await settle()
        h.runtime.gate.set()
        order = [(await h.runtime.next_call())["x"].item() for _ in range(2)]
        assert order == [2, 1]
        await asyncio.gather(running, delayed, fresh)


@async_test
async def test_an_expired_caller_deadline_drops_the_request_before_it_runs() -> None:
    async with Harness(batched(max_batch_size=1, delay_us=0), gated=True) as h:
        running = h.submit(x(0))
        await h.runtime.next_call()
        doomed = h.submit(x(1), deadline_s=h.clock.now() + 0.5)
        await settle()
        h.clock.advance(0.5)
        with pytest.raises(RequestTimeoutError):
            await doomed
        h.runtime.gate.set()
        await running
        follower = await h.scheduler.submit(x(5), ["y"])
        assert follower["y"].item() == 10
        assert [c["x"].item() for c in h.runtime.calls] == [0, 5]


@async_test
async def test_a_cancelled_request_is_dropped_from_the_queue() -> None:
    async with Harness(batched(max_batch_size=8, delay_us=0), gated=True) as h:
        running = h.submit(x(0))
        await h.runtime.next_call()
        cancelled = h.submit(x(1))
        kept = h.submit(x(2))
        await settle()
        assert h.scheduler.queued_requests == 2
        cancelled.cancel()
        await settle()
        assert h.scheduler.queued_requests == 1
        h.runtime.gate.set()
        assert (await h.runtime.next_call())["x"].ravel().tolist() == [2]
        await asyncio.gather(running, kept)


@async_test
async def test_requests_with_different_shapes_are_not_concatenated() -> None:
    async with Harness(batched(max_batch_size=8, delay_us=1000)) as h:
        narrow = [h.submit(x(1)), h.submit(x(2))]
        wide = h.submit(x(3, width=2))
        await settle()
        h.clock.advance(0.001)
        first = await h.runtime.next_call()
        second = await h.runtime.next_call()
        assert first["x"].shape == (2, 1)
        assert second["x"].shape == (1, 2)
        results = await asyncio.gather(*narrow, wide)
        assert results[2]["y"].tolist() == [[6, 6]]


@async_test
async def test_padding_batches_ragged_requests_and_slices_each_answer_back() -> None:
    config = batched(
        max_batch_size=8,
        delay_us=1000,
        padded_inputs=frozenset({"x"}),
        sliced_outputs=frozenset({"y"}),
        pad_value=-1,
    )
    async with Harness(config) as h:
        short = h.submit({"x": np.array([[1, 2]], np.float32)})
        long = h.submit({"x": np.array([[3, 4, 5, 6]], np.float32)})
        await settle()
        h.clock.advance(0.001)
        call = await h.runtime.next_call()
        assert call["x"].tolist() == [[1, 2, -1, -1], [3, 4, 5, 6]]
        short_result, long_result = await asyncio.gather(short, long)
        assert short_result["y"].tolist() == [[2, 4]]
        assert long_result["y"].tolist() == [[6, 8, 10, 12]]


@async_test
async def test_multi_row_requests_count_against_max_batch_size() -> None:
    async with Harness(batched(max_batch_size=4, delay_us=1000)) as h:
        three = h.submit(x(1, 2, 3))
        two = h.submit(x(4, 5))
        await settle()
        h.clock.advance(0.001)
        assert (await h.runtime.next_call())["x"].shape[0] == 3
        h.clock.advance(0.001)
        assert (await h.runtime.next_call())["x"].shape[0] == 2
        results = await asyncio.gather(three, two)
        assert results[0]["y"].ravel().tolist() == [2, 4, 6]
        assert results[1]["y"].ravel().tolist() == [8, 10]


@async_test
async def test_a_request_larger_than_max_batch_size_is_invalid() -> None:
    async with Harness(batched(max_batch_size=2)) as h:
        with pytest.raises(InvalidInputError, match="3 rows, more than max_batch_size 2"):
            await h.scheduler.submit(x(1, 2, 3), ["y"])


@async_test
async def test_instances_run_batches_in_parallel() -> None:
    async with Harness(batched(max_batch_size=1, delay_us=0), instances=2, gated=True) as h:
        tasks = [h.submit(x(1)), h.submit(x(2))]
        first = await h.runtimes[0].next_call()
        second = await h.runtimes[1].next_call()
        assert {first["x"].item(), second["x"].item()} == {1, 2}
        for runtime in h.runtimes:
            runtime.gate.set()
        await asyncio.gather(*tasks)


@async_test
async def test_a_failing_batch_fails_only_its_requests_and_the_model_stays_up() -> None:
    failures = iter([True, False])

    def flaky(inputs, names):
        if next(failures):
            raise RuntimeError("boom")
        return {name: inputs["x"] for name in names}

    async with Harness(batched(max_batch_size=8, delay_us=0)) as h:
        h.runtime._compute = flaky
        with pytest.raises(ModelExecutionError, match="model 'm' failed to run") as failed:
            await h.scheduler.submit(x(1), ["y"])
        assert "boom" not in str(failed.value)
        assert (await h.scheduler.submit(x(2), ["y"]))["y"].item() == 2


@async_test
async def test_a_runtime_returning_the_wrong_number_of_rows_breaks_the_contract() -> None:
    async with Harness(batched(max_batch_size=8, delay_us=1000)) as h:
        h.runtime._compute = lambda inputs, names: {n: inputs["x"][:1] for n in names}
        tasks = [h.submit(x(1)), h.submit(x(2))]
        await settle()
        h.clock.advance(0.001)
        for task in tasks:
            with pytest.raises(ModelExecutionError, match=r"returned 1 rows .* batch of 2 rows"):
                await task


@async_test
async def test_a_runtime_leaving_out_an_output_breaks_the_contract() -> None:
    async with Harness(batched(max_batch_size=8, delay_us=0)) as h:
        h.runtime._compute = lambda inputs, names: {}
        with pytest.raises(ModelExecutionError, match=r"did not return output\(s\) \['y'\]"):
            await h.scheduler.submit(x(1), ["y"])


@async_test
async def test_preserve_ordering_releases_answers_in_batch_order() -> None:
    config = batched(max_batch_size=1, delay_us=0, preserve_ordering=True)
    async with Harness(config, instances=2, gated=True) as h:
        first = h.submit(x(1))
        second = h.submit(x(2))
        await h.runtimes[0].next_call()
        await h.runtimes[1].next_call()
        h.runtimes[1].gate.set()
        assert (await h.observer.next()).queue_s  # the second batch has finished
        await settle()
        assert not second.done()
        h.runtimes[0].gate.set()
        await asyncio.gather(first, second)


@async_test
async def test_a_model_without_batching_runs_requests_alone_without_a_batch_dimension() -> None:
    async with Harness(BatchingConfig(max_batch_size=0)) as h:
        results = await asyncio.gather(
            h.scheduler.submit({"x": np.array([1.0, 2.0], np.float32)}, ["y"]),
            h.scheduler.submit({"x": np.array([3.0], np.float32)}, ["y"]),
        )
        assert [r["y"].tolist() for r in results] == [[2, 4], [6]]
        assert len(h.runtime.calls) == 2


@async_test
async def test_stop_runs_what_is_queued_then_refuses_new_requests() -> None:
    h = Harness(batched(max_batch_size=8, delay_us=10_000_000))
    await h.scheduler.start()
    queued = [h.submit(x(1)), h.submit(x(2))]
    await settle()
    await h.scheduler.stop()
    assert [r["y"].item() for r in await asyncio.gather(*queued)] == [2, 4]
    with pytest.raises(ShuttingDownError, match="model 'm' is shutting down"):
        await h.scheduler.submit(x(3), ["y"])


@async_test
async def test_without_dynamic_batching_each_request_runs_as_its_own_batch() -> None:
    config = batched(max_batch_size=8, delay_us=0, dynamic_batching=False)
    async with Harness(config, gated=True) as h:
        tasks = [h.submit(x(0)), h.submit(x(1, 2)), h.submit(x(3))]
        await h.runtime.next_call()
        h.runtime.gate.set()
        calls = [await h.runtime.next_call() for _ in range(2)]
        assert [c["x"].ravel().tolist() for c in calls] == [[1, 2], [3]]
        await asyncio.gather(*tasks)


@async_test
async def test_cheap_batches_run_on_the_event_loop_and_costly_ones_on_a_thread() -> None:
    loop_thread = threading.get_ident()
    cheap = batched(max_batch_size=8, delay_us=0, inline_compute_threshold_us=1_000_000)
    async with Harness(cheap) as h:
        for value in range(3):
            await h.scheduler.submit(x(value), ["y"])
        # The first batch has no cost estimate yet and goes to a thread; then it is known cheap.
        assert h.runtime.threads[0] != loop_thread
        assert h.runtime.threads[1:] == [loop_thread, loop_thread]

    never = batched(max_batch_size=8, delay_us=0, inline_compute_threshold_us=0)
    async with Harness(never) as h:
        for value in range(3):
            await h.scheduler.submit(x(value), ["y"])
        assert loop_thread not in h.runtime.threads


@async_test
async def test_a_batch_far_larger_than_any_measured_one_goes_to_a_thread() -> None:
    """A cost prediction is not stretched: a batch over twice the largest measured size runs
    on a thread however cheap the measured cost per element was."""
    loop_thread = threading.get_ident()
    cheap = batched(max_batch_size=64, delay_us=0, inline_compute_threshold_us=1_000_000)
    async with Harness(cheap) as h:
        await h.scheduler.submit(x(1), ["y"])  # 1 element, measured on a thread
        await h.scheduler.submit(x(1, 2), ["y"])  # 2 elements: inline
        await h.scheduler.submit(x(*range(5)), ["y"])  # 5 > 2 * 2: a thread again
        await h.scheduler.submit(x(*range(10)), ["y"])  # 10 <= 2 * 5: inline
        assert [thread == loop_thread for thread in h.runtime.threads] == [
            False,
            True,
            False,
            True,
        ]


@async_test
async def test_one_slow_run_leaves_a_cheap_model_on_the_event_loop_a_lasting_slowdown_does_not():
    """A run stretched by preemption (or a wait for the GIL) must not send a cheap model's
    requests to a thread; a model that really became slow goes there within a few runs."""
    loop_thread = threading.get_ident()
    run_s = [10e-6]
    async with Harness(batched(max_batch_size=8, delay_us=0, inline_compute_threshold_us=100)) as h:

        def timed(inputs, names):
            h.clock.advance(run_s[0])
            return double_x(inputs, names)

        h.runtime._compute = timed
        for value in range(3):
            await h.scheduler.submit(x(value), ["y"])
        run_s[0] = 0.05  # one run took 50 ms
        await h.scheduler.submit(x(1), ["y"])
        run_s[0] = 10e-6
        await h.scheduler.submit(x(2), ["y"])
        assert h.runtime.threads[1:] == [loop_thread] * 4

        run_s[0] = 0.05  # every run takes 50 ms from now on
        for value in range(12):
            await h.scheduler.submit(x(value), ["y"])
        on_loop = [thread == loop_thread for thread in h.runtime.threads[5:]]
        assert on_loop[:3] == [True] * 3 and on_loop[-3:] == [False] * 3


@async_test
async def test_a_direct_answer_waits_for_an_earlier_batch_under_preserve_ordering() -> None:
    config = batched(
        max_batch_size=8, delay_us=0, preserve_ordering=True, inline_compute_threshold_us=10**6
    )
    async with Harness(config, instances=2, gated=True) as h:
        for runtime in h.runtimes:
            runtime.gate.set()
        await h.scheduler.submit(x(0), ["y"])  # measured on a thread: known cheap from now on
        for runtime in h.runtimes:
            runtime.gate.clear()
            while not runtime.started.empty():
                runtime.started.get_nowait()
        large = h.submit(x(1, 2, 3))  # over twice the largest measured: a thread, held there
        await settle()
        (busy,) = [runtime for runtime in h.runtimes if not runtime.started.empty()]
        (idle,) = [runtime for runtime in h.runtimes if runtime is not busy]
        small = h.submit(x(5))  # the idle instance runs it directly, on the event loop
        await idle.next_call()
        await settle()
        assert idle.threads[-1] == threading.get_ident()
        assert not small.done()
        busy.gate.set()
        assert (await large)["y"].ravel().tolist() == [2, 4, 6]
        assert (await small)["y"].ravel().tolist() == [10]


@async_test
async def test_a_request_run_directly_is_reported_like_any_batch() -> None:
    cheap = batched(max_batch_size=8, delay_us=0, inline_compute_threshold_us=1_000_000)
    async with Harness(cheap) as h:
        await h.scheduler.submit(x(1), ["y"])
        await h.observer.next()
        h.clock.advance(0.25)
        outputs = await h.scheduler.submit(x(3, 4), ["y"])  # nothing queued: the direct path
        assert outputs["y"].ravel().tolist() == [6, 8]
        report = await h.observer.next()
        assert (report.batch_rows, report.queue_s, report.succeeded) == (2, (0.0,), True)
        assert report.started_s == report.finished_s == h.clock.now()
        assert h.runtime.threads[-1] == threading.get_ident()


def fails_on_negative(inputs, names):
    if (inputs["x"] < 0).any():
        raise RuntimeError("node Relu_3: bad value -1")
    return double_x(inputs, names)


@async_test
async def test_a_failing_direct_request_gets_a_generic_error_and_the_model_stays_up() -> None:
    cheap = batched(max_batch_size=8, delay_us=0, inline_compute_threshold_us=1_000_000)
    async with Harness(cheap) as h:
        h.runtime._compute = fails_on_negative
        await h.scheduler.submit(x(1), ["y"])
        with pytest.raises(ModelExecutionError) as failed:
            await h.scheduler.submit(x(-1), ["y"])  # direct, inline
        assert "Relu_3" not in str(failed.value)
        assert h.runtime.threads[-1] == threading.get_ident()
        assert (await h.scheduler.submit(x(2), ["y"]))["y"].tolist() == [[4.0]]


@async_test
async def test_a_lone_request_goes_at_once_when_requests_arrive_further_apart_than_the_delay() -> (
    None
):
    async with Harness(batched(max_batch_size=8, delay_us=1000)) as h:
        first = h.submit(x(1))
        await settle()
        h.clock.advance(0.001)
        await first
        h.clock.advance(0.5)  # a quiet half second: the arrival gap is now 0.5 s
        second = h.submit(x(2))
        await h.runtime.next_call()  # the first request's batch
        call = await h.runtime.next_call()  # no clock advance: it did not wait for the delay
        assert call["x"].ravel().tolist() == [2]
        await second


@async_test
async def test_lone_requests_stop_waiting_when_it_gathers_nothing_and_resume_with_company() -> None:
    """A closed-loop client (one request in flight) never sends while its request waits: after
    two waits that gathered nothing, lone requests go at once; requests that queue up behind
    one another bring the wait back."""
    async with Harness(batched(max_batch_size=8, delay_us=1000)) as h:
        burst = [h.submit(x(0)), h.submit(x(0))]  # requests close together: a small gap
        await settle()
        h.clock.advance(0.001)
        await asyncio.gather(*burst)
        for value in (1, 2):  # each waits the whole delay: nobody else is sending
            lone = h.submit(x(value))
            await settle()
            assert len(h.runtime.calls) == value
            h.clock.advance(0.001)
            await lone
        went_at_once = h.submit(x(3))
        # The clock does not move: this completes only if it does not wait for the delay.
        assert (await asyncio.wait_for(went_at_once, 5))["y"].tolist() == [[6.0]]

        while not h.runtime.started.empty():  # calls seen so far
            h.runtime.started.get_nowait()
        h.runtime.gate.clear()  # hold the next batch on its thread
        running = h.submit(x(4))
        await h.runtime.next_call()
        behind = [h.submit(x(5)), h.submit(x(6))]  # the second arrives while the first queues
        await settle()
        h.runtime.gate.set()
        await running
        await settle()
        assert len(h.runtime.calls) == 5  # waiting again, for company
        h.clock.advance(0.001)
        call = await h.runtime.next_call()
        assert call["x"].ravel().tolist() == [5, 6]
        await asyncio.gather(*behind)


@async_test
async def test_a_hung_batch_fails_its_requests_at_the_execution_timeout_and_others_go_on() -> None:
    config = batched(max_batch_size=1, delay_us=0, execution_timeout_us=500_000)
    async with Harness(config, instances=2, gated=True) as h:
        hung = h.submit(x(1))
        await h.runtimes[0].next_call()
        h.clock.advance(0.5)
        with pytest.raises(ModelExecutionError, match="within its execution timeout of 500000"):
            await hung
        # The hung instance is out of service: the next request goes to the other one.
        busy = h.submit(x(2))
        assert (await h.runtimes[1].next_call())["x"].item() == 2
        # Once the hung call returns, its instance serves again (the other is still busy).
        h.runtimes[0].gate.set()
        assert (await h.scheduler.submit(x(3), ["y"]))["y"].item() == 6
        assert [c["x"].item() for c in h.runtimes[0].calls] == [1, 3]
        h.runtimes[1].gate.set()
        await busy


@async_test
async def test_inputs_padded_together_must_agree_in_shape() -> None:
    config = batched(padded_inputs=frozenset({"x", "mask"}))
    async with Harness(config) as h:
        inputs = {"x": np.ones((1, 3), np.float32), "mask": np.ones((1, 4), np.float32)}
        with pytest.raises(InvalidInputError, match=r"padded together .*'x' \[1, 3\]"):
            await h.scheduler.submit(inputs, ["y"])


@async_test
async def test_a_runtime_failure_in_a_shared_batch_fails_only_the_bad_request() -> None:
    def refuses_negative(inputs, names):
        if (inputs["x"] < 0).any():
            raise InvalidInputError("index -1 out of range in node 'lookup'")
        return {name: inputs["x"] * 2 for name in names}

    async with Harness(batched(max_batch_size=8, delay_us=1000)) as h:
        h.runtime._compute = refuses_negative
        good, bad = h.submit(x(1)), h.submit(x(-1))
        await settle()
        h.clock.advance(0.001)
        assert (await good)["y"].item() == 2
        with pytest.raises(InvalidInputError, match="model 'm' rejected the request") as error:
            await bad
        assert "lookup" not in str(error.value)
        assert [c["x"].ravel().tolist() for c in h.runtime.calls] == [[1, -1], [1], [-1]]


async def inputs_outlive_their_failed_request(config: BatchingConfig, *, shared: bool) -> bool:
    """Whether a failed request's inputs are still alive once the caller has dropped them and
    its error, with the garbage collector off: alive means a reference cycle holds them, and a
    stream of failing large requests would pile up until a full collection."""
    async with Harness(config) as h:
        h.runtime._compute = fails_on_negative
        if config.inline_compute_threshold_us:
            await h.scheduler.submit(x(1), ["y"])  # learns the cost, for the direct path
        inputs = x(-1)
        alive = weakref.ref(inputs["x"])
        failing = h.submit(inputs)
        good = h.submit(x(2)) if shared else None
        await settle()
        h.clock.advance(config.max_queue_delay_us / 1e6)
        try:
            await failing
        except ModelExecutionError:
            pass
        else:
            raise AssertionError("the request did not fail")
        if good is not None:
            assert (await good)["y"].tolist() == [[4.0]]
        del inputs, failing
        await settle()  # the loop's own callbacks let go of the finished tasks
        return alive() is not None


@pytest.mark.parametrize(
    ("config", "shared"),
    [
        (batched(delay_us=0, inline_compute_threshold_us=1_000_000), False),
        (batched(delay_us=0), False),
        (batched(delay_us=1000), True),
    ],
    ids=["direct", "on a worker thread", "in a shared batch"],
)
def test_a_failed_requests_inputs_are_freed_with_its_error(
    config: BatchingConfig, shared: bool
) -> None:
    gc.collect()
    gc.disable()
    try:
        run = inputs_outlive_their_failed_request(config, shared=shared)
        outlived = asyncio.run(asyncio.wait_for(run, timeout=30))
    finally:
        gc.enable()
    assert not outlived
