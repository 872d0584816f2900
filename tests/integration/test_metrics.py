"""Prometheus metrics scraped from the real server after known traffic: exact counts."""

from __future__ import annotations

import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as triton
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.utils import InferenceServerException

from tests.support.model_factory import write_add_sub_model

QUEUE_POLICY = """
dynamic_batching {
  max_queue_delay_microseconds: 60000000
  default_queue_policy { max_queue_size: 1 default_timeout_microseconds: 300000 }
}
"""


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def add_sub_inputs(rows: int, columns: int = 16) -> list[triton.InferInput]:
    tensors = []
    for name in ("INPUT0", "INPUT1"):
        tensor = triton.InferInput(name, [rows, columns], "FP32")
        tensor.set_data_from_numpy(np.ones((rows, columns), np.float32))
        tensors.append(tensor)
    return tensors


@pytest.fixture(scope="module")
def metrics_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("metrics_repo")
    write_add_sub_model(repo, "m", max_batch_size=8, config_extra="dynamic_batching { }")
    write_add_sub_model(repo, "q", max_batch_size=8, config_extra=QUEUE_POLICY)
    return repo


def test_counts_and_histograms_match_the_traffic_sent(start_server, metrics_repo: Path) -> None:
    server = start_server(metrics_repo)
    assert server.metrics_port
    with triton.InferenceServerClient(server.url) as client:
        for rows in (1, 2, 3, 1, 1):
            client.infer("m", add_sub_inputs(rows))
        for _ in range(2):
            with pytest.raises(InferenceServerException, match="INVALID_ARGUMENT"):
                client.infer("m", add_sub_inputs(1, columns=15))

        def queued_request(_: int) -> str:
            try:
                client.infer("q", add_sub_inputs(1))
            except InferenceServerException as error:
                return error.status()
            return "OK"

        # One request waits in q's queue (size 1) until its 300 ms queue timeout; the other
        # finds the queue full. Which is which depends on arrival order, not on timing.
        with ThreadPoolExecutor(2) as pool:
            codes = sorted(pool.map(queued_request, range(2)))
        assert codes == ["StatusCode.DEADLINE_EXCEEDED", "StatusCode.RESOURCE_EXHAUSTED"]
        stats = client.get_inference_statistics("m", as_json=True)["model_stats"][0]

    samples = scrape(server.metrics_port)
    m = {"model": "m", "version": "1"}
    q = {"model": "q", "version": "1"}
    assert value(samples, "tensorgate_requests_total", **m, outcome="success") == 5
    assert value(samples, "tensorgate_requests_total", **m, outcome="invalid_input") == 2
    assert value(samples, "tensorgate_requests_total", **m, outcome="internal") == 0
    assert value(samples, "tensorgate_requests_total", **q, outcome="queue_full") == 1
    assert value(samples, "tensorgate_requests_total", **q, outcome="timeout") == 1
    assert value(samples, "tensorgate_request_duration_seconds_count", **m) == 7
    assert value(samples, "tensorgate_inferences_total", **m) == 8
    executions = int(stats["execution_count"])
    assert value(samples, "tensorgate_executions_total", **m) == executions
    assert value(samples, "tensorgate_batch_size_count", **m) == executions
    assert value(samples, "tensorgate_batch_size_sum", **m) == 8
    assert value(samples, "tensorgate_compute_duration_seconds_count", **m) == executions
    assert value(samples, "tensorgate_queue_duration_seconds_count", **m) == 5
    assert value(samples, "tensorgate_queue_duration_seconds_count", **q) == 0

    calls = {"method": "ModelInfer"}
    assert value(samples, "tensorgate_grpc_calls_total", **calls, code="OK") == 5
    assert value(samples, "tensorgate_grpc_calls_total", **calls, code="INVALID_ARGUMENT") == 2
    assert value(samples, "tensorgate_grpc_calls_total", **calls, code="RESOURCE_EXHAUSTED") == 1
    assert value(samples, "tensorgate_grpc_calls_total", **calls, code="DEADLINE_EXCEEDED") == 1

    assert value(samples, "tensorgate_model_state", **m, state="READY") == 1
    assert value(samples, "tensorgate_model_state", **m, state="UNAVAILABLE") == 0
    assert value(samples, "tensorgate_queue_depth", **q, priority="1") == 0
    assert value(samples, "tensorgate_requests_in_flight", **m) == 0
    assert value(samples, "tensorgate_model_load_duration_seconds", **m) > 0
    assert value(samples, "process_resident_memory_bytes") > 0
    assert value(samples, "process_open_fds") > 0


def test_metrics_can_be_turned_off(start_server, metrics_repo: Path) -> None:
    server = start_server(metrics_repo, "--metrics", "false")
    assert server.metrics_port == 0
    assert not server.log_matches("metrics on http")


def test_a_metrics_port_in_use_is_a_clear_start_up_error() -> None:
    import socket
    import subprocess
    import sys

    from tests.support.server_process import REPO_ROOT

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "server",
                "serve",
                "--grpc-host",
                "127.0.0.1",
                "--grpc-port",
                "0",
                "--metrics-port",
                str(port),
            ],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 2
    assert f"cannot serve metrics on 127.0.0.1:{port}" in result.stderr
    assert "--metrics false" in result.stderr
    assert "Traceback" not in result.stderr
