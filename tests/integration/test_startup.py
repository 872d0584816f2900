"""What a user meets when a server starts: a used port, a broken newest version, ignored options."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import tritonclient.grpc as triton

from tests.support import model_factory as mf
from tests.support.server_process import REPO_ROOT, ServerProcess

START_TIMEOUT_S = 120


def test_a_second_server_on_a_used_port_exits_2_and_the_first_keeps_every_call(
    tmp_path: Path,
) -> None:
    """gRPC sets SO_REUSEPORT by default: without refusing it, the second server bound the same
    port and took part of the calls."""
    first_repo, second_repo = tmp_path / "a", tmp_path / "b"
    mf.write_add_sub_model(first_repo, "first", offset=1.0)
    mf.write_add_sub_model(second_repo, "second")
    with ServerProcess(first_repo) as first:
        command = [sys.executable, "-m", "server", "serve", "--grpc-host", "127.0.0.1"]
        command += ["--grpc-port", str(first.port), "--metrics-port", "0", "--http-port", "0"]
        command += ["--model-repository", str(second_repo)]
        second = subprocess.run(
            command,
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT_S,
        )
        assert second.returncode == 2, second.stdout + second.stderr
        output = second.stdout + second.stderr
        assert f"cannot listen for gRPC on 127.0.0.1:{first.port}" in output, output
        assert "the port is in use" in output, output
        # Every call reaches the first server: it serves 'first' and never 'second'.
        with triton.InferenceServerClient(first.url) as client:
            for _ in range(20):
                index = client.get_model_repository_index(as_json=True)["models"]
                assert {model["name"] for model in index} == {"first"}


def test_a_broken_newest_version_at_start_serves_the_newest_version_that_loads(
    tmp_path: Path,
) -> None:
    """Under `latest`, version 3 failing to load used to leave the model not serving at all
    after a restart (in poll mode version 2 kept serving): a restart must never turn a running
    deployment into an outage."""
    mf.write_add_sub_model(tmp_path, "tiny", version=1, offset=1.0, with_config=False)
    mf.write_add_sub_model(tmp_path, "tiny", version=2, offset=2.0, with_config=False)
    mf.write_corrupt_model(tmp_path, "tiny", version=3)
    with ServerProcess(tmp_path) as server, triton.InferenceServerClient(server.url) as client:
        assert client.is_model_ready("tiny")
        assert client.is_model_ready("tiny", "2")
        assert not client.is_model_ready("tiny", "3")
        inputs = [
            triton.InferInput(name, [1, mf.ADD_SUB_ELEMENT_COUNT], "FP32")
            for name in ("INPUT0", "INPUT1")
        ]
        for item in inputs:
            item.set_data_from_numpy(np.ones((1, mf.ADD_SUB_ELEMENT_COUNT), np.float32))
        result = client.infer("tiny", inputs)
        assert result.get_response().model_version == "2"
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), np.full((1, 16), 4.0))
        index = {
            (model["name"], model.get("version", "")): model
            for model in client.get_model_repository_index(as_json=True)["models"]
        }
        assert index[("tiny", "2")]["state"] == "READY"
        assert index[("tiny", "3")]["state"] == "UNAVAILABLE"
        assert "model.onnx" in index[("tiny", "3")]["reason"], index[("tiny", "3")]
        assert ("tiny", "1") not in index or index[("tiny", "1")]["state"] != "READY"
        server.wait_for_log(r"serving version 2 instead of the newer version\(s\) that failed")


def test_options_that_do_nothing_are_named_at_start(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with ServerProcess(empty, ["--load-model", "tabular_classifier"]) as server:
        server.wait_for_log(r"holds no model directory .*nothing to serve")
        server.wait_for_log(r"--load-model is ignored in model control mode 'none'")
