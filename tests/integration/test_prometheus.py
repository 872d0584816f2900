"""deploy/prometheus and the Grafana dashboard against a real server scraped by a real
Prometheus: every recording rule and every dashboard query returns data, every rule evaluates
healthy, and the alerts that the traffic calls for go pending (and no other)."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as triton
from tritonclient.utils import InferenceServerException

from tests.integration.conftest import wait_until_ready
from tests.integration.test_drift import send, write_drift_model
from tests.support import prometheus as prom
from tests.support.model_factory import write_corrupt_model
from tests.support.server_process import ServerProcess

DEADLINE_S = 90.0
# Grafana's variables, as "All" models and a rate window of 15 scrapes (1 s apart) expand them.
VARIABLES = {"$model": ".*", "$__rate_interval": "15s"}
# What the traffic below calls for: input drift, and a model that never loads. The invalid
# requests are the caller's errors: they must not burn the error budget.
EXPECTED_ALERTS = {"TensorgateDriftDetected", "TensorgateModelUnavailable"}


def load(server: ServerProcess) -> None:
    """Shifted traffic (drift), a few invalid requests, and HTTP calls."""
    with triton.InferenceServerClient(server.url) as client:
        send(client, mean=2.0, batches=300, seed=3)
        bad = triton.InferInput("features", [1, 3], "FP32")
        bad.set_data_from_numpy(np.zeros((1, 3), np.float32))
        for _ in range(5):
            with pytest.raises(InferenceServerException):
                client.infer("tabular_classifier", [bad])
    body = {
        "inputs": [{"name": "features", "shape": [1, 16], "datatype": "FP32", "data": [0.0] * 16}]
    }
    infer = urllib.request.Request(
        f"http://{server.http_url}/v2/models/tabular_classifier/infer",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    for request in (f"http://{server.http_url}/v2/health/live", infer):
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                assert response.status == 200
        except urllib.error.HTTPError as error:
            pytest.fail(f"{error}: {error.read().decode()}")


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[prom.Prometheus]:
    """A server with a drifting model and a broken one, under load, scraped by Prometheus."""
    prom.tool("prometheus")
    repository: Path = tmp_path_factory.mktemp("models")
    write_drift_model(repository)
    write_corrupt_model(repository, "broken")
    with ServerProcess(repository) as server:
        wait_until_ready(server.url)
        assert server.metrics_port, server.log_text
        started = prom.Prometheus(
            [f"127.0.0.1:{server.metrics_port}"], tmp_path_factory.mktemp("prometheus")
        )
        try:
            # A first scrape before the traffic, so that rate() sees the counters grow.
            prom.poll(
                lambda: started.query(f'up{{job="{prom.JOB}"}} == 1') or None,
                DEADLINE_S,
                "a scrape",
            )
            load(server)
            yield started
        finally:
            started.stop()


def expand(expr: str) -> str:
    for variable, value in VARIABLES.items():
        expr = expr.replace(variable, value)
    assert "$" not in expr, expr
    return expr


def test_every_recording_rule_and_dashboard_query_has_data(prometheus: prom.Prometheus) -> None:
    queries = [rule["record"] for rule in prom.rules("record")]
    queries += [expand(expr) for _, expr in prom.dashboard_queries()]
    empty = prometheus.wait_for_data(queries, DEADLINE_S)
    assert empty == [], f"no data after {DEADLINE_S}s:\n" + "\n".join(empty)
    # The recorded p99 becomes a latency (NaN until rate() sees the traffic in the histograms).
    p99 = "model:tensorgate_request_duration_seconds:p99_rate5m"

    def latency() -> float | None:
        (sample,) = prometheus.query(p99)
        value = float(sample["value"][1])
        return None if np.isnan(value) else value

    assert 0 < prom.poll(latency, DEADLINE_S, f"a number from {p99}") < 10


def test_every_rule_evaluates_healthy(prometheus: prom.Prometheus) -> None:
    def evaluated() -> list[dict[str, str]] | None:
        groups = prometheus.get("/api/v1/rules")["data"]["groups"]
        loaded = [rule for group in groups for rule in group["rules"]]
        return None if any(rule["health"] == "unknown" for rule in loaded) else loaded

    loaded = prom.poll(evaluated, DEADLINE_S, "every rule evaluated")
    names = {rule["name"] for rule in loaded}
    assert names == {
        r.get("record") or r["alert"] for r in [*prom.rules("record"), *prom.rules("alert")]
    }
    unhealthy = [(rule["name"], rule.get("lastError")) for rule in loaded if rule["health"] != "ok"]
    assert unhealthy == []


def test_the_alerts_the_traffic_calls_for_go_pending(prometheus: prom.Prometheus) -> None:
    def active() -> set[str] | None:
        answer = prometheus.get("/api/v1/alerts")
        assert answer["status"] == "success", answer
        names = {alert["labels"]["alertname"] for alert in answer["data"]["alerts"]}
        return names if names >= EXPECTED_ALERTS else None

    assert prom.poll(active, DEADLINE_S, f"{EXPECTED_ALERTS} pending") == EXPECTED_ALERTS
    (unavailable,) = prometheus.query('ALERTS{alertname="TensorgateModelUnavailable"}')
    assert unavailable["metric"]["model"] == "broken"
    assert unavailable["metric"]["alertstate"] == "pending"  # `for: 5m` has not passed
    assert re.fullmatch(r"127\.0\.0\.1:\d+", unavailable["metric"]["instance"])
