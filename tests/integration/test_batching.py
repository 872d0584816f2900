"""Dynamic batching through the real server: no cross-talk inside batches, and batches form."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as triton
import tritonclient.grpc.aio as triton_aio

from tests.support.model_factory import write_add_sub_model
from tests.support.server_process import REPO_ROOT

CONCURRENT_REQUESTS = 96


def add_sub_inputs(seed: int, rows: int) -> list[triton.InferInput]:
    rng = np.random.default_rng(seed)
    tensors = []
    for name in ("INPUT0", "INPUT1"):
        tensor = triton.InferInput(name, [rows, 16], "FP32")
        tensor.set_data_from_numpy(rng.standard_normal((rows, 16), dtype=np.float32))
        tensors.append(tensor)
    return tensors


async def infer_all(url: str, model: str, requests: list[list[triton.InferInput]]) -> list:
    async with triton_aio.InferenceServerClient(url) as client:
        return await asyncio.gather(*(client.infer(model, inputs) for inputs in requests))


@pytest.fixture(scope="module")
def batching_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("batching_repo")
    write_add_sub_model(
        repo,
        "add_sub",
        max_batch_size=16,
        offset=0.5,
        config_extra="dynamic_batching { max_queue_delay_microseconds: 20000 }",
    )
    return repo


def test_concurrent_requests_get_their_own_answers_and_are_batched(
    start_server, batching_repo: Path
) -> None:
    server = start_server(batching_repo)
    requests = [add_sub_inputs(seed, rows=1 + seed % 3) for seed in range(CONCURRENT_REQUESTS)]
    results = asyncio.run(infer_all(server.url, "add_sub", requests))

    for inputs, result in zip(requests, results, strict=True):
        a, b = (tensor._get_content() for tensor in inputs)
        a = np.frombuffer(a, np.float32).reshape(-1, 16)
        b = np.frombuffer(b, np.float32).reshape(-1, 16)
        np.testing.assert_allclose(result.as_numpy("OUTPUT0"), a + b + 0.5, rtol=1e-6)
        np.testing.assert_allclose(result.as_numpy("OUTPUT1"), a - b, rtol=1e-6)

    with triton.InferenceServerClient(server.url) as client:
        stats = client.get_inference_statistics("add_sub", as_json=True)["model_stats"][0]
    total_rows = sum(1 + seed % 3 for seed in range(CONCURRENT_REQUESTS))
    assert int(stats["inference_count"]) == total_rows
    assert int(stats["inference_stats"]["success"]["count"]) == CONCURRENT_REQUESTS
    executions = int(stats["execution_count"])
    assert executions < CONCURRENT_REQUESTS, "no requests were batched together"
    batch_sizes = {int(entry["batch_size"]) for entry in stats["batch_stats"]}
    assert max(batch_sizes) > 3, f"batch sizes seen: {sorted(batch_sizes)}"
    assert max(batch_sizes) <= 16
    batch_runs = sum(int(entry["compute_infer"]["count"]) for entry in stats["batch_stats"])
    assert batch_runs == executions


def test_text_requests_of_different_lengths_are_padded_and_match_unbatched_results(
    bundled_server,
) -> None:
    session = ort.InferenceSession(
        str(REPO_ROOT / "server/example_models/text_encoder/1/model.onnx"),
        providers=["CPUExecutionProvider"],
    )
    rng = np.random.default_rng(7)
    lengths = [int(n) for n in rng.integers(1, 40, size=48)]
    token_ids = [rng.integers(0, 1000, size=(1, n), dtype=np.int64) for n in lengths]
    requests = []
    for ids in token_ids:
        id_input = triton.InferInput("input_ids", list(ids.shape), "INT64")
        id_input.set_data_from_numpy(ids)
        mask_input = triton.InferInput("attention_mask", list(ids.shape), "INT64")
        mask_input.set_data_from_numpy(np.ones_like(ids))
        requests.append([id_input, mask_input])

    results = asyncio.run(infer_all(bundled_server.url, "text_encoder", requests))

    for ids, result in zip(token_ids, results, strict=True):
        (expected,) = session.run(None, {"input_ids": ids, "attention_mask": np.ones_like(ids)})
        np.testing.assert_allclose(result.as_numpy("embedding"), expected, atol=1e-5)
    with triton.InferenceServerClient(bundled_server.url) as client:
        stats = client.get_inference_statistics("text_encoder", as_json=True)["model_stats"][0]
    assert int(stats["execution_count"]) < int(stats["inference_stats"]["success"]["count"])


def test_a_closed_loop_client_stops_waiting_for_company_that_never_comes(
    start_server, tmp_path: Path
) -> None:
    """One client sending its next request only after the answer: after two queue waits that
    gathered nothing, its lone requests go without waiting out the delay. Measured by the
    server's own queue statistics (ModelStatistics), not by the client's clock."""
    delay_s = 0.5
    write_add_sub_model(
        tmp_path,
        "lone",
        max_batch_size=16,
        offset=0.0,
        config_extra=f"dynamic_batching {{ max_queue_delay_microseconds: {int(delay_s * 1e6)} }}",
    )
    server = start_server(tmp_path)

    def queue_s(client: triton.InferenceServerClient) -> float:
        stats = client.get_inference_statistics("lone", as_json=True)["model_stats"][0]
        return int(stats["inference_stats"]["queue"].get("ns", 0)) / 1e9

    # Two requests together first: they share a batch, and the arrival gap starts small.
    asyncio.run(infer_all(server.url, "lone", [add_sub_inputs(0, 1), add_sub_inputs(1, 1)]))
    waits = []
    with triton.InferenceServerClient(server.url) as client:
        for seed in range(2, 6):
            before = queue_s(client)
            client.infer("lone", add_sub_inputs(seed, 1))
            waits.append(queue_s(client) - before)
    assert all(wait >= delay_s * 0.9 for wait in waits[:2]), waits  # Triton's semantics at first
    assert all(wait < delay_s / 5 for wait in waits[2:]), waits  # then no more futile waits
