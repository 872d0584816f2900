"""Python-runtime models for tests: model.py sources and their configs."""

from __future__ import annotations

import socket
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


# A model whose batches wait on a gate the test holds: execute() connects to the test's
# loopback socket, says "started", and returns only when the test opens the gate (or closes the
# socket). A "slow" model that waits on the test, not on the machine's speed. All-zero inputs
# pass without waiting: that is the server's warm-up sample at load.
GATED_SOURCE = """
import socket


class TensorgateModel:
    def initialize(self, args):
        self.port = int(args["parameters"]["gate_port"])

    def execute(self, inputs):
        if not inputs["INPUT0"].any():
            return {"OUTPUT0": inputs["INPUT0"]}
        with socket.create_connection(("127.0.0.1", self.port), timeout=300) as gate:
            gate.sendall(b"started\\n")
            gate.recv(1)
        return {"OUTPUT0": inputs["INPUT0"]}
"""

GATED_CONFIG = """backend: "python"
max_batch_size: 8
input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 1 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 1 ] } ]
parameters { key: "gate_port" value: { string_value: "%d" } }
"""


class Gate:
    """The test's side of GATED_SOURCE: a loopback listener. `wait_started` returns once a batch
    has started; `open` lets every started batch finish."""

    def __init__(self, timeout_s: float = 60.0) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(timeout_s)
        self.port = self._listener.getsockname()[1]
        self._started: list[socket.socket] = []

    def wait_started(self) -> None:
        """Block until the next batch connects (raises TimeoutError after the timeout)."""
        connection, _ = self._listener.accept()
        connection.settimeout(self._listener.gettimeout())
        assert connection.recv(8) == b"started\n"
        self._started.append(connection)

    def open(self) -> None:
        for connection in self._started:
            connection.sendall(b"g")
            connection.close()
        self._started.clear()

    def close(self) -> None:
        """Release everything still waiting (their recv sees the connection close)."""
        self.open()
        self._listener.close()

    def __enter__(self) -> Gate:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_gated_model(repo: Path, name: str, gate: Gate) -> Path:
    return write_python_model(repo, name, GATED_SOURCE, GATED_CONFIG % gate.port)
