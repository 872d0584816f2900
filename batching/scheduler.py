"""The dynamic batching scheduler: one long-lived task per model version.

Requests are queued by priority; the loop waits for a free runtime instance, then for the policy
to say a batch should go, takes the batch and runs it on a worker thread (onnxruntime releases
the GIL) while it goes on forming the next one for another instance.

Reference cycles. A raised error's traceback holds every frame it passed through, and each frame
its callers', up to the servicer's frames that hold the request. A frame that still holds the
error while it passes (a local, or a future that holds it) closes a cycle, and then the request
and its inputs stay until a full garbage collection, which under a stream of failing large
requests is tens of MiB. So a frame that raises an error it holds, itself or through a future,
lets go of it as it raises (the standard library's idiom, `try: raise ... finally: del ...`), and
log records get the error's message, not the error.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from batching import assemble, policy
from batching.arrivals import ArrivalModel
from batching.clock import Clock, MonotonicClock, wait_for_event
from batching.config import BatchingConfig, TimeoutAction
from batching.idle import IdleInstances
from batching.observer import BatchObserver, BatchReport, NullObserver
from batching.queue import RequestQueues
from batching.request import PendingRequest, group_key_of
from batching.slo import LatencyController
from runtimes.base import Runtime
from runtimes.errors import (
    InvalidInputError,
    ModelExecutionError,
    QueueFullError,
    RequestTimeoutError,
    ShuttingDownError,
    TensorgateError,
)

log = logging.getLogger(__name__)

Outputs = dict[str, np.ndarray]

# The inline cost model's moving average: weights for a sample below and above the estimate,
# and the most a single sample counts for, as a multiple of the estimate.
_COST_FALL = 0.5
_COST_RISE = 0.1
_COST_OUTLIER_RATIO = 4.0


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
        self._instances = tuple(instances)
        self._clock = clock or MonotonicClock()
        self._observer = observer or NullObserver()
        self._queues = RequestQueues(config)
        self._wakeup = asyncio.Event()
        self._free = IdleInstances()
        self._running: set[asyncio.Task[None]] = set()
        self._held: set[Runtime] = set()  # instances whose timed-out batch is still running
        self._executor: ThreadPoolExecutor | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._accepting = False
        self._next_sequence = 0
        self._ordered_results: dict[int, list[tuple[PendingRequest, Outputs | BaseException]]] = {}
        self._next_to_release = 0
        self._slo = (
            LatencyController(
                config.latency_target_p99_us / 1e6, config.max_batch_size, len(self._instances)
            )
            if config.latency_target_p99_us and config.batches
            else None
        )
        # The cost model for inline compute: seconds per input element (moving average), and
        # the largest batch measured so far, in input elements.
        self._compute_s_per_element: float | None = None
        self._largest_measured_elements = 0
        self._arrivals = ArrivalModel()

    # lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        self._executor = ThreadPoolExecutor(
            max_workers=len(self._instances), thread_name_prefix=f"infer-{self.model_name}"
        )
        for instance in self._instances:
            self._free.put(instance)
        self._accepting = True
        self._loop_task = asyncio.create_task(self._run(), name=f"scheduler-{self.model_name}")

    async def stop(self) -> None:
        """Stop taking requests, run every one already queued, then wait for running batches."""
        self._accepting = False
        self._wakeup.set()
        if self._loop_task is not None:
            await self._loop_task
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)
        if self._executor is not None:
            # A hung batch's thread cannot be joined; do not wait for it.
            self._executor.shutdown(wait=not self._held)

    @property
    def queued_requests(self) -> int:
        return self._queues.live_requests

    def queue_depth(self, priority_level: int) -> int:
        return self._queues.depth(priority_level)

    # requests ----------------------------------------------------------------------------------

    async def submit(
        self,
        inputs: dict[str, np.ndarray],
        output_names: Sequence[str],
        *,
        priority_level: int = 0,
        timeout_us: int = 0,
        deadline_s: float | None = None,
        trace: object | None = None,
    ) -> Outputs:
        """Queue one request and wait for its outputs.

        priority_level 0 means the default level; timeout_us 0 means the queue policy's default.
        deadline_s is the caller's own deadline on this scheduler's clock (a gRPC deadline).
        trace is handed back, untouched, in the report of the batch the request runs in.
        Cancelling the awaiting task drops the request if its batch has not started.
        """
        if not self._accepting:
            raise ShuttingDownError(f"model '{self.model_name}' is shutting down")
        request = self._make_request(inputs, output_names, priority_level, timeout_us, deadline_s)
        request.trace = trace
        if self._slo is not None and self._slo.would_miss(self._queues.live_rows, request.rows):
            raise QueueFullError(
                f"model '{self.model_name}' cannot answer within its latency target of "
                f"{self.config.latency_target_p99_us}us with the requests already queued; "
                "retry later"
            )
        elements = _elements(inputs)
        if self._runs_directly(request, elements):
            self._arrivals.arrived(request.enqueued_s, others_queued=False)
            sequence = self._take_sequence()
            result = self._execute_inline(self._free.first(), request, elements)
            if self._answer_now(sequence):
                if isinstance(result, BaseException):
                    try:
                        raise result
                    finally:
                        del result  # see "Reference cycles" in the module docstring
                return result
            self._release(sequence, [(request, result)])  # after an earlier batch's answers
            del result  # an error also set on the future this frame awaits: no cycle
        else:
            if self.config.batches:
                request.group_key = group_key_of(inputs, self.config.padded_inputs)
            others_queued = self._queues.live_requests > 0
            self._queues.admit(request)
            self._arrivals.arrived(request.enqueued_s, others_queued)
            self._arm_timers(request)
            self._wakeup.set()
        try:
            return await request.future
        finally:
            # Answered while still queued (cancelled, expired): stop counting it.
            self._queues.discard(request)
            del request  # its future holds the error this frame may raise: no cycle

    def _make_request(
        self,
        inputs: dict[str, np.ndarray],
        output_names: Sequence[str],
        priority_level: int,
        timeout_us: int,
        deadline_s: float | None,
    ) -> PendingRequest:
        config = self.config
        level = priority_level or config.default_priority_level
        if not 1 <= level <= config.priority_levels:
            raise InvalidInputError(
                f"priority {priority_level} is out of range: model '{self.model_name}' has "
                f"priority levels 1 to {config.priority_levels}"
            )
        rows = next(iter(inputs.values())).shape[0] if config.batches and inputs else 1
        if config.padded_inputs:
            _check_padded_shapes_agree(inputs, config.padded_inputs)
        if config.batches and rows > config.max_batch_size:
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
            future=asyncio.get_running_loop().create_future(),
            reject_at_s=reject_at,
            delay_at_s=delay_at,
        )

    def _arm_timers(self, request: PendingRequest) -> None:
        timers = []
        if request.reject_at_s is not None:
            timers.append(self._clock.call_at(request.reject_at_s, lambda: self._expire(request)))
        if request.delay_at_s is not None:
            delay_at = request.delay_at_s
            timers.append(self._clock.call_at(delay_at, lambda: self._queues.delay(request)))
        if timers:
            request.future.add_done_callback(lambda _: [timer.cancel() for timer in timers])

    def _expire(self, request: PendingRequest) -> None:
        if request.queued and request.live:
            request.future.set_exception(
                RequestTimeoutError(
                    f"request timed out after waiting in the queue of model '{self.model_name}'"
                )
            )

    # the loop ----------------------------------------------------------------------------------

    async def _run(self) -> None:
        while await self._wait_for_work():
            instance = await self._free.take()
            batch = await self._next_batch()
            if batch is None:
                self._free.put(instance)
                return
            if len(self._instances) == 1:
                # Nothing could run beside it: no task needed (the next batch waits for this
                # instance either way).
                await self._execute(instance, batch, self._take_sequence())
            else:
                task = asyncio.create_task(self._execute(instance, batch, self._take_sequence()))
                self._running.add(task)
                task.add_done_callback(self._running.discard)
            del batch  # waiting for the next, the loop keeps no answered request's inputs alive

    async def _wait_for_work(self) -> bool:
        """Wait until a request is queued; False once stopped with nothing queued."""
        while True:
            self._wakeup.clear()
            if self._queues.oldest() is not None:
                return True
            if not self._accepting:
                return False
            await self._wakeup.wait()

    def _take_sequence(self) -> int:
        sequence = self._next_sequence
        self._next_sequence += 1
        return sequence

    def _runs_directly(self, request: PendingRequest, elements: int) -> bool:
        """Whether `request` can run right now in its caller's task: nothing queued, an idle
        instance, no reason to wait for others, and a batch cheap enough to run inline. This
        skips the hand-offs to the scheduler task, which cost more than a tiny model."""
        if (
            self._slo is not None
            or self._queues.live_requests
            or not self._free
            or not self._inline_is_cheap(elements)
            or (request.reject_at_s is not None and request.reject_at_s <= request.enqueued_s)
        ):
            return False
        if not self.config.combines_requests or not self.config.max_queue_delay_us:
            return True  # nothing to wait for
        flush_at = policy.next_flush_s(
            oldest_enqueued_s=request.enqueued_s,
            queued_rows=request.rows,
            max_batch_size=self.config.max_batch_size,
            preferred_batch_sizes=self.config.preferred_batch_sizes,
            max_queue_delay_s=self.config.max_queue_delay_us / 1e6,
            now_s=request.enqueued_s,
            expected_arrival_gap_s=self._arrivals.expected_gap_s(),
        )
        return flush_at <= request.enqueued_s

    async def _next_batch(self) -> list[PendingRequest] | None:
        """Wait until the policy says a batch should go; None once stopped with nothing queued."""
        config = self.config
        arrivals_when_waiting: int | None = None  # set once this batch has waited for company
        while True:
            self._wakeup.clear()
            first = self._queues.oldest()
            if first is None:
                if not self._accepting:
                    return None
                await self._wakeup.wait()
                continue
            if not config.combines_requests:
                return self._queues.take(first, max_rows=first.rows)
            max_batch_size, max_queue_delay_s = self._limits()
            flush_at = policy.next_flush_s(
                oldest_enqueued_s=first.enqueued_s,
                queued_rows=self._queues.live_rows,
                max_batch_size=max_batch_size,
                preferred_batch_sizes=config.preferred_batch_sizes,
                max_queue_delay_s=max_queue_delay_s,
                now_s=self._clock.now(),
                expected_arrival_gap_s=self._arrivals.expected_gap_s(),
            )
            if flush_at <= self._clock.now() or not self._accepting:
                target = policy.batch_rows_target(
                    queued_rows=self._queues.live_rows,
                    max_batch_size=max_batch_size,
                    preferred_batch_sizes=config.preferred_batch_sizes,
                )
                batch = self._queues.take(first, max_rows=max(target, first.rows))
                if arrivals_when_waiting is not None:
                    self._arrivals.wait_ended(
                        gathered=len(batch) > 1 or self._arrivals.arrivals != arrivals_when_waiting
                    )
                return batch
            if arrivals_when_waiting is None:
                arrivals_when_waiting = self._arrivals.arrivals
            await wait_for_event(self._clock, self._wakeup, flush_at)

    def _limits(self) -> tuple[int, float]:
        """Batch size and queue delay in force: the config's, or the SLO controller's."""
        if self._slo is not None:
            return self._slo.batch_limit, self._slo.max_queue_delay_s()
        return self.config.max_batch_size, self.config.max_queue_delay_us / 1e6

    def _still_wanted(self, batch: list[PendingRequest], now_s: float) -> list[PendingRequest]:
        """Drop requests cancelled since they were taken; in SLO mode, answer those that
        already missed the target instead of running them."""
        batch = [request for request in batch if request.live]
        if self._slo is None:
            return batch
        keep = []
        for request in batch:
            if now_s - request.enqueued_s > self._slo.target_s:
                request.future.set_exception(
                    QueueFullError(
                        f"model '{self.model_name}' shed the request: it waited past the "
                        f"latency target of {self.config.latency_target_p99_us}us"
                    )
                )
            else:
                keep.append(request)
        return keep

    async def _execute(self, instance: Runtime, batch: list[PendingRequest], sequence: int) -> None:
        clock = self._clock
        started = clock.now()
        batch = self._still_wanted(batch, started)
        if not batch:
            self._free.put(instance)
            self._release(sequence, [])
            return
        rows = sum(request.rows for request in batch)
        assemble_s = infer_s = split_s = 0.0
        results: list[Outputs | BaseException]
        try:
            inputs = assemble.concatenate(batch, self.config.padded_inputs, self.config.pad_value)
            output_names = _union_in_order(batch)
            assembled = clock.now()
            assemble_s = assembled - started
            try:
                outputs = await self._compute(instance, inputs, output_names, rows)
            except RuntimeFailure as failure:
                results = await self._isolate_failure(instance, batch, failure)
            else:
                inferred = clock.now()
                infer_s = inferred - assembled
                results = self._split(outputs, batch, rows)
                split_s = clock.now() - inferred
        except Exception as error:
            results = [self._batch_error(error, rows)] * len(batch)
        finally:
            if instance not in self._held:
                self._free.put(instance)
        self._report(batch, results, rows, started, assemble_s, infer_s, split_s)
        self._release(sequence, list(zip(batch, results, strict=True)))

    def _execute_inline(
        self, instance: Runtime, request: PendingRequest, elements: int
    ) -> Outputs | BaseException:
        """The direct path: one request that came to an idle instance with nothing queued, run
        on the event loop now (its cost is known to be small), without the batch machinery. The
        instance stays among the idle ones: nothing else runs on the loop until this returns."""
        result: Outputs | BaseException
        infer_s = 0.0
        try:
            outputs, infer_s = _timed_infer(
                self._clock, instance, request.inputs, list(request.output_names)
            )
            self._learn_cost(elements, infer_s)
            result = self._split(outputs, [request], request.rows)[0]
        except RuntimeFailure as failure:
            result = self._client_error(failure)
        except Exception as error:
            result = self._batch_error(error, request.rows)
        # It started as it arrived and never queued; there is no latency controller here.
        started = request.enqueued_s
        self._observer.batch_completed(
            BatchReport(
                request.rows,
                (0.0,),
                0.0,
                infer_s,
                0.0,
                not isinstance(result, BaseException),
                started_s=started,
                finished_s=started + infer_s,
                traces=(request.trace,),
            )
        )
        return result

    def _answer_now(self, sequence: int) -> bool:
        """Whether the inline result of batch `sequence` may go straight back to its caller:
        always, unless preserve_ordering holds it behind an earlier batch's answers."""
        if not self.config.preserve_ordering:
            return True
        if self._next_to_release != sequence:
            return False
        self._next_to_release += 1
        return True

    def _batch_error(self, error: Exception, rows: int) -> TensorgateError:
        """What every request of a batch gets when the batch broke outside the runtime call
        (a broken row contract, a bug): a TensorgateError as it is, anything else generic."""
        if isinstance(error, TensorgateError):
            log.error("model '%s': batch of %d rows failed: %s", self.model_name, rows, error)
            return error
        log.error("model '%s': batch of %d rows failed", self.model_name, rows, exc_info=error)
        return ModelExecutionError(f"model '{self.model_name}' failed to run the request")

    def _report(
        self,
        batch: list[PendingRequest],
        results: list[Outputs | BaseException],
        rows: int,
        started: float,
        assemble_s: float,
        infer_s: float,
        split_s: float,
    ) -> None:
        queue_s = tuple(started - request.enqueued_s for request in batch)
        succeeded = not any(isinstance(result, BaseException) for result in results)
        if self._slo is not None and succeeded:
            self._slo.observe(rows, infer_s, max(queue_s) + assemble_s + infer_s + split_s)
        self._observer.batch_completed(
            BatchReport(
                rows,
                queue_s,
                assemble_s,
                infer_s,
                split_s,
                succeeded,
                started_s=started,
                finished_s=self._clock.now(),
                traces=tuple(request.trace for request in batch),
            )
        )

    def _split(
        self, outputs: Outputs, batch: list[PendingRequest], rows: int
    ) -> list[Outputs | BaseException]:
        if not self.config.batches:
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

    async def _isolate_failure(
        self, instance: Runtime, batch: list[PendingRequest], failure: RuntimeFailure
    ) -> list[Outputs | BaseException]:
        """The runtime failed a batch: if it held several requests, run each alone, so that
        one request's bad data fails that request only (and no other client sees its error)."""
        if len(batch) == 1:
            return [self._client_error(failure)]
        log.warning(
            "model '%s': a batch of %d requests failed (%s); running them one by one",
            self.model_name,
            len(batch),
            str(failure.cause),  # a record keeps its arguments: not the error and its frames
        )
        results: list[Outputs | BaseException] = []
        for request in batch:
            try:
                outputs = await self._compute(
                    instance, request.inputs, list(request.output_names), request.rows
                )
                results.extend(self._split(outputs, [request], request.rows))
            except RuntimeFailure as alone:
                results.append(self._client_error(alone))
            except TensorgateError as error:
                results.append(error)
        return results

    def _client_error(self, failure: RuntimeFailure) -> TensorgateError:
        """What a client is told about a runtime failure: a generic message of the right kind;
        the runtime's own words (node names, values) go to the log only."""
        message = str(failure.cause)  # a record keeps its arguments: not the error and its frames
        log.error("model '%s': the runtime failed a request: %s", self.model_name, message)
        if isinstance(failure.cause, InvalidInputError):
            return InvalidInputError(
                f"model '{self.model_name}' rejected the request's input values; the server "
                "log has the runtime's message"
            )
        return ModelExecutionError(
            f"model '{self.model_name}' failed to run the request; the server log has the details"
        )

    async def _compute(
        self, instance: Runtime, inputs: dict[str, np.ndarray], output_names: list[str], rows: int
    ) -> Outputs:
        """Run the runtime inline when the batch is expected to be cheaper than a thread
        hand-off, else on a worker thread; either way learn its cost."""
        elements = _elements(inputs)
        if self._inline_is_cheap(elements):
            outputs, seconds = _timed_infer(self._clock, instance, inputs, output_names)
        else:
            outputs, seconds = await self._compute_on_thread(instance, inputs, output_names)
        self._learn_cost(elements, seconds)
        return outputs

    def _inline_is_cheap(self, elements: int) -> bool:
        """Whether a batch of this many input elements may run on the event loop: its predicted
        time is under the threshold, and it is at most twice the size of a batch already
        measured (a prediction is not stretched far beyond what was seen)."""
        per_element = self._compute_s_per_element
        return (
            per_element is not None
            and elements <= 2 * self._largest_measured_elements
            and per_element * elements < self.config.inline_compute_threshold_us / 1e6
        )

    def _learn_cost(self, elements: int, seconds: float) -> None:
        """Fold one measured run into the per-element cost. A run stretched by preemption or by
        a wait for the GIL says little about the model, so a sample counts for at most 4x the
        estimate and rises are weighted lightly (one sample raises it by at most 30%); faster
        samples pull it down quickly."""
        sample = seconds / max(1, elements)
        previous = self._compute_s_per_element
        if previous is None:
            self._compute_s_per_element = sample
        elif sample < previous:
            self._compute_s_per_element = previous + _COST_FALL * (sample - previous)
        else:
            sample = min(sample, _COST_OUTLIER_RATIO * previous)
            self._compute_s_per_element = previous + _COST_RISE * (sample - previous)
        self._largest_measured_elements = max(self._largest_measured_elements, elements)

    async def _compute_on_thread(
        self, instance: Runtime, inputs: dict[str, np.ndarray], output_names: list[str]
    ) -> tuple[Outputs, float]:
        """Run on a worker thread, giving up after the execution timeout: the batch's requests
        are then answered, and the instance stays out of service until its thread returns
        (a thread cannot be stopped), so a hung model fails only its own requests."""
        loop = asyncio.get_running_loop()
        work = loop.run_in_executor(
            self._executor, _timed_infer, self._clock, instance, inputs, output_names
        )
        timeout_s = self.config.execution_timeout_us / 1e6
        if timeout_s and not await self._finishes_within(work, timeout_s):
            self._held.add(instance)
            work.add_done_callback(lambda _: self._return_held(instance))
            log.error(
                "model '%s': a batch ran past the execution timeout of %d us; its instance is "
                "out of service until it returns",
                self.model_name,
                self.config.execution_timeout_us,
            )
            raise ModelExecutionError(
                f"model '{self.model_name}' did not finish the batch within its execution "
                f"timeout of {self.config.execution_timeout_us} us"
            )
        try:
            return await work  # its outputs, or the runtime's error
        finally:
            del work  # see "Reference cycles" in the module docstring

    async def _finishes_within(self, work: asyncio.Future, timeout_s: float) -> bool:
        """Whether the worker thread's work is done (or failed) before the execution timeout."""
        expired = asyncio.get_running_loop().create_future()
        timer = self._clock.call_at(
            self._clock.now() + timeout_s, lambda: expired.done() or expired.set_result(None)
        )
        try:
            await asyncio.wait((work, expired), return_when=asyncio.FIRST_COMPLETED)
        finally:
            timer.cancel()
        return work.done()

    def _return_held(self, instance: Runtime) -> None:
        self._held.discard(instance)
        log.warning("model '%s': a timed-out batch has returned; instance back", self.model_name)
        self._free.put(instance)

    def _release(
        self, sequence: int, answers: list[tuple[PendingRequest, Outputs | BaseException]]
    ) -> None:
        """Resolve futures; with preserve_ordering, only after every earlier batch's."""
        if not self.config.preserve_ordering:
            _resolve(answers)
            return
        self._ordered_results[sequence] = answers
        while self._next_to_release in self._ordered_results:
            _resolve(self._ordered_results.pop(self._next_to_release))
            self._next_to_release += 1


class RuntimeFailure(Exception):
    """The runtime itself raised while running a batch (as opposed to a broken contract or a
    timeout); `cause` is what it raised."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


def _timed_infer(
    clock: Clock, instance: Runtime, inputs: dict[str, np.ndarray], output_names: list[str]
) -> tuple[Outputs, float]:
    started = clock.now()
    try:
        outputs = instance.infer(inputs, output_names)
    except Exception as error:
        raise RuntimeFailure(error) from error
    return outputs, clock.now() - started


def _resolve(answers: list[tuple[PendingRequest, Outputs | BaseException]]) -> None:
    for request, result in answers:
        if request.future.done():
            continue
        if isinstance(result, BaseException):
            request.future.set_exception(result)
        else:
            request.future.set_result(result)


def _check_padded_shapes_agree(inputs: dict[str, np.ndarray], padded: frozenset[str]) -> None:
    shapes = {name: inputs[name].shape for name in padded if name in inputs}
    if len(set(shapes.values())) > 1:
        described = ", ".join(f"'{name}' {list(shape)}" for name, shape in shapes.items())
        raise InvalidInputError(f"inputs padded together must have the same shape, got {described}")


def _elements(inputs: dict[str, np.ndarray]) -> int:
    """A batch's size for the cost model: the elements of all its inputs."""
    return sum(array.size for array in inputs.values())


def _union_in_order(batch: Sequence[PendingRequest]) -> list[str]:
    if len(batch) == 1:
        return list(batch[0].output_names)
    names: dict[str, None] = {}
    for request in batch:
        names.update(dict.fromkeys(request.output_names))
    return list(names)
