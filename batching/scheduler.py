"""The dynamic batching scheduler of one model version: leader/follower on the callers' threads.

There is no scheduler thread and no event loop. A caller that finds an idle instance and no
reason to wait runs its request at once, on its own thread. Otherwise its request is queued
and the caller waits, blocked without the GIL (batching/waiter.py). Whenever an instance comes
free, or the queue delay that the policy chose runs out (a clock timer), the next batch is taken
from the queue and handed, with the instance, to the waiter of a request in it: that caller's
thread runs the batch, answers every request in it, and hands the instance on. So a batch runs
on a thread that waits for it anyway, and the only hand-off is the wake-up of the next leader.

The hot path, for a request that arrives at an idle instance: `infer` -> `submit` (one lock:
admit or take the instance) -> `Lead.run` -> `_execute` (assemble, `Runtime.infer`, split,
report) -> `_finish_batch` (one lock: answer, return the instance, form the next batch).

Everything under `self._lock` is bookkeeping (queues, instances, answers); models run outside.
Timers (queue delay, queue timeouts, caller deadlines, the execution timeout) come from the
injected clock, so tests drive them with a ManualClock.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from batching import assemble, policy
from batching.arrivals import ArrivalModel
from batching.clock import Clock, MonotonicClock, TimerHandle
from batching.config import BatchingConfig, TimeoutAction
from batching.errors import (
    QueueFullError,
    RequestCancelledError,
    RequestTimeoutError,
    SchedulerStoppedError,
)
from batching.observer import BatchObserver, BatchReport, NullObserver
from batching.queue import RequestQueues
from batching.request import PendingRequest, group_key_of
from batching.slo import LatencyController
from batching.waiter import BlockingHooks, Waiter
from runtimes.base import Runtime
from runtimes.errors import InvalidInputError, ModelExecutionError, TensorgateError

log = logging.getLogger(__name__)

Outputs = dict[str, np.ndarray]

# A thread running a batch in the runtime (which releases the GIL) lends its front end run slot
# (waiter.py compute_hooks) only when batches take longer than this: lending wakes another
# thread, a context switch and a fight for the GIL that cost more than a tiny model's run.
# Measured side by side (2 cores, perf_analyzer c=32, benchmarks/README.md): tabular_classifier
# (~15 us a batch) 1,456-1,749/s never lending vs 1,271-1,473/s lending on every batch;
# image_classifier (~15 ms a batch) forms batches of 7.7 when it lends, of 1.0 when it does not.
LEND_WHEN_COMPUTE_OVER_S = 200e-6
# The decision uses the shortest batch time of the last window: a run's wall time also holds the
# wait to take the GIL back, often longer than a tiny model's run. With a moving average, such
# waits made the tabular model lend now and then, and its calls spread over 4-5 threads instead
# of one (benchmarks/README.md, 2026-12-04 evening).
_COMPUTE_WINDOW = 16
Answer = tuple[PendingRequest, Outputs | None, TensorgateError | None]


@dataclass(eq=False, slots=True)
class Lead:
    """A batch taken from the queue, with the instance reserved to run it."""

    scheduler: Scheduler
    instance: Runtime
    batch: list[PendingRequest]
    sequence: int
    instance_returned: bool = False

    def run(self, hooks: BlockingHooks | None = None) -> None:
        """Run the batch on the calling thread and answer its requests; `hooks` are told when
        the thread is in the runtime (batching/waiter.py compute_hooks)."""
        self.scheduler._execute(self, hooks)


class Scheduler:
    """Batches requests for one model version over one or more runtime instances."""

    def __init__(
        self,
        model_name: str,
        instances: Sequence[Runtime],
        config: BatchingConfig,
        *,
        clock: Clock | None = None,
        observer: BatchObserver | None = None,
    ) -> None:
        if not instances:
            raise ValueError("a scheduler needs at least one runtime instance")
        self.model_name = model_name
        self.config = config
        self._batches = config.batches  # read on every request
        self._combines = config.combines_requests
        self._instances = tuple(instances)
        self._clock = clock or MonotonicClock()
        self._observer = observer or NullObserver()
        self._lock = threading.Lock()
        self._drained = threading.Condition(self._lock)  # stop() waits on it
        self._queues = RequestQueues(config)
        self._idle: deque[Runtime] = deque(instances)
        self._running = 0  # batches taken and not yet finished
        self._held: set[Runtime] = set()  # instances whose timed-out batch is still running
        self._accepting = False
        self._next_sequence = 0
        self._ordered: dict[int, list[Answer]] = {}  # preserve_ordering: finished, not released
        self._next_to_release = 0
        self._flush_at: float | None = None
        self._flush_timer: TimerHandle | None = None
        self._arrivals = ArrivalModel()
        # The shortest runtime time per batch in the last full window: whether a thread in the
        # runtime should lend its run slot (see LEND_WHEN_COMPUTE_OVER_S). Starts long: lend at
        # first.
        self._compute_s = 1.0
        self._window_min_s = float("inf")
        self._window_runs = 0
        self._arrivals_at_wait: int | None = None  # set while the oldest request waits for company
        self._slo = (
            LatencyController(
                config.latency_target_p99_us / 1e6,
                config.max_batch_size,
                len(self._instances),
                max_queue_delay_s=config.max_queue_delay_us / 1e6,
            )
            if config.latency_target_p99_us and config.batches
            else None
        )
        # Threads for what no caller's thread can do: batches of stream requests only
        # (`_leaders`), and runs under an execution timeout, which a caller must be able to
        # give up on (`_runners`). One per instance each: a batch holds its instance.
        self._leaders: ThreadPoolExecutor | None = None
        self._runners: ThreadPoolExecutor | None = None

    # lifecycle ---------------------------------------------------------------------------------

    def start(self) -> None:
        with self._lock:
            self._accepting = True

    def stop(self, timeout_s: float | None = None) -> bool:
        """Stop taking requests, run every one already queued, then wait for running batches
        (not for one stuck past its execution timeout: its thread cannot be stopped). False
        when work was still running after timeout_s (real seconds; None: no limit)."""
        with self._lock:
            self._accepting = False
            leads = self._dispatch_locked()
        self._hand_off(leads)
        with self._lock:
            drained = self._drained.wait_for(
                lambda: not (self._queues.live_requests or self._running), timeout_s
            )
            pools = (self._leaders, self._runners)
            self._leaders = self._runners = None
        for pool in pools:
            if pool is not None:
                pool.shutdown(wait=False)
        return drained

    @property
    def queued_requests(self) -> int:
        return self._queues.live_requests

    def queue_depth(self, priority_level: int) -> int:
        return self._queues.depth(priority_level)

    # requests ----------------------------------------------------------------------------------

    def infer(
        self,
        inputs: dict[str, np.ndarray],
        output_names: Sequence[str],
        *,
        waiter: Waiter | None = None,
        priority_level: int = 0,
        timeout_us: int = 0,
        deadline_s: float | None = None,
        trace: object | None = None,
    ) -> PendingRequest:
        """Run one request on the calling thread's time: queue it (or run it at once), lead
        the batch it is handed, and return it answered (`outputs` or `error`).

        Raises (InvalidInputError, QueueFullError, SchedulerStoppedError) only when the request
        is refused before it is queued.
        """
        waiter = waiter or Waiter()
        request, lead = self.submit(
            inputs,
            output_names,
            waiter=waiter,
            priority_level=priority_level,
            timeout_us=timeout_us,
            deadline_s=deadline_s,
            trace=trace,
        )
        if lead is not None:
            lead.run(waiter.compute_hooks)
        self.wait(request)
        return request

    def wait(self, request: PendingRequest) -> None:
        """Block until `request` is answered, running the batches handed to its waiter
        meanwhile; a waiter whose caller went away cancels it if it is still queued."""
        waiter = request.waiter
        while not request.done:
            if waiter.leads:
                waiter.leads.pop(0).run(waiter.compute_hooks)
                continue
            waiter.wait()
            if waiter.cancelled:
                self.cancel(request)

    def submit(
        self,
        inputs: dict[str, np.ndarray],
        output_names: Sequence[str],
        *,
        waiter: Waiter,
        priority_level: int = 0,
        timeout_us: int = 0,
        deadline_s: float | None = None,
        trace: object | None = None,
    ) -> tuple[PendingRequest, Lead | None]:
        """Queue one request without waiting for it; `waiter` hears of its answer.

        priority_level 0 means the default level; timeout_us 0 means the queue policy's default.
        deadline_s is the caller's own deadline on this scheduler's clock. trace is handed back,
        untouched, in the report of the batch the request runs in. When the request can run at
        once, the returned Lead is the batch for the caller to run on its own thread now.
        """
        request = self._make_request(
            inputs, output_names, waiter, priority_level, timeout_us, deadline_s
        )
        request.trace = trace
        mine: Lead | None = None
        with self._lock:
            if not self._accepting:
                raise SchedulerStoppedError(f"model '{self.model_name}' is shutting down")
            self._admit_locked(request.rows)
            if self._goes_at_once(request):
                self._arrivals.arrived(request.enqueued_s, others_queued=False)
                return request, self._lead_locked([request])
            if self._batches:
                request.group_key = group_key_of(request.inputs, self.config.padded_inputs)
            others_queued = self._queues.live_requests > 0
            self._queues.admit(request)
            self._arrivals.arrived(request.enqueued_s, others_queued)
            leads = self._dispatch_locked()
            for lead in leads:
                if mine is None and request in lead.batch:
                    mine = lead
            if request.queued:
                self._arm_timers_locked(request)
        self._hand_off([lead for lead in leads if lead is not mine])
        return request, mine

    def cancel(self, request: PendingRequest) -> None:
        """The caller went away: drop the request if it is still queued (a running batch
        finishes; its answer is then not read)."""
        with self._lock:
            if request.queued:
                self._queues.discard(request)
                request.finish(None, RequestCancelledError("the caller cancelled the request"))
                self._drained.notify_all()

    def _make_request(
        self,
        inputs: dict[str, np.ndarray],
        output_names: Sequence[str],
        waiter: Waiter,
        priority_level: int,
        timeout_us: int,
        deadline_s: float | None,
    ) -> PendingRequest:
        config = self.config
        # Per-request conversions and checks, before queueing: one request's bad data fails
        # that request alone rather than the batch it would have joined.
        inputs = self._instances[0].prepare(inputs)
        level = priority_level or config.default_priority_level
        if not 1 <= level <= config.priority_levels:
            raise InvalidInputError(
                f"priority {priority_level} is out of range: model '{self.model_name}' has "
                f"priority levels 1 to {config.priority_levels}"
            )
        batches = self._batches
        rows = next(iter(inputs.values())).shape[0] if batches and inputs else 1
        if config.padded_inputs:
            _check_padded_shapes_agree(inputs, config.padded_inputs)
        if batches and rows > config.max_batch_size:
            raise InvalidInputError(
                f"request has {rows} rows, more than max_batch_size {config.max_batch_size} "
                f"of model '{self.model_name}'"
            )
        now = self._clock.now()
        queue_policy = config.queue_policy(level)
        timeout = queue_policy.default_timeout_us
        if timeout_us and queue_policy.allow_timeout_override:
            # A request may shorten the policy's timeout, never lengthen it (as in Triton).
            timeout = min(timeout, timeout_us) if timeout else timeout_us
        timeout_at = now + timeout / 1e6 if timeout else None
        reject_at, delay_at = deadline_s, None
        if timeout_at is not None:
            if queue_policy.timeout_action is TimeoutAction.DELAY:
                delay_at = timeout_at
            else:
                reject_at = timeout_at if reject_at is None else min(reject_at, timeout_at)
        return PendingRequest(
            inputs=inputs,
            output_names=tuple(output_names),
            rows=rows,
            priority_level=level,
            enqueued_s=now,
            waiter=waiter,
            reject_at_s=reject_at,
            delay_at_s=delay_at,
        )

    def precheck(self) -> None:
        """Refuse now, before the caller decodes anything, a request that the latency target
        would refuse at submit even at one row (latency-SLO mode): refused clients come back,
        so a refusal should cost as little as possible. Advisory: submit decides."""
        if self._slo is not None:
            with self._lock:
                self._admit_locked(1)

    def _admit_locked(self, rows: int) -> None:
        if self._slo is not None and self._slo.would_miss(self._queues.live_rows, rows):
            raise QueueFullError(
                f"model '{self.model_name}' cannot answer within its latency target of "
                f"{self.config.latency_target_p99_us}us with the requests already queued; "
                "retry later"
            )

    def _goes_at_once(self, request: PendingRequest) -> bool:
        """Whether `request` may skip the queue: an idle instance, nothing queued, and no reason
        to wait for company (in latency-SLO mode too: batching/slo.py)."""
        if self._queues.live_requests or not self._idle:
            return False
        if request.reject_at_s is not None and request.reject_at_s <= request.enqueued_s:
            return False  # already past its deadline: the queue answers it
        config = self.config
        if not self._combines or not config.max_queue_delay_us:
            return True
        flush_at = policy.next_flush_s(
            oldest_enqueued_s=request.enqueued_s,
            queued_rows=request.rows,
            max_batch_size=config.max_batch_size,
            preferred_batch_sizes=config.preferred_batch_sizes,
            max_queue_delay_s=config.max_queue_delay_us / 1e6,
            now_s=request.enqueued_s,
            expected_arrival_gap_s=self._arrivals.expected_gap_s(),
        )
        return flush_at <= request.enqueued_s

    # timers ------------------------------------------------------------------------------------

    def _arm_timers_locked(self, request: PendingRequest) -> None:
        clock = self._clock
        timers = []
        if request.reject_at_s is not None:
            timers.append(clock.call_at(request.reject_at_s, lambda: self._expire(request)))
        if request.delay_at_s is not None:
            timers.append(clock.call_at(request.delay_at_s, lambda: self._delay(request)))
        request.timers = timers or None

    def _expire(self, request: PendingRequest) -> None:
        with self._lock:
            if request.queued:
                self._queues.discard(request)
                request.finish(
                    None,
                    RequestTimeoutError(
                        f"request timed out after waiting in the queue of model '{self.model_name}'"
                    ),
                )
                self._drained.notify_all()

    def _delay(self, request: PendingRequest) -> None:
        with self._lock:
            self._queues.delay(request)

    def _arm_flush_locked(self, flush_at: float) -> None:
        if self._flush_at is not None and self._flush_at <= flush_at:
            return
        if self._flush_timer is not None:
            self._flush_timer.cancel()
        self._flush_at = flush_at
        self._flush_timer = self._clock.call_at(flush_at, self._on_flush_timer)

    def _on_flush_timer(self) -> None:
        with self._lock:
            self._flush_at = self._flush_timer = None
            leads = self._dispatch_locked()
        self._hand_off(leads)

    # forming batches ---------------------------------------------------------------------------

    def _dispatch_locked(self) -> list[Lead]:
        """Take batches while an instance is idle and the policy says go; when it says wait,
        set the timer that comes back at the time it named."""
        leads: list[Lead] = []
        config = self.config
        while self._idle:
            first = self._queues.oldest()
            if first is None:
                break
            now = self._clock.now()
            if not self._combines:
                batch = self._queues.take(first, max_rows=first.rows)
            else:
                max_batch_size, max_queue_delay_s = self._limits()
                flush_at = policy.next_flush_s(
                    oldest_enqueued_s=first.enqueued_s,
                    queued_rows=self._queues.live_rows,
                    max_batch_size=max_batch_size,
                    preferred_batch_sizes=config.preferred_batch_sizes,
                    max_queue_delay_s=max_queue_delay_s,
                    now_s=now,
                    expected_arrival_gap_s=self._arrivals.expected_gap_s(),
                )
                if flush_at > now and self._accepting:
                    if self._arrivals_at_wait is None:
                        self._arrivals_at_wait = self._arrivals.arrivals
                    self._arm_flush_locked(flush_at)
                    break
                target = policy.batch_rows_target(
                    queued_rows=self._queues.live_rows,
                    max_batch_size=max_batch_size,
                    preferred_batch_sizes=config.preferred_batch_sizes,
                )
                batch = self._queues.take(first, max_rows=max(target, first.rows))
                if self._arrivals_at_wait is not None:
                    gathered = len(batch) > 1 or self._arrivals.arrivals != self._arrivals_at_wait
                    self._arrivals.wait_ended(gathered=gathered)
                    self._arrivals_at_wait = None
            batch = self._drop_late(batch, now)
            if batch:
                leads.append(self._lead_locked(batch))
        return leads

    def _lead_locked(self, batch: list[PendingRequest]) -> Lead:
        for request in batch:
            if request.timers:
                for timer in request.timers:
                    timer.cancel()
                request.timers = None
        self._running += 1
        sequence = self._next_sequence
        self._next_sequence += 1
        return Lead(self, self._idle.popleft(), batch, sequence)

    def _limits(self) -> tuple[int, float]:
        """Batch size and queue delay in force: the config's, or the SLO controller's."""
        if self._slo is not None:
            return self._slo.batch_limit, self._slo.max_queue_delay_s()
        return self.config.max_batch_size, self.config.max_queue_delay_us / 1e6

    def _drop_late(self, batch: list[PendingRequest], now_s: float) -> list[PendingRequest]:
        """Answer the requests already past their deadline (and, in latency-SLO mode, past the
        target) instead of running them."""
        keep = []
        for request in batch:
            if request.reject_at_s is not None and request.reject_at_s <= now_s:
                request.finish(
                    None,
                    RequestTimeoutError(
                        f"request timed out after waiting in the queue of model '{self.model_name}'"
                    ),
                )
            elif self._slo is not None and now_s - request.enqueued_s > self._slo.target_s:
                request.finish(
                    None,
                    QueueFullError(
                        f"model '{self.model_name}' shed the request: it waited past the "
                        f"latency target of {self.config.latency_target_p99_us}us"
                    ),
                )
            else:
                keep.append(request)
        return keep

    def _hand_off(self, leads: list[Lead]) -> None:
        """Give each batch to the thread of a caller waiting for it; a batch of stream requests
        only goes to a helper thread."""
        for lead in leads:
            for request in lead.batch:
                if request.waiter.can_lead:
                    request.waiter.give(lead)
                    break
            else:
                self._pool("_leaders").submit(lead.run)

    def _pool(self, name: str) -> ThreadPoolExecutor:
        with self._lock:
            pool: ThreadPoolExecutor | None = getattr(self, name)
            if pool is None:
                pool = ThreadPoolExecutor(
                    max_workers=len(self._instances),
                    thread_name_prefix=f"{name.strip('_')}-{self.model_name}",
                )
                setattr(self, name, pool)
            return pool

    # running batches ---------------------------------------------------------------------------

    def _execute(self, lead: Lead, hooks: BlockingHooks | None = None) -> None:
        clock = self._clock
        batch, instance = lead.batch, lead.instance
        rows = sum(request.rows for request in batch)
        started = finished = clock.now()
        assemble_s = infer_s = split_s = 0.0
        results: list[Outputs | TensorgateError]
        try:
            inputs = assemble.concatenate(batch, self.config.padded_inputs, self.config.pad_value)
            output_names = _union_in_order(batch)
            assembled = clock.now()
            assemble_s = assembled - started
            try:
                lend = hooks is not None and self._compute_s > LEND_WHEN_COMPUTE_OVER_S
                if lend:
                    hooks.blocking()  # type: ignore[union-attr]
                try:
                    outputs = self._compute(instance, inputs, output_names)
                finally:
                    if lend:
                        hooks.resumed()  # type: ignore[union-attr]
            except _RuntimeFailure as failure:
                results = self._isolate_failure(instance, batch, failure)
            else:
                # The instance is free from here: the next batch starts while this one's
                # answers are split and reported (a tiny model is busy for a fraction of a
                # request's time, and requests that find it free need no hand-off).
                self._return_instance(lead)
                inferred = clock.now()
                infer_s = inferred - assembled
                self._time_run(infer_s)
                results = self._split(outputs, batch, rows)
                finished = clock.now()
                split_s = finished - inferred
        except TensorgateError as error:  # a broken row contract, an execution timeout
            log.error("model '%s': batch of %d rows failed: %s", self.model_name, rows, error)
            results = [error.with_traceback(None)] * len(batch)  # no frames kept alive
        except Exception:  # a bug: the log has it; clients get a generic error
            log.error("model '%s': batch of %d rows failed", self.model_name, rows, exc_info=True)
            results = [_generic_failure(self.model_name)] * len(batch)
        try:
            if finished == started:  # it failed: the split never ended
                finished = clock.now()
            self._report(batch, results, rows, started, finished, assemble_s, infer_s, split_s)
        except Exception:  # an observer's bug must not leave the callers waiting
            log.exception("model '%s': reporting a batch failed", self.model_name)
        answers: list[Answer] = [
            (request, None, result)
            if isinstance(result, TensorgateError)
            else (request, result, None)
            for request, result in zip(batch, results, strict=True)
        ]
        self._finish_batch(lead, answers)

    def _time_run(self, infer_s: float) -> None:
        # Unlocked: two threads racing here can only lose one run's time from a window.
        self._window_min_s = min(self._window_min_s, infer_s)
        self._window_runs += 1
        if self._window_runs >= _COMPUTE_WINDOW:
            self._compute_s = self._window_min_s
            self._window_min_s = float("inf")
            self._window_runs = 0

    def _return_instance(self, lead: Lead) -> None:
        with self._lock:
            lead.instance_returned = True
            self._idle.append(lead.instance)
            leads = self._dispatch_locked() if self._queues.live_requests else []
        if leads:
            self._hand_off(leads)

    def _finish_batch(self, lead: Lead, answers: list[Answer]) -> None:
        with self._lock:
            self._release_locked(lead.sequence, answers)
            leads: list[Lead] = []
            if not lead.instance_returned and lead.instance not in self._held:
                self._idle.append(lead.instance)
                if self._queues.live_requests:
                    leads = self._dispatch_locked()
            self._running -= 1
            if not self._accepting:
                self._drained.notify_all()
        if leads:
            self._hand_off(leads)

    def _release_locked(self, sequence: int, answers: list[Answer]) -> None:
        """Answer the requests; with preserve_ordering, only after every earlier batch's."""
        if not self.config.preserve_ordering:
            for request, outputs, error in answers:
                request.finish(outputs, error)
            return
        self._ordered[sequence] = answers
        while self._next_to_release in self._ordered:
            for request, outputs, error in self._ordered.pop(self._next_to_release):
                request.finish(outputs, error)
            self._next_to_release += 1

    def _compute(
        self, instance: Runtime, inputs: dict[str, np.ndarray], output_names: list[str]
    ) -> Outputs:
        """Run the runtime on this thread; under an execution timeout, on a helper thread that
        this one gives up on when the time runs out (the instance stays out of service until
        the run returns: a thread cannot be stopped)."""
        timeout_us = self.config.execution_timeout_us
        if not timeout_us:
            return _run_runtime(instance, inputs, output_names)
        work = self._run_with_timeout(instance, inputs, output_names, timeout_us / 1e6)
        if not work.done():
            with self._lock:
                self._held.add(instance)
            work.add_done_callback(lambda _: self._return_held(instance))
            log.error(
                "model '%s': a batch ran past the execution timeout of %d us; its instance is "
                "out of service until it returns",
                self.model_name,
                timeout_us,
            )
            raise ModelExecutionError(
                f"model '{self.model_name}' did not finish the batch within its execution "
                f"timeout of {timeout_us} us"
            )
        return work.result()

    def _run_with_timeout(
        self,
        instance: Runtime,
        inputs: dict[str, np.ndarray],
        output_names: list[str],
        timeout_s: float,
    ) -> Future[Outputs]:
        """Start the run on a runner thread and wait until it is done or the time is up."""
        waiter = Waiter()
        expired = threading.Event()

        def expire() -> None:
            expired.set()
            waiter.notify()

        timer = self._clock.call_at(self._clock.now() + timeout_s, expire)  # before the run
        work = self._pool("_runners").submit(_run_runtime, instance, inputs, output_names)
        work.add_done_callback(lambda _: waiter.notify())
        try:
            while not work.done() and not expired.is_set():
                waiter.wait()
        finally:
            timer.cancel()
        return work

    def _return_held(self, instance: Runtime) -> None:
        log.warning("model '%s': a timed-out batch has returned; instance back", self.model_name)
        with self._lock:
            self._held.discard(instance)
            self._idle.append(instance)
            leads = self._dispatch_locked()
        self._hand_off(leads)

    def _split(
        self, outputs: Outputs, batch: list[PendingRequest], rows: int
    ) -> list[Outputs | TensorgateError]:
        if not self._batches:
            return [outputs]
        return list(
            assemble.split(
                outputs,
                batch,
                model_name=self.model_name,
                batch_rows=rows,
                padded_inputs=self.config.padded_inputs,
                sliced_outputs=self.config.sliced_outputs,
            )
        )

    def _isolate_failure(
        self, instance: Runtime, batch: list[PendingRequest], failure: _RuntimeFailure
    ) -> list[Outputs | TensorgateError]:
        """The runtime failed a batch: if it held several requests, run each alone, so that
        one request's bad data fails that request only (and no other client sees its error)."""
        if len(batch) == 1:
            return [self._client_error(failure)]
        log.warning(
            "model '%s': a batch of %d requests failed (%s); running them one by one",
            self.model_name,
            len(batch),
            failure.message,
        )
        results: list[Outputs | TensorgateError] = []
        for request in batch:
            try:
                outputs = self._compute(instance, request.inputs, list(request.output_names))
                results.extend(self._split(outputs, [request], request.rows))
            except _RuntimeFailure as alone:
                results.append(self._client_error(alone))
            except TensorgateError as error:
                results.append(error.with_traceback(None))
        return results

    def _client_error(self, failure: _RuntimeFailure) -> TensorgateError:
        """What a client is told about a runtime failure: a generic message of the right kind;
        the runtime's own words (node names, values) go to the log only."""
        log.error("model '%s': the runtime failed a request: %s", self.model_name, failure.message)
        if failure.invalid_input:
            return InvalidInputError(
                f"model '{self.model_name}' rejected the request's input values; the server "
                "log has the runtime's message"
            )
        return ModelExecutionError(
            f"model '{self.model_name}' failed to run the request; the server log has the details"
        )

    def _report(
        self,
        batch: list[PendingRequest],
        results: list[Outputs | TensorgateError],
        rows: int,
        started: float,
        finished: float,
        assemble_s: float,
        infer_s: float,
        split_s: float,
    ) -> None:
        queue_s = tuple(started - request.enqueued_s for request in batch)
        succeeded = not any(isinstance(result, TensorgateError) for result in results)
        if self._slo is not None and succeeded:
            self._slo.observe(rows, infer_s)
        self._observer.batch_completed(
            BatchReport(
                rows,
                queue_s,
                assemble_s,
                infer_s,
                split_s,
                succeeded,
                started_s=started,
                finished_s=finished,
                traces=tuple(request.trace for request in batch),
            )
        )


class _RuntimeFailure(Exception):
    """The runtime raised while running a batch (as opposed to a broken contract): only its
    message and kind are kept, not the error and its frames."""

    def __init__(self, message: str, invalid_input: bool) -> None:
        super().__init__(message)
        self.message = message
        self.invalid_input = invalid_input


def _run_runtime(
    instance: Runtime, inputs: dict[str, np.ndarray], output_names: list[str]
) -> Outputs:
    try:
        return instance.infer(inputs, output_names)
    except Exception as error:
        message, invalid_input = str(error), isinstance(error, InvalidInputError)
    # Raised here, outside the except block and from no local, so that no frame holds the
    # error its own traceback holds (a cycle that would keep the batch's inputs alive).
    raise _RuntimeFailure(message, invalid_input)


def _generic_failure(model_name: str) -> ModelExecutionError:
    return ModelExecutionError(f"model '{model_name}' failed to run the request")


def _check_padded_shapes_agree(inputs: dict[str, np.ndarray], padded: frozenset[str]) -> None:
    shapes = {name: inputs[name].shape for name in padded if name in inputs}
    if len(set(shapes.values())) > 1:
        described = ", ".join(f"'{name}' {list(shape)}" for name, shape in shapes.items())
        raise InvalidInputError(f"inputs padded together must have the same shape, got {described}")


def _union_in_order(batch: Sequence[PendingRequest]) -> list[str]:
    if len(batch) == 1:
        return list(batch[0].output_names)
    names: dict[str, None] = {}
    for request in batch:
        names.update(dict.fromkeys(request.output_names))
    return list(names)
