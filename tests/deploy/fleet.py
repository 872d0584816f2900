"""A fleet of tensorgate replicas on loopback, a load that keeps calling them, and a TCP
balancer that stands in for a Kubernetes ClusterIP Service.

Replicas listen on distinct loopback addresses (127.0.0.2, .3, .4: Linux routes all of
127.0.0.0/8 to lo) and one port, as pods of a Deployment share a containerPort. Nothing here
sleeps to wait: replicas are up when they log their listening line and channel_ready() answers;
the load's progress is a condition variable; the balancer counts connections as they come.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from server._proto import grpc_service_pb2_grpc as pb_grpc
from tests.deploy.client import infer_request, success_count, wait_ready
from tests.support import server_process

HOSTS = ("127.0.0.2", "127.0.0.3", "127.0.0.4")


class ServerProcess(server_process.ServerProcess):
    """tests/support's server process, and a way to wait for a line in its log."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        self._output = threading.Condition()
        super().__init__(*args, **kwargs)

    def _read_output(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._output:
                self.log_lines.append(line)
                self._output.notify_all()
            match = server_process._LISTENING.search(line)
            if match and not self._listening.is_set():
                self.port = int(match.group(2))
                self._listening.set()
        self._listening.set()  # the process ended: wake a waiting constructor
        with self._output:
            self._output.notify_all()

    def wait_for_log(self, text: str, timeout_s: float) -> None:
        with self._output:
            found = self._output.wait_for(lambda: text in self.log_text, timeout_s)
        assert found, f"{text!r} not logged within {timeout_s}s:\n{self.log_text}"


def free_port(hosts: Sequence[str] = HOSTS) -> int:
    """A port free on every one of `hosts` right now (the kernel's pick on the first)."""
    for _ in range(20):
        with socket.socket() as probe:
            probe.bind((hosts[0], 0))
            port = probe.getsockname()[1]
        try:
            for host in hosts[1:]:
                with socket.socket() as other:
                    other.bind((host, port))
        except OSError:
            continue
        return port
    raise RuntimeError(f"no port free on all of {hosts}")


class Replica:
    """One `tensorgate serve` process on host:port; restartable on the same address."""

    def __init__(
        self,
        host: str,
        port: int,
        extra_args: Sequence[str] = (),
        model_repository: Path | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.extra_args = list(extra_args)
        self.model_repository = model_repository
        self.process: ServerProcess | None = None
        self.generations = 0

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> Replica:
        assert self.process is None or self.process.process.poll() is not None
        args = ["--grpc-host", self.host, "--grpc-port", str(self.port), *self.extra_args]
        self.process = ServerProcess(self.model_repository, args)
        assert self.process.port == self.port, self.process.log_text
        wait_ready(self.address)
        self.generations += 1
        return self

    def terminate(self) -> None:
        """SIGTERM, as the kubelet sends it."""
        assert self.process is not None
        self.process.terminate()

    def wait_exit(self, timeout_s: float) -> int:
        assert self.process is not None
        return self.process.process.wait(timeout_s)

    @property
    def log_text(self) -> str:
        return self.process.log_text if self.process else ""

    def success_count(self) -> int:
        return success_count(self.address)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()


def start_fleet(extra_args: Sequence[str] = (), hosts: Sequence[str] = HOSTS) -> list[Replica]:
    port = free_port(hosts)
    replicas = [Replica(host, port, extra_args) for host in hosts]
    with ThreadPoolExecutor(len(replicas)) as pool:
        list(pool.map(Replica.start, replicas))
    return replicas


def stop_fleet(replicas: Sequence[Replica]) -> None:
    with ThreadPoolExecutor(len(replicas)) as pool:
        list(pool.map(Replica.stop, replicas))


def counts(replicas: Sequence[Replica]) -> list[int]:
    with ThreadPoolExecutor(len(replicas)) as pool:
        return list(pool.map(Replica.success_count, replicas))


@dataclass
class Failure:
    code: str
    details: str
    at_s: float


@dataclass
class Load:
    """`workers` threads calling ModelInfer on one channel back to back until stopped."""

    channel: grpc.Channel
    workers: int = 6
    call_timeout_s: float = 20.0
    successes: int = 0
    failures: list[Failure] = field(default_factory=list)
    _condition: threading.Condition = field(default_factory=threading.Condition)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    started_s: float = 0.0

    def __enter__(self) -> Load:
        self.started_s = time.monotonic()
        for n in range(self.workers):
            thread = threading.Thread(target=self._work, args=(n,), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(self.call_timeout_s + 5)
            assert not thread.is_alive(), "a load worker did not stop"
        self._threads.clear()

    def _work(self, seed: int) -> None:
        stub = pb_grpc.GRPCInferenceServiceStub(self.channel)
        request = infer_request(seed=seed)
        while not self._stop.is_set():
            try:
                stub.ModelInfer(request, timeout=self.call_timeout_s)
            except grpc.RpcError as error:
                failure = Failure(
                    error.code().name, error.details() or "", time.monotonic() - self.started_s
                )
                with self._condition:
                    self.failures.append(failure)
                    self._condition.notify_all()
            else:
                with self._condition:
                    self.successes += 1
                    self._condition.notify_all()

    def wait_for_successes(self, target: int, timeout_s: float) -> None:
        """Until `target` calls in all have succeeded; fails after timeout_s."""
        with self._condition:
            done = self._condition.wait_for(lambda: self.successes >= target, timeout_s)
        assert done, f"{self.successes} successes, wanted {target} within {timeout_s}s"

    def run_until(self, condition: Callable[[], bool], timeout_s: float, every: int = 25) -> None:
        """Check `condition` after every `every` successful calls until it holds; fails after
        timeout_s. The load paces the checks: no sleeping."""
        deadline = time.monotonic() + timeout_s
        while not condition():
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"condition not met within {timeout_s}s"
            self.wait_for_successes(self.successes + every, remaining)


class TcpBalancer:
    """One address in front of the replicas that sends each new TCP connection to the next one,
    as kube-proxy does for a ClusterIP Service: it balances connections, not calls."""

    def __init__(self, backends: Sequence[tuple[str, int]]) -> None:
        self._backends = itertools.cycle(list(backends))
        self.connections: Counter[tuple[str, int]] = Counter()
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> TcpBalancer:
        self._thread.start()
        assert self._ready.wait(10), "balancer did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._shutdown)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._connect, "127.0.0.1", 0)
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        self._loop.run_until_complete(asyncio.gather(*self._tasks, return_exceptions=True))
        self._loop.close()

    def _shutdown(self) -> None:
        self._loop.stop()

    async def _connect(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter):
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        backend = next(self._backends)
        self.connections[backend] += 1
        writers = [client_w]
        try:
            backend_r, backend_w = await asyncio.open_connection(*backend)
            writers.append(backend_w)
            await asyncio.gather(_pipe(client_r, backend_w), _pipe(backend_r, client_w))
        except (OSError, asyncio.CancelledError):
            pass  # the backend is gone, or the balancer is closing: the connection ends
        finally:
            for writer in writers:
                writer.close()
            self._tasks.discard(task)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, asyncio.CancelledError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    # One side closed: close the other, so the peer sees the connection end at once.
    writer.close()
