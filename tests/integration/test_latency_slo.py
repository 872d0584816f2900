"""Latency-SLO batching through the real server: no refusals at light load, goodput under
overload near the plain batcher's with server-side p99 under the target, and full recovery once
the overload ends (it used to latch into refusing everything).

The model's cost is a sleep (2 ms a batch + 0.2 ms a row, outside the GIL), so the batches'
compute does not depend on this machine's speed; clients are closed-loop tritonclient threads
that pause 20 ms after a refusal, as a client with backoff does.
"""

from __future__ import annotations

import re
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pytest
import tritonclient.grpc as triton
from tritonclient.utils import InferenceServerException

from tests.support.python_models import write_python_model
from tests.support.server_process import ServerProcess

TARGET_US = 20_000
SOURCE = """
import time


class TensorgateModel:
    def execute(self, inputs):
        x = inputs["X"]
        time.sleep(0.002 + 0.0002 * len(x))
        return {"Y": x * 2}
"""
CONFIG = """backend: "python"
max_batch_size: 32
input [ { name: "X" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "Y" data_type: TYPE_FP32 dims: [ 4 ] } ]
dynamic_batching { max_queue_delay_microseconds: 500 }
"""


@dataclass
class Phase:
    served: int = 0
    refused: int = 0
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def goodput(self) -> float:
        return self.served / self.seconds


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    repo = tmp_path_factory.mktemp("slo")
    write_python_model(repo, "plain", SOURCE, CONFIG)
    target = (
        f'parameters {{ key: "latency_target_p99_us" value: {{ string_value: "{TARGET_US}" }} }}\n'
    )
    write_python_model(repo, "slo", SOURCE, CONFIG + target)
    process = ServerProcess(repo)
    try:
        yield process
    finally:
        process.stop()


def run_clients(url: str, model: str, clients: int, requests_each: int) -> Phase:
    phase = Phase()
    lock = threading.Lock()

    def client() -> None:
        data = np.ones((1, 4), np.float32)
        with triton.InferenceServerClient(url) as own:
            tensor = triton.InferInput("X", [1, 4], "FP32")
            tensor.set_data_from_numpy(data)
            for _ in range(requests_each):
                try:
                    own.infer(model, [tensor])
                except InferenceServerException as error:
                    with lock:
                        if error.status() == "StatusCode.RESOURCE_EXHAUSTED":
                            phase.refused += 1
                        else:
                            phase.errors.append(error.message())
                    time.sleep(0.02)  # the client's backoff after a refusal
                else:
                    with lock:
                        phase.served += 1

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    phase.seconds = time.monotonic() - started
    return phase


def served_p99_bucket_s(server: ServerProcess, model: str) -> float:
    """The upper bound of the histogram bucket holding the 99th percentile of the model's
    server-side request durations (receipt to answer)."""
    url = f"http://127.0.0.1:{server.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    buckets = [
        (float(bound), float(count))
        for bound, count in re.findall(
            rf'tensorgate_request_duration_seconds_bucket\{{[^}}]*le="([^"]+)"[^}}]*model="{model}"'
            r"[^}]*\} ([0-9.e+]+)",
            text,
        )
        + re.findall(
            rf'tensorgate_request_duration_seconds_bucket\{{[^}}]*model="{model}"[^}}]*le="([^"]+)"'
            r"[^}]*\} ([0-9.e+]+)",
            text,
        )
        if bound != "+Inf"
    ]
    assert buckets, "no request duration histogram for the model"
    total = max(count for _, count in buckets)
    return min(bound for bound, count in buckets if count >= 0.99 * total)


def test_light_load_overload_and_recovery(server: ServerProcess) -> None:
    light = run_clients(server.url, "slo", clients=4, requests_each=40)
    assert (light.refused, light.errors) == (0, [])

    plain = run_clients(server.url, "plain", clients=48, requests_each=20)
    overload = run_clients(server.url, "slo", clients=48, requests_each=20)
    assert plain.errors == [] and overload.errors == []
    assert overload.served > 0
    assert overload.goodput >= 0.7 * plain.goodput, (overload, plain)
    assert served_p99_bucket_s(server, "slo") <= TARGET_US / 1e6

    recovered = run_clients(server.url, "slo", clients=4, requests_each=40)
    assert (recovered.refused, recovered.errors) == (0, [])
