"""`--workers N`: processes share the port; metrics are merged; a dead worker is restarted;
SIGTERM stops them all."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import tritonclient.grpc as triton
from tritonclient.utils import InferenceServerException

from server.workers import RESTARTS_PER_MINUTE
from tests.integration.test_metrics import scrape
from tests.support.server_process import ServerProcess

REQUESTS_PER_CLIENT = 10
CLIENTS = 16  # all 16 connections landing on one worker: a 1 in 30,000 chance
# A channel of its own subchannel pool opens its own connection. Without it, a new channel to the
# same address may pick up the connection a just-closed one left in gRPC's global pool, and the
# "16 connections" were sometimes one (2 runs in 14 saw every request on one worker).
OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]
LOAD_LIMIT_S = 120  # a client loop stops by itself after this, whatever happens
RETRY_PAUSE_S = 0.05


def test_workers_share_the_port_and_their_metrics_are_merged() -> None:
    with ServerProcess(None, ["--workers", "2"]) as server:
        features = triton.InferInput("features", [1, 16], "FP32")
        features.set_data_from_numpy(np.zeros((1, 16), np.float32))
        for _ in range(CLIENTS):  # one connection each: the kernel spreads them over workers
            with triton.InferenceServerClient(server.url, channel_args=OWN_CONNECTION) as client:
                for _ in range(REQUESTS_PER_CLIENT):
                    client.infer("tabular_classifier", [features])

        samples = scrape(server.metrics_port)
        served = {
            dict(labels)["worker"]: count
            for (name, labels), count in samples.items()
            if name == "tensorgate_requests_total"
            and dict(labels)["model"] == "tabular_classifier"
            and dict(labels)["outcome"] == "success"
        }
        assert sorted(served) == ["0", "1"]
        assert all(count > 0 for count in served.values()), served
        assert sum(served.values()) == CLIENTS * REQUESTS_PER_CLIENT
        assert server.log_matches(r"\(2 workers\)")
        assert server.stop() == 0
        assert len(server.log_matches(r"\[worker \d\] .*stopped")) == 2


def worker_pids(parent: int) -> list[int]:
    """The parent's child processes (the workers), from /proc."""
    children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    return sorted(int(pid) for pid in children)


def test_a_killed_worker_is_logged_and_restarted_while_the_other_serves_on() -> None:
    """kill -9 of one worker under load: the parent names the death, restarts the worker and
    counts it; clients on the dead worker's connections fail once (their calls in flight) and
    reconnect; every call after that succeeds, on both workers again."""
    with ServerProcess(None, ["--workers", "2"]) as server:
        features = triton.InferInput("features", [1, 16], "FP32")
        features.set_data_from_numpy(np.zeros((1, 16), np.float32))
        stop = threading.Event()
        outcomes: list[tuple[float, str, str]] = []
        lock = threading.Lock()

        def client_loop(name: str) -> None:
            with triton.InferenceServerClient(server.url, channel_args=OWN_CONNECTION) as client:
                deadline = time.monotonic() + LOAD_LIMIT_S
                while not stop.is_set() and time.monotonic() < deadline:
                    try:
                        client.infer("tabular_classifier", [features], client_timeout=30)
                        outcome = "OK"
                    except InferenceServerException as error:
                        outcome = error.status() or "UNKNOWN"
                    with lock:
                        outcomes.append((time.monotonic(), name, outcome))
                    if outcome != "OK":
                        stop.wait(RETRY_PAUSE_S)  # a client backs off before it retries

        clients = [
            threading.Thread(target=client_loop, args=(f"client-{i}",), daemon=True)
            for i in range(CLIENTS)
        ]
        for client in clients:
            client.start()
        victim, survivor = worker_pids(server.process.pid)
        mark = server.log_mark()
        os.kill(victim, signal.SIGKILL)
        killed = time.monotonic()
        server.wait_for_log(r"worker \d killed by signal SIGKILL", start=mark, timeout_s=30)
        server.wait_for_log(r"worker \d restarted", start=mark, timeout_s=120)
        restarted = time.monotonic()
        with lock:
            before_restart = len(outcomes)
        # Fresh connections land on both workers again: wait for calls after the restart.
        with triton.InferenceServerClient(server.url, channel_args=OWN_CONNECTION) as client:
            for _ in range(CLIENTS * REQUESTS_PER_CLIENT):
                client.infer("tabular_classifier", [features])
        stop.set()
        for client in clients:
            client.join(30)
        samples = scrape(server.metrics_port)
        assert samples[("tensorgate_worker_restarts_total", ())] == 1
        pids = worker_pids(server.process.pid)
        assert survivor in pids and victim not in pids and len(pids) == 2

    failures = [(at, name, outcome) for at, name, outcome in outcomes if outcome != "OK"]
    failed_clients = {name for _, name, _ in failures}
    last_s = max((at for at, _, _ in failures), default=killed) - killed
    print(
        f"\n{len(outcomes)} calls ({before_restart} before the restart), {len(failures)} failed "
        f"on {len(failed_clients)} clients, the last {last_s:.2f}s after the kill"
    )
    # Only the clients whose connection went to the dead worker failed, with UNAVAILABLE, while
    # they reconnected to the other one; none failed once the worker was back.
    assert len(failed_clients) < CLIENTS, failures
    assert all(killed <= at <= restarted for at, _, _ in failures), failures
    assert all(outcome == "StatusCode.UNAVAILABLE" for _, _, outcome in failures), failures


def test_workers_that_keep_dying_make_the_parent_exit_non_zero() -> None:
    """Past RESTARTS_PER_MINUTE deaths in a minute the parent gives up: it stops the other
    worker and exits 1, so that Kubernetes restarts the whole pod."""
    with ServerProcess(None, ["--workers", "2"]) as server:
        for death in range(RESTARTS_PER_MINUTE + 1):
            mark = server.log_mark()
            victim = worker_pids(server.process.pid)[0]
            os.kill(victim, signal.SIGKILL)
            server.wait_for_log(r"killed by signal SIGKILL", start=mark, timeout_s=60)
            if death < RESTARTS_PER_MINUTE:
                server.wait_for_log(r"worker \d restarted", start=mark, timeout_s=120)
        assert server.process.wait(60) == 1
        assert server.log_matches(r"workers died 6 times within a minute \(limit 5\); stopping")
