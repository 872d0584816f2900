"""Python-runtime models for tests: model.py sources and their configs."""

from __future__ import annotations

from pathlib import Path

ADD_SUB_SOURCE = """
import numpy as np


class TensorgateModel:
    def initialize(self, args):
        self.offset = float(args["parameters"].get("offset", "0"))
        self.finalized = False

    def execute(self, inputs):
        a, b = inputs["INPUT0"], inputs["INPUT1"]
        if np.isnan(a).any():
            raise ValueError("NaN input")
        return {"OUTPUT0": a + b + self.offset, "OUTPUT1": a - b}

    def finalize(self):
        self.finalized = True
"""

UPPER_SOURCE = """
import numpy as np


class TensorgateModel:
    def execute(self, inputs):
        text = inputs["TEXT"]
        upper = np.array([item.upper() for item in text.ravel()], dtype=object)
        lengths = np.array([len(item) for item in text.ravel()], dtype=np.int32)
        return {"UPPER": upper.reshape(text.shape), "LENGTH": lengths.reshape(text.shape)}
"""

ADD_SUB_CONFIG = """backend: "python"
max_batch_size: 8
input [
  { name: "INPUT0" data_type: TYPE_FP32 dims: [ 4 ] },
  { name: "INPUT1" data_type: TYPE_FP32 dims: [ 4 ] }
]
output [
  { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 4 ] },
  { name: "OUTPUT1" data_type: TYPE_FP32 dims: [ 4 ] }
]
parameters { key: "offset" value: { string_value: "0.5" } }
dynamic_batching { }
"""

UPPER_CONFIG = """backend: "python"
max_batch_size: 16
input [ { name: "TEXT" data_type: TYPE_STRING dims: [ 1 ] } ]
output [
  { name: "UPPER" data_type: TYPE_STRING dims: [ 1 ] },
  { name: "LENGTH" data_type: TYPE_INT32 dims: [ 1 ] }
]
dynamic_batching { max_queue_delay_microseconds: 1000 }
"""


def write_python_model(repo: Path, name: str, source: str, config: str, version: int = 1) -> Path:
    """Write <repo>/<name>/config.pbtxt and <repo>/<name>/<version>/model.py."""
    version_dir = repo / name / str(version)
    version_dir.mkdir(parents=True, exist_ok=True)
    (version_dir / "model.py").write_text(source)
    (repo / name / "config.pbtxt").write_text(config)
    return version_dir
