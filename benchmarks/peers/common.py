"""What every peer program shares: the model spec written by the harness, onnxruntime sessions,
and the line that tells the harness where the server listens.

The spec (JSON, written by benchmarks/compare.py from tensorgate's own ModelMetadata and
ModelConfig answers) gives each model's ONNX file, its v2 metadata, its batching settings and the
serialized ModelConfigResponse that perf_analyzer asks for, so every server describes a model the
same way.
"""

from __future__ import annotations

import base64
import json
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

V2_TO_NUMPY = {
    "BOOL": np.bool_,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
}


@dataclass(frozen=True)
class Tensor:
    name: str
    datatype: str
    shape: list[int]  # with the batch dimension (-1) first

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(V2_TO_NUMPY[self.datatype])


@dataclass(frozen=True)
class ModelSpec:
    name: str
    onnx_path: str
    inputs: list[Tensor]
    outputs: list[Tensor]
    max_batch_size: int
    max_queue_delay_us: int
    preferred_batch_sizes: list[int]
    model_config_response: bytes  # a serialized inference.ModelConfigResponse
    model_config_json: str  # the config as GET /v2/models/NAME/config answers it


def load_spec(path: str | Path) -> dict[str, ModelSpec]:
    raw: dict[str, Any] = json.loads(Path(path).read_text())
    models = {}
    for name, entry in raw["models"].items():
        models[name] = ModelSpec(
            name=name,
            onnx_path=entry["onnx_path"],
            inputs=[Tensor(**t) for t in entry["inputs"]],
            outputs=[Tensor(**t) for t in entry["outputs"]],
            max_batch_size=entry["max_batch_size"],
            max_queue_delay_us=entry["max_queue_delay_us"],
            preferred_batch_sizes=entry["preferred_batch_sizes"],
            model_config_response=base64.b64decode(entry["model_config_response"]),
            model_config_json=entry.get("model_config_json", ""),
        )
    return models


def onnx_session(spec: ModelSpec):
    """An onnxruntime session with the same (default) options tensorgate uses."""
    import onnxruntime as ort

    return ort.InferenceSession(spec.onnx_path, providers=["CPUExecutionProvider"])


def free_port(host: str = "127.0.0.1") -> int:
    """A port free right now, for servers that cannot bind port 0 and report it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def announce(host: str, port: int, protocol: str = "gRPC") -> None:
    """The line benchmarks/compare.py (like tests/support/server_process.py) waits for; the
    HTTP one names the REST port (the harness polls it for readiness)."""
    print(f"listening for {protocol} on {host}:{port}", flush=True)
