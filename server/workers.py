"""`tensorgate serve --workers N`: N server processes sharing one port (SO_REUSEPORT).

The kernel spreads incoming connections over the workers, so the Python front end (one event
loop per process) scales with cores. The parent starts the workers, says it is listening once all
of them are, serves /metrics with every worker's metrics merged under a `worker` label, and on
SIGTERM or SIGINT passes the signal on and waits for each worker's graceful shutdown.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from server.settings import WORKER_INDEX_VARIABLE, ServerSettings

log = logging.getLogger(__name__)

_LISTENING = re.compile(r"listening for gRPC on \S+:(\d+)")
_METRICS = re.compile(r"metrics on http://\S+:(\d+)/metrics")


class Worker:
    """One child server; its output is passed through, and read for its ports."""

    def __init__(self, index: int, argv: Sequence[str]) -> None:
        self.index = index
        self.metrics_port = 0
        self.listening = threading.Event()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "server", *argv],
            env={**os.environ, WORKER_INDEX_VARIABLE: str(index)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        threading.Thread(target=self._relay, daemon=True).start()

    def _relay(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if metrics := _METRICS.search(line):
                self.metrics_port = int(metrics.group(1))
            elif _LISTENING.search(line):
                self.listening.set()
                continue  # the parent announces the shared port once, for all workers
            sys.stderr.write(f"[worker {self.index}] {line}")
        self.listening.set()


class MergedMetrics:
    """A collector that scrapes every worker and labels each sample with its worker."""

    def __init__(self, workers: Sequence[Worker], host: str) -> None:
        self._workers = workers
        self._host = host

    def collect(self) -> Iterator[Metric]:
        merged: dict[str, Metric] = {}
        for worker in self._workers:
            if not worker.metrics_port:
                continue
            url = f"http://{self._host}:{worker.metrics_port}/metrics"
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    text = response.read().decode()
            except OSError:
                continue  # a worker that is stopping: report the others
            for family in text_string_to_metric_families(text):
                target = merged.setdefault(
                    family.name, Metric(family.name, family.documentation, family.type)
                )
                for sample in family.samples:
                    labels = {**sample.labels, "worker": str(worker.index)}
                    target.add_sample(sample.name, labels, sample.value, sample.timestamp)
        yield from merged.values()


def reserve_port(host: str) -> tuple[socket.socket, int]:
    """A free port, held with SO_REUSEPORT so the workers can bind it too."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, 0))
    return sock, sock.getsockname()[1]


def serve_workers(settings: ServerSettings, argv: Sequence[str]) -> int:
    """Run `settings.workers` workers with `argv` (the serve command line); exit code 0 when
    every worker stopped cleanly."""
    host = settings.grpc_host
    held, port = (None, settings.grpc_port)
    if port == 0:
        held, port = reserve_port("127.0.0.1" if host == "0.0.0.0" else host)
    worker_argv = [*argv, "--workers", "1", "--grpc-port", str(port), "--metrics-port", "0"]
    workers = [Worker(index, worker_argv) for index in range(settings.workers)]
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    for worker in workers:
        worker.listening.wait()
    if any(worker.process.poll() is not None for worker in workers):
        log.error("a worker failed to start; stopping the others")
        stop.set()
    else:
        http = None
        if settings.metrics_enabled:
            registry = CollectorRegistry()
            registry.register(MergedMetrics(workers, "127.0.0.1" if host == "0.0.0.0" else host))
            http, _ = start_http_server(settings.metrics_port, addr=host, registry=registry)
            log.info("metrics on http://%s:%d/metrics", host, http.server_port)
        log.info("listening for gRPC on %s:%d (%d workers)", host, port, len(workers))
        while not stop.wait(0.5):
            if all(worker.process.poll() is not None for worker in workers):
                break
        if http is not None:
            http.shutdown()
    for worker in workers:
        if worker.process.poll() is None:
            worker.process.send_signal(signal.SIGTERM)
    codes = [worker.process.wait() for worker in workers]
    if held is not None:
        held.close()
    log.info("all workers stopped (exit codes %s)", codes)
    return 0 if all(code == 0 for code in codes) else 1
