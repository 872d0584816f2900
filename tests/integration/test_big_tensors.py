"""Big tensors: bounded server memory per request, and a server-wide cap on bytes in flight.

The server's peak RSS is read from /proc (VmHWM, reset through clear_refs before the request),
so the figure is the request's own. Before the wire-level path (server/grpc_api/wire.py) a
64 MiB identity request raised it by ~490 MiB (7.6x); the bound is 3x the tensor, which is what
grpc's own receive path costs (its chunks, their join, and its byte buffer, at one moment).
"""

from __future__ import annotations

import queue
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as triton
import tritonclient.http as triton_http
from tritonclient.utils import InferenceServerException

from tests.support.big_tensor_models import write_big_tensor_models
from tests.support.python_models import GATED_SOURCE, Gate, write_python_model
from tests.support.server_process import ServerProcess

MIB = 1 << 20
BOUND_TIMES_TENSOR = 3
SLACK_MIB = 16  # thread stacks, allocator bookkeeping: not proportional to the tensor
BIG_LIMITS = ["--max-message-bytes", str(1 << 30), "--max-tensor-bytes", str(1 << 30)]
GATED_IDENTITY_CONFIG = """backend: "python"
max_batch_size: 0
input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ -1 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ -1 ] } ]
parameters { key: "gate_port" value: { string_value: "%d" } }
"""


def _kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _vector(mib: int) -> np.ndarray:
    """Small integers that cancel in sevens, so a float32 sum of millions of them is exact."""
    return (np.arange(mib * MIB // 4) % 7 - 3).astype(np.float32)


def _infer(url: str, model: str, data: np.ndarray, name: str = "x") -> np.ndarray:
    with triton.InferenceServerClient(url) as client:
        tensor = triton.InferInput(name, [data.size], "FP32")
        tensor.set_data_from_numpy(data)
        output = "y" if name == "x" else "OUTPUT0"
        return client.infer(model, [tensor]).as_numpy(output)


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("big-tensors")
    write_big_tensor_models(repo)
    return repo


def _infer_http(url: str, model: str, data: np.ndarray) -> np.ndarray:
    with triton_http.InferenceServerClient(url, network_timeout=120) as client:
        tensor = triton_http.InferInput("x", [data.size], "FP32")
        tensor.set_data_from_numpy(data, binary_data=True)
        output = triton_http.InferRequestedOutput("y", binary_data=True)
        return client.infer(model, [tensor], outputs=[output]).as_numpy("y")


@pytest.mark.parametrize("protocol", ["grpc", "http"])
@pytest.mark.parametrize("model", ["reduce", "identity"])
def test_a_64_mib_request_costs_at_most_three_times_its_size(
    repository: Path, model: str, protocol: str
) -> None:
    data = _vector(64)
    with ServerProcess(repository, BIG_LIMITS) as server:  # fresh: no memory freed by others
        pid = server.process.pid
        before = _kib(pid, "VmRSS")
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS
        infer = _infer if protocol == "grpc" else _infer_http
        url = server.url if protocol == "grpc" else server.http_url
        answer = infer(url, model, data)
        peak_mib = (_kib(pid, "VmHWM") - before) / 1024
        for _ in range(2):  # what one answer leaves behind must not add up
            infer(url, model, data)
        settled_mib = (_kib(pid, "VmRSS") - before) / 1024
    if model == "identity":
        np.testing.assert_array_equal(answer, data)
    else:
        np.testing.assert_allclose(answer, [data.sum(dtype=np.float64)], rtol=1e-3)
    assert peak_mib <= BOUND_TIMES_TENSOR * 64 + SLACK_MIB, f"peak +{peak_mib:.0f} MiB"
    # What stays is at most one tensor: onnxruntime's arena keeps the identity's output for reuse.
    # (Over HTTP, an answer handed to asyncio whole used to leave 6-60 MiB of send buffer pages in
    # the event loop thread's malloc arena: server/http_api/server.py WRITE_PIECE_BYTES.)
    assert settled_mib <= 64 + SLACK_MIB, f"settled +{settled_mib:.0f} MiB"


@pytest.fixture()
def capped_server(repository: Path) -> Iterator[tuple[ServerProcess, Gate]]:
    with Gate() as gate:
        write_python_model(repository, "gated", GATED_SOURCE, GATED_IDENTITY_CONFIG % gate.port)
        args = [*BIG_LIMITS, "--max-inflight-bytes", str(48 * MIB)]
        with ServerProcess(repository, args) as server:
            yield server, gate


def test_requests_beyond_the_inflight_budget_are_refused_at_once(
    capped_server: tuple[ServerProcess, Gate],
) -> None:
    server, gate = capped_server
    with pytest.raises(InferenceServerException) as too_big:
        _infer(server.url, "reduce", _vector(64))  # more than the whole budget
    assert too_big.value.status() == "StatusCode.RESOURCE_EXHAUSTED"
    assert "--max-inflight-bytes" in too_big.value.message()

    held = _vector(32)
    answers: list[np.ndarray] = []
    holder = threading.Thread(
        target=lambda: answers.append(_infer(server.url, "gated", held, name="INPUT0"))
    )
    holder.start()
    try:
        gate.wait_started()  # 32 MiB are in flight now, waiting on the gate
        with pytest.raises(InferenceServerException) as refused:
            _infer(server.url, "reduce", _vector(32))  # 32 + 32 > 48
        assert refused.value.status() == "StatusCode.RESOURCE_EXHAUSTED"
        # Over HTTP too: the budget is the server's, not one front end's.
        body = _vector(32).tobytes()
        header = (
            b'{"inputs":[{"name":"x","shape":[%d],"datatype":"FP32",'
            b'"parameters":{"binary_data_size":%d}}]}' % (len(body) // 4, len(body))
        )
        request = urllib.request.Request(
            f"http://{server.http_url}/v2/models/reduce/infer",
            data=header + body,
            headers={"Inference-Header-Content-Length": str(len(header))},
        )
        with pytest.raises(urllib.error.HTTPError) as http_refused:
            urllib.request.urlopen(request, timeout=60)
        assert http_refused.value.code == 429
        assert b"--max-inflight-bytes" in http_refused.value.read()
        # A small request still fits beside the held one.
        small = _vector(1)
        np.testing.assert_allclose(
            _infer(server.url, "reduce", small), [small.sum(dtype=np.float64)], rtol=1e-3
        )
    finally:
        gate.open()
        holder.join(timeout=120)
    np.testing.assert_array_equal(answers[0], held)
    # Once the held request is answered, its bytes are free again.
    big = _vector(32)
    np.testing.assert_allclose(
        _infer(server.url, "reduce", big), [big.sum(dtype=np.float64)], rtol=1e-3
    )


def test_stream_requests_hold_the_budget_until_answered(
    capped_server: tuple[ServerProcess, Gate],
) -> None:
    server, gate = capped_server
    held = _vector(32)
    answers: queue.Queue[tuple[object, object]] = queue.Queue()
    with triton.InferenceServerClient(server.url) as client:
        client.start_stream(callback=lambda result, error: answers.put((result, error)))
        try:
            tensor = triton.InferInput("INPUT0", [held.size], "FP32")
            tensor.set_data_from_numpy(held)
            client.async_stream_infer("gated", [tensor])
            gate.wait_started()  # the stream's 32 MiB are in flight, waiting on the gate
            with pytest.raises(InferenceServerException) as refused:
                _infer(server.url, "reduce", _vector(32))
            assert refused.value.status() == "StatusCode.RESOURCE_EXHAUSTED"
            gate.open()
            result, error = answers.get(timeout=120)
        finally:
            gate.open()  # a failed check must not leave the stream waiting on the gate
            client.stop_stream()
    assert error is None, error
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), held)  # type: ignore[attr-defined]
    big = _vector(32)  # the stream's bytes were given back with its answer
    np.testing.assert_allclose(
        _infer(server.url, "reduce", big), [big.sum(dtype=np.float64)], rtol=1e-3
    )
