"""SIGTERM, as Kubernetes sends it: drain what was accepted, say NOT_SERVING, exit on time.

The contract tested (README "Configuration", server/app.py stop()): on SIGTERM the server turns
its health NOT_SERVING, stops taking new work, lets every request it had accepted finish within
--grace-period-secs, then exits 0. A client therefore sees each call either succeed, or fail
with UNAVAILABLE because it reached the server after shutdown began (a retryable refusal). Any
other outcome (CANCELLED, DEADLINE_EXCEEDED, INTERNAL, UNKNOWN, ...) is a lost request.

Synchronisation: the signal is sent only once the server's own metrics report requests waiting
in the queue (so they are in flight at the signal, not just "probably"); the health change is
awaited on a Watch stream opened before the signal; shutdown is observed through the server's
"shutting down" log line and the process exit. Every wait has a timeout; nothing sleeps.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tritonclient.utils import InferenceServerException

from tests.support import fault_models as fm
from tests.support import model_factory as mf
from tests.support import probes
from tests.support import python_models as pm
from tests.support.server_process import ServerProcess

StartServer = Callable[..., ServerProcess]

COLUMNS = mf.ADD_SUB_ELEMENT_COUNT
GRACE_S = 10.0
SHORT_GRACE_S = 1.0
# Time the server may take after its grace period: unloading models, closing the metrics and
# tracing exporters, interpreter exit (measured: about 0.5 s on 2 cores).
EXIT_MARGIN_S = 4.0
QUEUED_WORKERS = 6  # fewer than max_batch_size 8: each batch waits out the 20 ms queue delay
FAST_WORKERS = 6  # a model without queue delay, so calls keep arriving during the drain
MIN_SUCCESSES = 3  # answers every worker must have before the signal
WAIT_S = 20.0
WORKER_LIMIT_S = 60.0  # a worker stops by itself after this, whatever happens
SHUTTING_DOWN = r"server\.app: shutting down"


@dataclass(frozen=True)
class Call:
    model: str
    started: float
    ended: float
    code: str  # "OK" or a grpc.StatusCode name
    message: str
    correct: bool = True


def add_sub_inputs(seed: float) -> tuple[list[triton.InferInput], np.ndarray, np.ndarray]:
    first = np.full((1, COLUMNS), seed, dtype=np.float32)
    second = np.arange(COLUMNS, dtype=np.float32).reshape(1, COLUMNS)
    tensors = []
    for name, data in (("INPUT0", first), ("INPUT1", second)):
        tensor = triton.InferInput(name, [1, COLUMNS], "FP32")
        tensor.set_data_from_numpy(data)
        tensors.append(tensor)
    return tensors, first + second, first - second


# UNAVAILABLE answers that say the call was never taken: refused by the servicer once shutdown
# began, or no connection at all (the listener is closed). "Cancelling all calls", for one, is
# gRPC abandoning calls the server had taken when its grace ran out: a lost request.
REFUSALS = ("server is shutting down", "failed to connect to all addresses")


def refused(call: Call) -> bool:
    return call.code == "UNAVAILABLE" and any(text in call.message for text in REFUSALS)


def status_name(error: InferenceServerException) -> str:
    return (error.status() or "UNKNOWN").removeprefix("StatusCode.")


class Worker(threading.Thread):
    """Loops ModelInfer on one add/sub model through its own tritonclient client until its first
    failure (a client told UNAVAILABLE goes elsewhere), `stop` is set, or WORKER_LIMIT_S. With
    `retry`, a client told "shutting down" asks again at once, until it cannot connect."""

    def __init__(
        self,
        url: str,
        model: str,
        index: int,
        stop: threading.Event,
        progress: threading.Condition,
        retry: bool = False,
    ) -> None:
        super().__init__(name=f"worker-{model}-{index}", daemon=True)
        self.url, self.model, self.index, self.retry = url, model, index, retry
        self.stop, self.progress = stop, progress
        self.calls: list[Call] = []
        self.successes = 0

    def run(self) -> None:
        limit = time.monotonic() + WORKER_LIMIT_S
        with triton.InferenceServerClient(self.url) as client:
            sequence = 0
            while not self.stop.is_set() and time.monotonic() < limit:
                sequence += 1
                inputs, total, difference = add_sub_inputs(self.index * 1000.0 + sequence)
                started = time.monotonic()
                try:
                    result = client.infer(self.model, inputs, client_timeout=WORKER_LIMIT_S)
                except InferenceServerException as error:
                    call = Call(
                        self.model, started, time.monotonic(), status_name(error), error.message()
                    )
                else:
                    correct = np.array_equal(result.as_numpy("OUTPUT0"), total) and np.array_equal(
                        result.as_numpy("OUTPUT1"), difference
                    )
                    call = Call(self.model, started, time.monotonic(), "OK", "", correct)
                with self.progress:
                    self.calls.append(call)
                    self.successes += call.code == "OK"
                    self.progress.notify_all()
                if call.code != "OK" and not (self.retry and REFUSALS[0] in call.message):
                    return


def start_flowing(workers: list[Worker], progress: threading.Condition) -> None:
    """Start the workers and wait until each has MIN_SUCCESSES answers."""
    for worker in workers:
        worker.start()
    with progress:
        flowing = progress.wait_for(
            lambda: all(w.successes >= MIN_SUCCESSES for w in workers), WAIT_S
        )
    assert flowing, [(w.name, w.successes, w.calls[-1:]) for w in workers]


class HealthWatch(threading.Thread):
    """A grpc.health.v1 Watch on `service`: records (time, status) until NOT_SERVING arrives,
    then cancels the stream (so an open Watch does not hold the server for its whole grace)."""

    def __init__(self, url: str, service: str) -> None:
        super().__init__(name=f"health-watch-{service or 'server'}", daemon=True)
        self.channel = grpc.insecure_channel(url)
        self.service = service
        self.updates: list[tuple[float, str]] = []
        self.serving = threading.Event()
        self.not_serving = threading.Event()
        self.ended_with: str | None = None

    def run(self) -> None:
        stub = health_pb2_grpc.HealthStub(self.channel)
        request = health_pb2.HealthCheckRequest(service=self.service)
        stream = stub.Watch(request, timeout=WORKER_LIMIT_S)
        try:
            for response in stream:
                name = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
                self.updates.append((time.monotonic(), name))
                if name == "SERVING":
                    self.serving.set()
                elif name == "NOT_SERVING":
                    self.not_serving.set()
                    stream.cancel()
                    return
        except grpc.RpcError as error:
            self.ended_with = error.code().name
        finally:
            self.channel.close()


def wait_for_exit(server: ServerProcess, timeout_s: float) -> tuple[int | None, float]:
    """(exit code or None if still running, seconds waited)."""
    started = time.monotonic()
    try:
        code = server.process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        code = None
    return code, time.monotonic() - started


def test_sigterm_under_load_answers_every_accepted_request_and_exits_in_time(
    tmp_path: Path, start_server: StartServer
) -> None:
    """Six clients keep a 20 ms-delay model's queue full and two more hammer a model without
    delay; SIGTERM is sent while the server reports requests queued. Every call succeeds with
    the right answer or is refused UNAVAILABLE after the signal; none is CANCELLED or otherwise
    lost; the requests queued at the signal are among the successes; health Watch turns
    NOT_SERVING right after the signal; the process exits 0 well within the grace period.

    The fast workers are what make calls reach the server while it drains: such a call was not
    accepted, so it must be refused UNAVAILABLE (retryable), not CANCELLED (which a client
    cannot tell from a request dropped mid-way, and which retry policies do not retry)."""
    mf.write_add_sub_model(
        tmp_path,
        "queued",
        max_batch_size=8,
        config_extra="dynamic_batching { max_queue_delay_microseconds: 20000 }",
    )
    mf.write_add_sub_model(tmp_path, "fast", max_batch_size=8)
    server = start_server(tmp_path, "--grace-period-secs", str(GRACE_S))
    watches = [HealthWatch(server.url, ""), HealthWatch(server.url, "queued")]
    for watch in watches:
        watch.start()
        assert watch.serving.wait(WAIT_S), f"Watch({watch.service!r}) never said SERVING"

    stop, progress = threading.Event(), threading.Condition()
    workers = [
        Worker(server.url, model, index, stop, progress)
        for model, count in (("queued", QUEUED_WORKERS), ("fast", FAST_WORKERS))
        for index in range(count)
    ]
    try:
        start_flowing(workers, progress)
        queued_at_signal = probes.queued(
            probes.wait_for_gauges(server.metrics_port, lambda s: probes.queued(s, "queued") >= 3),
            "queued",
        )
        mark = server.log_mark()
        signalled = time.monotonic()
        server.terminate()
        server.wait_for_log(SHUTTING_DOWN, start=mark, timeout_s=WAIT_S)
        for watch in watches:
            assert watch.not_serving.wait(WAIT_S), (watch.service, watch.updates, watch.ended_with)
        code, waited = wait_for_exit(server, GRACE_S + EXIT_MARGIN_S)
        exited = time.monotonic()
        for worker in workers:
            worker.join(WAIT_S)
    finally:
        stop.set()
    calls = [call for worker in workers for call in worker.calls]
    outcomes = Counter((call.model, call.code, call.message[:70]) for call in calls)
    print(f"\nqueued at the signal: {queued_at_signal:.0f}; exit {code} after {waited:.2f}s")
    print("\n".join(f"  {count:4d} {outcome}" for outcome, count in sorted(outcomes.items())))

    assert code == 0, f"exit code {code} (None: still running after {waited:.1f}s)"
    assert waited <= GRACE_S + EXIT_MARGIN_S
    assert all(not worker.is_alive() for worker in workers)
    for watch in watches:
        (first_time, first), *rest = watch.updates
        assert first == "SERVING" and first_time < signalled, watch.updates
        assert rest and rest[-1][1] == "NOT_SERVING", watch.updates
        assert signalled < rest[-1][0] < min(signalled + 2.0, exited), watch.updates
    assert all(call.correct for call in calls), [call for call in calls if not call.correct]
    refused_early = [c for c in calls if refused(c) and c.ended < signalled]
    assert not refused_early, refused_early
    drained = [c for c in calls if c.code == "OK" and c.started < signalled < c.ended]
    assert drained, "no request was in flight at the signal: the drain was not exercised"
    lost = [call for call in calls if call.code != "OK" and not refused(call)]
    assert not lost, f"{len(lost)} calls lost or answered with the wrong code:\n" + "\n".join(
        f"  {c.model}: {c.code} {c.message!r}, sent {1000 * (c.started - signalled):+.1f} ms, "
        f"answered {1000 * (c.ended - signalled):+.1f} ms from the signal"
        for c in lost
    )


def test_retrying_clients_do_not_hold_the_exit_once_the_work_is_drained(
    tmp_path: Path, start_server: StartServer
) -> None:
    """Sixteen clients that retry every refusal at once keep calls arriving throughout the
    drain. Refused calls are not work: the process exits as soon as the accepted requests are
    answered, far inside its grace period (it used to wait out all of it), and no call is
    CANCELLED or otherwise lost (1-4 of ~900 were, caught in grpc's transport as it stopped,
    before refusals were held until the listener closed: ServerState.hold_refusal)."""
    mf.write_add_sub_model(tmp_path, "fast", max_batch_size=8)
    server = start_server(tmp_path, "--grace-period-secs", str(GRACE_S))
    stop, progress = threading.Event(), threading.Condition()
    workers = [Worker(server.url, "fast", index, stop, progress, retry=True) for index in range(16)]
    try:
        start_flowing(workers, progress)
        signalled = time.monotonic()
        server.terminate()
        code, waited = wait_for_exit(server, GRACE_S + EXIT_MARGIN_S)
        for worker in workers:
            worker.join(WAIT_S)
    finally:
        stop.set()
    calls = [call for worker in workers for call in worker.calls]
    outcomes = Counter((call.code, call.message[:60]) for call in calls)
    print(f"\nexit {code} after {waited:.2f}s")
    print("\n".join(f"  {count:5d} {outcome}" for outcome, count in sorted(outcomes.items())))
    assert code == 0, f"exit code {code} (None: still running after {waited:.1f}s)"
    # The drain takes well under a second here; half the grace leaves room for a slow machine
    # while failing a server that waits for its clients to stop retrying.
    assert waited < GRACE_S / 2, f"exited {waited:.1f}s after SIGTERM (grace {GRACE_S}s)"
    refusals = [c for c in calls if REFUSALS[0] in c.message]
    assert len(refusals) >= len(workers), "not every client was refused while the server drained"
    # Each client retried its refusal at once and found the listener closed: the refusal went
    # out after the transport had begun to stop, so no retry was caught inside it.
    assert all(
        w.calls[-1].code == "UNAVAILABLE" and REFUSALS[1] in w.calls[-1].message for w in workers
    ), [w.calls[-1] for w in workers]
    assert all(c.ended > signalled for c in refusals)
    lost = [call for call in calls if call.code != "OK" and not refused(call)]
    assert not lost, Counter((c.code, c.message[:70]) for c in lost)
    assert all(call.correct for call in calls)


@pytest.mark.parametrize("how", ["queued", "computing"])
def test_request_stuck_past_the_grace_period_does_not_hold_the_exit(
    tmp_path: Path, start_server: StartServer, how: str
) -> None:
    """One request that will not be done for far longer than --grace-period-secs 1 (waiting
    out a 60 s queue delay, or held inside the model on a gate this test never opens): after
    SIGTERM the process still exits 0 within the grace plus EXIT_MARGIN_S, and the stuck call
    gets an answer (it is not left hanging on a dead connection)."""
    with pm.Gate() as gate:
        if how == "queued":
            fm.write_gather_model(
                tmp_path,
                "stuck",
                config_extra="dynamic_batching { max_queue_delay_microseconds: 60000000 }",
            )
            tensor = triton.InferInput("INDEX", [1, 1], "INT64")
            tensor.set_data_from_numpy(np.array([[1]], dtype=np.int64))
        else:
            pm.write_gated_model(tmp_path, "stuck", gate)
            tensor = triton.InferInput("INPUT0", [1, 1], "FP32")
            tensor.set_data_from_numpy(np.array([[1.0]], dtype=np.float32))
        server = start_server(tmp_path, "--grace-period-secs", str(SHORT_GRACE_S))
        _stuck_call_does_not_hold_the_exit(server, how, tensor, gate)


def _stuck_call_does_not_hold_the_exit(
    server: ServerProcess, how: str, tensor: triton.InferInput, gate: pm.Gate
) -> None:
    outcome: list[str] = []
    answered = threading.Event()

    def stuck_call() -> None:
        with triton.InferenceServerClient(server.url) as client:
            try:
                client.infer("stuck", [tensor], client_timeout=WORKER_LIMIT_S)
                outcome.append("OK")
            except InferenceServerException as error:
                outcome.append(f"{status_name(error)}: {error.message()}")
        answered.set()

    caller = threading.Thread(target=stuck_call, daemon=True)
    caller.start()
    if how == "queued":
        probes.wait_for_gauges(server.metrics_port, lambda s: probes.queued(s, "stuck") >= 1)
    else:
        gate.wait_started()
    assert not answered.is_set(), outcome
    mark = server.log_mark()
    server.terminate()
    server.wait_for_log(SHUTTING_DOWN, start=mark, timeout_s=WAIT_S)
    code, waited = wait_for_exit(server, SHORT_GRACE_S + EXIT_MARGIN_S)
    if code is None:  # record the failure below without waiting out the stuck work
        server.process.kill()
    call_answered = answered.wait(WAIT_S)
    print(f"\n{how}: exit {code} after {waited:.2f}s; stuck call: {outcome}")
    assert code == 0, (
        f"still running {waited:.1f}s after SIGTERM with --grace-period-secs {SHORT_GRACE_S}"
        if code is None
        else f"exit code {code}"
    )
    assert call_answered, "the stuck call got no answer after the server exited"
