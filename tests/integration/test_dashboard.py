"""The Grafana dashboard imports as it is and queries only metrics the server exports."""

from __future__ import annotations

import json
import re
import urllib.request

import numpy as np
import tritonclient.grpc as triton

from tests.support.prometheus import DASHBOARD, dashboard_queries


def test_dashboard_is_importable_json_with_a_datasource_input() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["__inputs"][0]["pluginId"] == "prometheus"
    assert dashboard["panels"]
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        if panel["type"] == "row":  # a heading: no query of its own
            assert "targets" not in panel, panel["title"]
            continue
        assert panel["targets"], panel["title"]
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}"


def test_every_metric_the_dashboard_queries_is_exported(bundled_server) -> None:
    with triton.InferenceServerClient(bundled_server.url) as client:
        features = triton.InferInput("features", [1, 16], "FP32")
        features.set_data_from_numpy(np.zeros((1, 16), np.float32))
        client.infer("tabular_classifier", [features])
    # One HTTP call too, so the HTTP request counter has a sample to export.
    ready = f"http://{bundled_server.http_url}/v2/health/ready"
    with urllib.request.urlopen(ready, timeout=10) as response:
        assert response.status == 200
    url = f"http://127.0.0.1:{bundled_server.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        exported = response.read().decode()
    # Recorded series (model:tensorgate_...:rate5m) are Prometheus' own: not looked for here
    # (tests/deploy/test_prometheus_rules.py checks the rules record them).
    queried = {
        name
        for _, expr in dashboard_queries()
        for name in re.findall(r"(?<![\w:])((?:tensorgate|process)_[a-z_]+)", expr)
    }
    # Drift gauges appear only for models with drift on; their names are checked in test_drift.
    missing = sorted(
        name for name in queried if f"\n{name}" not in exported and "drift" not in name
    )
    assert not missing, f"dashboard queries metrics the server does not export: {missing}"
    assert len(queried) >= 10
