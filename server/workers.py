"""`tensorgate serve --workers N`: N server processes sharing one port, supervised.

The kernel spreads incoming connections over the workers (SO_REUSEPORT), so the Python front end
scales with cores. The parent:

- starts the workers; each reports its readiness (and its port) on a pipe of its own, not in a
  log line (TENSORGATE_READY_FD);
- serves /metrics: the workers write theirs to prometheus_client's multiprocess directory
  (PROMETHEUS_MULTIPROC_DIR, one per parent), labelled with their worker number, and the parent
  reads the directory at each scrape; its own metrics count worker restarts;
- supervises: a worker that dies is logged with its exit status or signal and restarted, after
  a back-off that doubles with each death in a row; beyond RESTARTS_PER_MINUTE deaths in a
  minute the parent stops the others and exits 1, so that Kubernetes restarts the pod;
- on SIGTERM or SIGINT passes the signal on and waits for each worker's graceful shutdown.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CollectorRegistry,
    Counter,
    ProcessCollector,
    multiprocess,
    start_http_server,
)

from server.settings import READY_FD_VARIABLE, WORKER_INDEX_VARIABLE, ServerSettings

log = logging.getLogger(__name__)

RESTARTS_PER_MINUTE = 5
FIRST_BACKOFF_S = 0.5
LONGEST_BACKOFF_S = 8.0
START_TIMEOUT_S = 300.0  # loading large models takes a while


class Worker:
    """One child server. Its output is passed through with a `[worker i]` prefix."""

    def __init__(self, index: int, argv: Sequence[str], metrics_dir: Path) -> None:
        self.index = index
        self.ready = threading.Event()
        self.port = 0
        read_end, write_end = os.pipe()
        env = {
            **os.environ,
            WORKER_INDEX_VARIABLE: str(index),
            READY_FD_VARIABLE: str(write_end),
            "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        }
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "server", *argv],
                env=env,
                pass_fds=(write_end,),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        finally:
            os.close(write_end)  # the child holds its own copy: EOF when it exits
        threading.Thread(target=self._await_ready, args=(read_end,), daemon=True).start()
        threading.Thread(target=self._relay, daemon=True).start()

    def _await_ready(self, read_end: int) -> None:
        with os.fdopen(read_end, encoding="utf-8") as pipe:
            line = pipe.readline()
        if line:
            self.port = int(json.loads(line)["port"])
        self.ready.set()  # ready, or exited before it was (then `port` stays 0)

    def _relay(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            sys.stderr.write(f"[worker {self.index}] {line}")

    @property
    def exit_code(self) -> int | None:
        return self.process.poll()


def describe_exit(code: int) -> str:
    if code < 0:
        return f"killed by signal {signal.Signals(-code).name}"
    return f"exited with status {code}"


def reserve_port(host: str) -> tuple[socket.socket, int]:
    """A free port, held with SO_REUSEPORT so the workers can bind it too."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, 0))
    return sock, sock.getsockname()[1]


class Supervisor:
    def __init__(self, settings: ServerSettings, argv: Sequence[str]) -> None:
        self.settings = settings
        self._host = settings.grpc_host
        self._held: socket.socket | None = None
        port = settings.grpc_port
        if port == 0:
            self._held, port = reserve_port("127.0.0.1" if self._host == "0.0.0.0" else self._host)
        self.port = port
        self._argv = [*argv, "--workers", "1", "--grpc-port", str(port)]
        self._held_http: socket.socket | None = None
        self.http_port = settings.http_port  # -1: HTTP off
        if settings.http_port == 0:  # one port for every worker, as for gRPC
            self._held_http, self.http_port = reserve_port(
                "127.0.0.1" if self._host == "0.0.0.0" else (settings.http_host or self._host)
            )
            self._argv += ["--http-port", str(self.http_port)]
        self._metrics_dir = Path(tempfile.mkdtemp(prefix="tensorgate-metrics-"))
        self._deaths: deque[float] = deque()  # monotonic times of deaths in the last minute
        self._stop = threading.Event()
        self._restarts: Counter | None = None
        self.workers = [Worker(i, self._argv, self._metrics_dir) for i in range(settings.workers)]

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self._stop.set())
        try:
            if not self._all_ready():
                log.error("a worker failed to start; stopping the others")
                return self._shutdown(1)
            http = self._serve_metrics() if self.settings.metrics_enabled else None
            if self.http_port >= 0:
                log.info(
                    "listening for HTTP on %s:%d (%d workers)",
                    self.settings.http_host or self._host,
                    self.http_port,
                    len(self.workers),
                )
            log.info(
                "listening for gRPC on %s:%d (%d workers)", self._host, self.port, len(self.workers)
            )
            code = self._supervise()
            if http is not None:
                http.shutdown()
            return self._shutdown(code)
        finally:
            for held in (self._held, self._held_http):
                if held is not None:
                    held.close()
            shutil.rmtree(self._metrics_dir, ignore_errors=True)

    def _all_ready(self) -> bool:
        deadline = time.monotonic() + START_TIMEOUT_S
        for worker in self.workers:
            if not worker.ready.wait(max(0.0, deadline - time.monotonic())) or not worker.port:
                return False
        return True

    def _supervise(self) -> int:
        """Restart workers that die until asked to stop; 1 when they die too often."""
        backoff_s = FIRST_BACKOFF_S
        while not self._stop.wait(0.2):
            for position, worker in enumerate(self.workers):
                code = worker.exit_code
                if code is None:
                    continue
                now = time.monotonic()
                self._deaths.append(now)
                while self._deaths and self._deaths[0] < now - 60:
                    self._deaths.popleft()
                log.error("worker %d %s", worker.index, describe_exit(code))
                self._mark_dead(worker)
                if len(self._deaths) > RESTARTS_PER_MINUTE:
                    log.error(
                        "workers died %d times within a minute (limit %d); stopping",
                        len(self._deaths),
                        RESTARTS_PER_MINUTE,
                    )
                    return 1
                if self._stop.wait(backoff_s):
                    return 0
                backoff_s = min(2 * backoff_s, LONGEST_BACKOFF_S)
                self.workers[position] = self._restart(worker.index)
            if not self._deaths or self._deaths[-1] < time.monotonic() - 60:
                backoff_s = FIRST_BACKOFF_S  # a quiet minute: the next death starts over
        return 0

    def _restart(self, index: int) -> Worker:
        worker = Worker(index, self._argv, self._metrics_dir)
        if self._restarts is not None:
            self._restarts.inc()
        if worker.ready.wait(START_TIMEOUT_S) and worker.port:
            log.info("worker %d restarted", index)
        return worker

    def _mark_dead(self, worker: Worker) -> None:
        """Its live gauges (queue depths, states) stop counting."""
        # prometheus_client leaves mark_process_dead unannotated.
        multiprocess.mark_process_dead(worker.process.pid, str(self._metrics_dir))  # type: ignore[no-untyped-call]

    def _serve_metrics(self) -> WSGIServer:
        registry = CollectorRegistry()
        # prometheus_client leaves MultiProcessCollector.__init__ unannotated.
        multiprocess.MultiProcessCollector(registry, path=str(self._metrics_dir))  # type: ignore[no-untyped-call]
        ProcessCollector(registry=registry)
        self._restarts = Counter(
            "tensorgate_worker_restarts",
            "Worker processes restarted after they died",
            registry=registry,
        )
        http, _ = start_http_server(self.settings.metrics_port, addr=self._host, registry=registry)
        log.info("metrics on http://%s:%d/metrics", self._host, http.server_port)
        return http

    def _shutdown(self, code: int) -> int:
        for worker in self.workers:
            if worker.exit_code is None:
                worker.process.send_signal(signal.SIGTERM)
        codes = [worker.process.wait() for worker in self.workers]
        log.info("all workers stopped (exit codes %s)", codes)
        return code if code else (0 if all(c == 0 for c in codes) else 1)


def serve_workers(settings: ServerSettings, argv: Sequence[str]) -> int:
    """Run `settings.workers` supervised workers with `argv` (the serve command line); the
    exit code is 0 when every worker stopped cleanly on request."""
    return Supervisor(settings, argv).run()
