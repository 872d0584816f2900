"""The real server serving KIND_GPU models (CUDA with CUDA graphs; TensorRT FP16) to tritonclient,
and spreading a model's instances over every GPU listed in its instance_group.

The server runs in a subprocess (tests/support/server_process.py): tritonclient's protobuf stubs
and tensorgate's register the same symbols and must not meet in one process.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort
import pytest

from tests.gpu import device

# Skipped before the guard below, so that without a GPU it skips in any pytest process.
if device.cuda_skip_reason() is not None:
    pytest.skip(str(device.cuda_skip_reason()), allow_module_level=True)

if "server._proto.grpc_service_pb2" in sys.modules:
    raise pytest.UsageError("tests/gpu/test_gpu_server.py needs a process without server._proto")

import tritonclient.grpc as triton

from tests.support.server_process import ServerProcess

CONFIG = """
name: "{name}"
platform: "onnxruntime_onnx"
max_batch_size: 32
input [ {{ name: "image" data_type: TYPE_FP32 dims: [ 3, 64, 64 ] }} ]
output [ {{ name: "logits" data_type: TYPE_FP32 dims: [ 10 ] }} ]
dynamic_batching {{ max_queue_delay_microseconds: 500 }}
instance_group [ {{ kind: KIND_GPU count: 1 gpus: [ {gpus} ] }} ]
{extra}
"""
CUDA_GRAPH = 'parameters { key: "cuda_graph" value: { string_value: "true" } }'
TENSORRT = """optimization {{ execution_accelerators {{ gpu_execution_accelerator [ {{
  name: "tensorrt"
  parameters {{ key: "precision_mode" value: "FP16" }}
  parameters {{ key: "trt_engine_cache_path" value: "{cache}" }} }} ] }} }}"""


def write_model(repository: Path, name: str, gpus: list[int], extra: str = "") -> None:
    version = repository / name / "1"
    version.mkdir(parents=True)
    shutil.copy(device.IMAGE_MODEL, version / "model.onnx")
    gpu_list = ", ".join(str(gpu) for gpu in gpus)
    (repository / name / "config.pbtxt").write_text(
        CONFIG.format(name=name, gpus=gpu_list, extra=extra)
    )


@pytest.fixture(scope="module")
def gpu_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    repository = tmp_path_factory.mktemp("gpu_models")
    gpus = list(range(max(1, device.gpu_count())))
    write_model(repository, "image_cuda", gpus, CUDA_GRAPH)
    if device.tensorrt_skip_reason() is None:
        cache = tmp_path_factory.mktemp("trt_cache")
        write_model(repository, "image_trt", [0], TENSORRT.format(cache=cache))
    # TensorRT builds its engine at load: allow for it.
    with ServerProcess(repository, startup_timeout_s=300) as server:
        with grpc.insecure_channel(server.url) as channel:
            grpc.channel_ready_future(channel).result(timeout=60)
        yield server


def expected_logits(batch: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(device.IMAGE_MODEL), providers=["CPUExecutionProvider"])
    return session.run(["logits"], {"image": batch})[0]


def infer(server: ServerProcess, model: str, batch: np.ndarray) -> np.ndarray:
    with triton.InferenceServerClient(server.url) as client:
        image = triton.InferInput("image", list(batch.shape), "FP32")
        image.set_data_from_numpy(batch)
        return client.infer(model, [image]).as_numpy("logits")


def test_kind_gpu_model_serves_on_cuda_with_cuda_graphs(gpu_server: ServerProcess) -> None:
    gpu_server.wait_for_log(r"loaded model 'image_cuda' version 1 on CUDAExecutionProvider")
    assert gpu_server.log_matches(r"CUDAExecutionProvider device \d+: IO binding, CUDA graphs on")
    for rows in (1, 4, 1, 4):
        batch = np.random.default_rng(rows).random((rows, 3, 64, 64), dtype=np.float32)
        np.testing.assert_allclose(
            infer(gpu_server, "image_cuda", batch), expected_logits(batch), rtol=2e-2, atol=2e-2
        )


@pytest.mark.skipif(
    device.tensorrt_skip_reason() is not None, reason=str(device.tensorrt_skip_reason())
)
def test_tensorrt_model_serves_fp16(gpu_server: ServerProcess) -> None:
    gpu_server.wait_for_log(r"loaded model 'image_trt' version 1 on TensorrtExecutionProvider")
    batch = np.random.default_rng(7).random((2, 3, 64, 64), dtype=np.float32)
    np.testing.assert_allclose(
        infer(gpu_server, "image_trt", batch), expected_logits(batch), rtol=5e-2, atol=5e-2
    )


@pytest.mark.skipif(device.gpu_count() < 2, reason="needs at least 2 GPUs")
def test_instances_are_spread_over_the_listed_gpus(gpu_server: ServerProcess) -> None:
    gpu_server.wait_for_log(r"loaded model 'image_cuda'")
    devices = {m.group(1) for m in gpu_server.log_matches(r"CUDAExecutionProvider device (\d+)")}
    assert devices == {str(gpu) for gpu in range(device.gpu_count())}
    used = {uuid for pid, uuid in device.compute_apps() if pid == gpu_server.process.pid}
    assert len(used) == device.gpu_count(), f"the server holds memory on {used}"
