"""onnxruntime on a real GPU: the CUDA provider active and running every node, IO binding and
CUDA graphs equal to the CPU, TensorRT FP16 writing its engine cache, instances on each GPU.

Skipped, with the reason, where there is no GPU or onnxruntime cannot use it (tests/gpu/device.py).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from runtimes.base import RuntimeSpec
from runtimes.onnx import OnnxRuntime, create
from tests.gpu import device

pytestmark = pytest.mark.skipif(
    device.cuda_skip_reason() is not None, reason=str(device.cuda_skip_reason())
)

VERSION_DIR = device.IMAGE_MODEL.parent
# FP32 on the GPU may use TF32 convolutions and matmuls; logits are of order 1.
FP32_TOLERANCE = {"rtol": 2e-2, "atol": 2e-2}
FP16_TOLERANCE = {"rtol": 5e-2, "atol": 5e-2}


def images(rows: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((rows, 3, 64, 64), dtype=np.float32)


@pytest.fixture(scope="module")
def cpu_logits() -> Callable[[np.ndarray], np.ndarray]:
    session = ort.InferenceSession(str(device.IMAGE_MODEL), providers=["CPUExecutionProvider"])
    return lambda batch: session.run(["logits"], {"image": batch})[0]


def gpu_runtime(**kwargs: object) -> OnnxRuntime:
    parameters = kwargs.pop("parameters", {})
    spec = RuntimeSpec(
        "image_classifier",
        VERSION_DIR,
        parameters=parameters,
        max_batch_size=32,
        device="gpu",
        **kwargs,
    )
    return create(spec)


def test_cuda_provider_is_active_and_runs_every_node(tmp_path: Path) -> None:
    runtime = gpu_runtime()
    assert runtime.metadata().device == device.CUDA
    assert runtime.io_binding is not None, "IO binding is on by default on a GPU"
    # The profile names the provider that ran each node: all of them on CUDA.
    options = ort.SessionOptions()
    options.enable_profiling = True
    options.profile_file_prefix = str(tmp_path / "profile")
    session = ort.InferenceSession(str(device.IMAGE_MODEL), options, providers=[device.CUDA])
    session.run(["logits"], {"image": images(2)})
    events = json.loads(Path(session.end_profiling()).read_text())
    providers = {e["args"]["provider"] for e in events if "provider" in e.get("args", {})}
    assert providers == {device.CUDA}


def test_io_binding_pins_host_buffers_and_matches_the_cpu(cpu_logits) -> None:
    runtime = gpu_runtime()
    for rows in (1, 8, 32, 8):
        batch = images(rows, seed=rows)
        result = runtime.infer({"image": batch}, ["logits"])["logits"]
        assert result.shape == (rows, 10)
        np.testing.assert_allclose(result, cpu_logits(batch), **FP32_TOLERANCE)
    assert runtime.io_binding.host_buffers.pinned, "cudaHostRegister failed: buffers pageable"


def test_cuda_graphs_replay_with_new_inputs_and_match_the_cpu(cpu_logits) -> None:
    runtime = gpu_runtime(parameters={"cuda_graph": "true"})
    assert runtime.io_binding is not None
    for seed, rows in enumerate((1, 8, 32, 8, 1, 32, 8)):  # first use captures, then replays
        batch = images(rows, seed=100 + seed)
        result = runtime.infer({"image": batch}, ["logits"])["logits"]
        np.testing.assert_allclose(result, cpu_logits(batch), **FP32_TOLERANCE)
    assert runtime.io_binding.graph_count == 3


@pytest.mark.skipif(
    device.tensorrt_skip_reason() is not None, reason=str(device.tensorrt_skip_reason())
)
def test_tensorrt_fp16_writes_an_engine_cache_and_matches_the_cpu(
    tmp_path: Path, cpu_logits
) -> None:
    cache = tmp_path / "trt_cache"
    cache.mkdir()
    runtime = gpu_runtime(
        accelerator="tensorrt",
        accelerator_parameters={"precision_mode": "FP16", "trt_engine_cache_path": str(cache)},
    )
    assert runtime.metadata().device == device.TENSORRT
    for rows in (1, 8):
        batch = images(rows, seed=rows)
        result = runtime.infer({"image": batch}, ["logits"])["logits"]
        np.testing.assert_allclose(result, cpu_logits(batch), **FP16_TOLERANCE)
    written = [p for p in cache.rglob("*") if p.is_file() and p.stat().st_size > 0]
    assert any(p.suffix == ".engine" for p in written), f"no engine in the cache: {written}"
    # A second load finds the engine instead of building it again.
    again = gpu_runtime(
        accelerator="tensorrt",
        accelerator_parameters={"precision_mode": "FP16", "trt_engine_cache_path": str(cache)},
    )
    np.testing.assert_allclose(
        again.infer({"image": images(1)}, ["logits"])["logits"],
        cpu_logits(images(1)),
        **FP16_TOLERANCE,
    )


@pytest.mark.skipif(device.gpu_count() < 2, reason="needs at least 2 GPUs")
def test_instances_run_on_the_gpu_they_are_placed_on(cpu_logits) -> None:
    runtimes = [gpu_runtime(device_id=index) for index in range(device.gpu_count())]
    batch = images(4)
    for index, runtime in enumerate(runtimes):
        options = runtime._session.get_provider_options()[device.CUDA]
        assert int(options["device_id"]) == index
        result = runtime.infer({"image": batch}, ["logits"])["logits"]
        np.testing.assert_allclose(result, cpu_logits(batch), **FP32_TOLERANCE)
    used = {uuid for pid, uuid in device.compute_apps() if pid == os.getpid()}
    assert len(used) == len(runtimes), f"this process holds memory on {used}"
