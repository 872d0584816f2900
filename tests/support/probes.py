"""Looking at a running server from outside: its Prometheus gauges, its /proc status, its health.

Nothing here imports the server. Waiting on a gauge re-scrapes until the server itself reports
the state asked for (each scrape is a real answer from the server, not a guess at timing), up to
a timeout.
"""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(port: int, timeout_s: float = 10.0) -> Samples:
    """Every sample of the server's /metrics, keyed by (name, sorted labels)."""
    url = f"http://127.0.0.1:{port}/metrics"
    with urllib.request.urlopen(url, timeout=timeout_s) as response:
        text = response.read().decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def gauge_sum(samples: Samples, name: str, **labels: str) -> float:
    """The sum of `name` over every sample whose labels include `labels` (e.g. all priorities)."""
    wanted = set(labels.items())
    return sum(
        value
        for (sample_name, sample_labels), value in samples.items()
        if sample_name == name and wanted <= set(sample_labels)
    )


def wait_for_gauges(
    port: int, condition: Callable[[Samples], bool], timeout_s: float = 20.0
) -> Samples:
    """Scrape until `condition` holds for a scrape; that scrape, or TimeoutError."""
    deadline = time.monotonic() + timeout_s
    while True:
        samples = scrape(port)
        if condition(samples):
            return samples
        if time.monotonic() > deadline:
            raise TimeoutError(f"metrics condition not reached in {timeout_s}s")


def queued(samples: Samples, model: str) -> float:
    return gauge_sum(samples, "tensorgate_queue_depth", model=model)


def in_flight(samples: Samples, model: str) -> float:
    return gauge_sum(samples, "tensorgate_requests_in_flight", model=model)


def proc_status(pid: int) -> dict[str, str]:
    """/proc/<pid>/status as a dict (VmRSS, VmHWM, Threads, ...)."""
    text = Path(f"/proc/{pid}/status").read_text()
    return {key: value.strip() for key, value in (line.split(":", 1) for line in text.splitlines())}


def rss_mib(pid: int) -> float:
    return int(proc_status(pid)["VmRSS"].split()[0]) / 1024


def health_status(channel: grpc.Channel, service: str = "", timeout_s: float = 10.0) -> str:
    """SERVING / NOT_SERVING / ... from grpc.health.v1 Check (raises grpc.RpcError)."""
    stub = health_pb2_grpc.HealthStub(channel)
    response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout_s)
    return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
