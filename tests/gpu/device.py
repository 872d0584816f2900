"""What the GPU tests need and why they skip: an NVIDIA GPU, and onnxruntime able to use it.

`ort.get_available_providers()` lists the CUDA and TensorRT providers whenever onnxruntime-gpu
is installed, GPU or not, so the check goes further: a GPU must be visible (nvidia-smi or
/dev/nvidia0) and a session on the bundled image model must really come up on the provider
(onnxruntime silently falls back to the CPU when the CUDA, cuDNN or TensorRT libraries are
missing).
"""

from __future__ import annotations

import functools
import shutil
import subprocess
import warnings
from pathlib import Path

import onnxruntime as ort

REPO_ROOT = Path(__file__).resolve().parents[2]
IMAGE_MODEL = REPO_ROOT / "server" / "example_models" / "image_classifier" / "1" / "model.onnx"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"


@functools.cache
def gpu_names() -> tuple[str, ...]:
    """The GPUs nvidia-smi lists ("GPU 0: NVIDIA H100 ..."), empty without one."""
    if shutil.which("nvidia-smi") is None:
        return ()
    try:
        listed = subprocess.run(
            ["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    return tuple(line for line in listed.splitlines() if line.startswith("GPU "))


def gpu_count() -> int:
    return len(gpu_names())


@functools.cache
def provider_skip_reason(provider: str) -> str | None:
    """None when `provider` really runs the bundled image model here; else why not."""
    if provider not in ort.get_available_providers():
        return f"onnxruntime {ort.__version__} has no {provider} (install onnxruntime-gpu)"
    if not gpu_names() and not Path("/dev/nvidia0").exists():
        return "no NVIDIA GPU: nvidia-smi lists none and /dev/nvidia0 is absent"
    options = ort.SessionOptions()
    options.log_severity_level = 4
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            session = ort.InferenceSession(
                str(IMAGE_MODEL), options, providers=[provider, "CPUExecutionProvider"]
            )
    except Exception as exc:  # onnxruntime raises several unrelated types
        return f"{provider} failed to create a session: {exc}"
    active = session.get_providers()[0]
    if active != provider:
        return (
            f"{provider} is listed but did not load (onnxruntime fell back to {active}): "
            "the CUDA/cuDNN/TensorRT libraries it needs are missing or do not match"
        )
    return None


def cuda_skip_reason() -> str | None:
    return provider_skip_reason(CUDA)


def tensorrt_skip_reason() -> str | None:
    return cuda_skip_reason() or provider_skip_reason(TENSORRT)


def compute_apps() -> list[tuple[int, str]]:
    """(pid, GPU uuid) of every process nvidia-smi sees holding GPU memory."""
    out = subprocess.run(
        ["nvidia-smi", "--query-compute-apps=pid,gpu_uuid", "--format=csv,noheader"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    rows = [line.split(",") for line in out.splitlines() if line.strip()]
    return [(int(pid), uuid.strip()) for pid, uuid in rows]
