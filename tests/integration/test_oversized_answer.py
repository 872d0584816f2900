"""An answer larger than --max-message-bytes is refused by the server with the limit named and
counted as such; it used to be computed, counted a success, and dropped by grpc with a traceback."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator

import numpy as np
import pytest
import tritonclient.grpc as triton
from tritonclient.utils import InferenceServerException

from tests.support.python_models import write_python_model
from tests.support.server_process import ServerProcess

LIMIT = 1 << 20
SOURCE = """
import numpy as np


class TensorgateModel:
    def execute(self, inputs):
        rows = inputs["N"].reshape(-1)
        # N[i] floats for each request row: the test chooses how big the answer is.
        width = int(rows.max())
        return {"Y": np.zeros((len(rows), width), dtype=np.float32)}
"""
CONFIG = """backend: "python"
max_batch_size: 4
input [ { name: "N" data_type: TYPE_INT32 dims: [ 1 ] } ]
output [ { name: "Y" data_type: TYPE_FP32 dims: [ -1 ] } ]
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    repo = tmp_path_factory.mktemp("oversized")
    write_python_model(repo, "wide", SOURCE, CONFIG)
    process = ServerProcess(repo, ["--max-message-bytes", str(LIMIT)])
    try:
        yield process
    finally:
        process.stop()


def _ask(client: triton.InferenceServerClient, floats: int) -> np.ndarray:
    n = triton.InferInput("N", [1, 1], "INT32")
    n.set_data_from_numpy(np.array([[floats]], np.int32))
    return client.infer("wide", [n]).as_numpy("Y")


def test_an_answer_over_the_limit_is_refused_counted_and_logged_once(server: ServerProcess) -> None:
    mark = server.log_mark()
    with triton.InferenceServerClient(server.url) as client:
        assert _ask(client, 1000).shape == (1, 1000)  # 4 KB: fine
        with pytest.raises(InferenceServerException) as info:
            _ask(client, 2 * LIMIT // 4)  # 2 MiB of FP32
        assert info.value.status() == "StatusCode.RESOURCE_EXHAUSTED"
        assert f"more than the server's --max-message-bytes ({LIMIT})" in info.value.message()
        assert _ask(client, 10).shape == (1, 10)  # and the server goes on
    url = f"http://127.0.0.1:{server.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        metrics = response.read().decode()
    outcomes = {
        line.split('outcome="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("tensorgate_requests_total") and 'model="wide"' in line
    }
    assert outcomes.get("success") == 2.0, outcomes
    assert sum(outcomes.values()) == 3.0, outcomes
    log = "".join(server.log_lines[mark:])
    assert "Traceback" not in log
    assert log.count("exceeds --max-message-bytes") == 1
