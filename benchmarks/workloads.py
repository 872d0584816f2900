"""The bundled models as benchmark workloads: realistic inputs and the in-process ceiling.

perf_analyzer's default random bytes make NaN floats and out-of-vocabulary token ids, so every
run feeds it data from here instead.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort

from server.settings import BUNDLED_MODELS

SEQUENCE_LENGTH = 16
_SAMPLES = 16


@dataclass(frozen=True)
class Workload:
    model: str
    max_batch_size: int
    make_row: Callable[[np.random.Generator], dict[str, np.ndarray]]
    shapes: dict[str, list[int]] = field(default_factory=dict)

    @property
    def model_path(self) -> Path:
        return BUNDLED_MODELS / self.model / "1" / "model.onnx"

    def write_input_data(self, path: Path, seed: int = 0) -> Path:
        """A perf_analyzer --input-data JSON file with a few realistic rows to cycle through."""
        rng = np.random.default_rng(seed)
        rows = []
        for _ in range(_SAMPLES):
            row = self.make_row(rng)
            rows.append(
                {
                    name: {"content": value.ravel().tolist(), "shape": list(value.shape)}
                    for name, value in row.items()
                }
            )
        path.write_text(json.dumps({"data": rows}))
        return path

    def batch(self, rows: int, seed: int = 0) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(seed)
        samples = [self.make_row(rng) for _ in range(rows)]
        return {name: np.stack([s[name] for s in samples]) for name in samples[0]}


def _tabular(rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {"features": rng.standard_normal(16).astype(np.float32)}


def _image(rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {"image": rng.random((3, 64, 64), dtype=np.float32)}


def _text(rng: np.random.Generator) -> dict[str, np.ndarray]:
    ids = rng.integers(1, 1000, size=SEQUENCE_LENGTH, dtype=np.int64)
    return {"input_ids": ids, "attention_mask": np.ones(SEQUENCE_LENGTH, np.int64)}


WORKLOADS = {
    w.model: w
    for w in (
        Workload("tabular_classifier", 32, _tabular),
        Workload("image_classifier", 32, _image),
        Workload(
            "text_encoder",
            64,
            _text,
            shapes={"input_ids": [SEQUENCE_LENGTH], "attention_mask": [SEQUENCE_LENGTH]},
        ),
    )
}


def in_process_rows_per_s(workload: Workload, batch_size: int, duration_s: float = 1.5) -> float:
    """The ceiling: onnxruntime's own throughput at `batch_size`, same session defaults as the
    server, no network, no serialisation."""
    session = ort.InferenceSession(str(workload.model_path), providers=["CPUExecutionProvider"])
    feeds = workload.batch(batch_size)
    session.run(None, feeds)  # warm-up
    runs = 0
    started = time.perf_counter()
    while (elapsed := time.perf_counter() - started) < duration_s:
        session.run(None, feeds)
        runs += 1
    return runs * batch_size / elapsed
