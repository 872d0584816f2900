"""Drift end to end: `tensorgate profile` writes the reference, the server scores live traffic."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import tritonclient.grpc as triton

from tests.integration.test_metrics import scrape, value
from tests.support.server_process import REPO_ROOT

DRIFT_CONFIG = """max_batch_size: 32
dynamic_batching { }
parameters { key: "drift_sample_ratio" value: { string_value: "1" } }
parameters { key: "drift_window_rows" value: { string_value: "200" } }
"""


def profile(*args: str) -> subprocess.CompletedProcess[str]:
    """Run `tensorgate profile --model tabular_classifier ARGS` as a user would."""
    command = [sys.executable, "-m", "server", "profile", "--model", "tabular_classifier"]
    return subprocess.run(
        [*command, *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )


def send(client: triton.InferenceServerClient, mean: float, batches: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(batches):
        features = triton.InferInput("features", [20, 16], "FP32")
        features.set_data_from_numpy(rng.normal(mean, 1.0, size=(20, 16)).astype(np.float32))
        client.infer("tabular_classifier", [features])


def write_drift_model(repository: Path) -> None:
    """The bundled tabular_classifier with drift on, profiled by `tensorgate profile` on a
    standard normal sample (a 200-row window: 10 requests of 20 rows fill it)."""
    model_dir = repository / "tabular_classifier"
    shutil.copytree(REPO_ROOT / "server/example_models/tabular_classifier", model_dir)
    (model_dir / "config.pbtxt").write_text(DRIFT_CONFIG)
    sample = repository / "sample.npy"
    np.save(sample, np.random.default_rng(1).normal(0, 1, size=(2000, 16)).astype(np.float32))

    profiled = profile("--model-repository", str(repository), "--input", str(sample))
    assert profiled.returncode == 0, profiled.stderr
    assert "profiled 20 features over 2000 rows" in profiled.stdout  # 16 inputs, 3 probs, label
    assert (model_dir / "drift_profile.json").is_file()


def test_shifted_traffic_raises_drift_and_unshifted_traffic_does_not(
    tmp_path: Path, start_server
) -> None:
    write_drift_model(tmp_path)
    server = start_server(tmp_path)
    labels = {"model": "tabular_classifier", "version": "1"}
    with triton.InferenceServerClient(server.url) as client:
        send(client, mean=0.0, batches=10, seed=2)
        calm = scrape(server.metrics_port)
        send(client, mean=2.0, batches=10, seed=3)
        drifted = scrape(server.metrics_port)

    assert value(calm, "tensorgate_drift_window_rows", **labels) == 200
    assert value(calm, "tensorgate_drift_alert", **labels) == 0
    calm_psi = value(calm, "tensorgate_drift_psi", **labels, feature="features[0]")
    assert calm_psi < 0.1
    assert value(drifted, "tensorgate_drift_alert", **labels) == 1
    drifted_psi = value(drifted, "tensorgate_drift_psi", **labels, feature="features[0]")
    assert drifted_psi > 0.25
    assert value(drifted, "tensorgate_drift_ks", **labels, feature="features[0]") > 0.3
    # The predictions moved too: concept drift visible without labels.
    assert value(drifted, "tensorgate_drift_psi", **labels, feature="probabilities[0]") > calm_psi


def test_profile_command_reports_a_bad_sample_file_clearly(tmp_path: Path) -> None:
    bad = tmp_path / "sample.csv"
    bad.write_text("1,2,3\n")
    result = profile("--input", str(bad))
    assert result.returncode == 2
    assert result.stderr.startswith("tensorgate profile: sample.csv: no columns for input")
    assert "Traceback" not in result.stderr
