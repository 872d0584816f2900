"""ONNX models that misbehave on purpose, for the fault and shutdown tests.

Each writer puts ``<repo>/<name>/1/model.onnx`` and a ``config.pbtxt`` (through
:mod:`tests.support.model_factory`), and every model loads and warms up cleanly on zeros; the
misbehaviour is driven by the request's data, so one served model can answer some requests
normally and fail or stall on others:

* :func:`write_slow_model`: ``ITERATIONS`` INT64 [batch, 1] -> ``OUTPUT0`` FP32 [batch, 1]. A
  ``Loop`` runs max(ITERATIONS) times over a 128x128 MatMul + Tanh (about 45 us an iteration on
  one core), then OUTPUT0 = ITERATIONS as float (the loop's result is multiplied by 0, so the
  answer is checkable). Compute time is chosen per request, from ~30 us to many seconds.
* :func:`write_gather_model`: ``INDEX`` INT64 [batch, 1] -> ``OUTPUT0`` FP32 [batch, 1] =
  ``GATHER_TABLE[INDEX]``. An index outside [-4, 3] makes onnxruntime raise inside ``run``.
* :func:`write_row_breaking_model`: ``INPUT0`` FP32 [batch, 4] -> ``OUTPUT0`` declared
  [batch, 4], computed as the first row only (a Slice whose end is computed at run time). The
  graph's symbolic batch dimension makes the model loadable with max_batch_size > 0 (a fixed
  leading 1 is refused at load), so a request of n > 1 rows gets 1 row back: a broken contract.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tests.support import model_factory as mf

#: Values of the gather model's table; OUTPUT0 = GATHER_TABLE[INDEX].
GATHER_TABLE = np.array([10.0, 11.0, 12.0, 13.0], dtype=np.float32)
SLOW_MATRIX = 128
ONE_THREAD = 'parameters { key: "intra_op_thread_count" value: { string_value: "1" } }'


def _model(
    name: str,
    nodes: list[onnx.NodeProto],
    inputs: list[onnx.ValueInfoProto],
    outputs: list[onnx.ValueInfoProto],
    initializers: list[onnx.TensorProto],
) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, name, inputs, outputs, initializer=initializers)
    return helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", mf.OPSET)],
        ir_version=mf.IR_VERSION,
        producer_name="tensorgate-tests",
    )


def _write(
    repo: Path,
    name: str,
    model: onnx.ModelProto,
    inputs: tuple[mf.TensorSpec, ...],
    outputs: tuple[mf.TensorSpec, ...],
    max_batch_size: int,
    config_extra: str,
) -> mf.WrittenModel:
    path = mf.write_onnx_model(repo, name, model)
    text = mf.render_config(
        name, max_batch_size=max_batch_size, inputs=inputs, outputs=outputs, extra=config_extra
    )
    config = mf.write_config(repo, name, text)
    return mf.WrittenModel(
        name=name,
        version=1,
        model_dir=Path(repo) / name,
        model_path=path,
        config_path=config,
        max_batch_size=max_batch_size,
        inputs=inputs,
        outputs=outputs,
    )


def write_slow_model(
    repo: Path, name: str, *, max_batch_size: int = 8, config_extra: str = ONE_THREAD
) -> mf.WrittenModel:
    """A model whose compute time is chosen by the request (see the module docstring)."""
    n = SLOW_MATRIX
    body = helper.make_graph(
        [
            helper.make_node("MatMul", ["x_in", "W"], ["product"]),
            helper.make_node("Tanh", ["product"], ["x_out"]),
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
        ],
        "slow_body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("x_in", TensorProto.FLOAT, [n, n]),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("x_out", TensorProto.FLOAT, [n, n]),
        ],
    )
    initializers = [
        numpy_helper.from_array(np.eye(n, dtype=np.float32) * 0.5, "W"),
        numpy_helper.from_array(np.ones((n, n), dtype=np.float32), "x0"),
        numpy_helper.from_array(np.array(True), "keep_going"),
        numpy_helper.from_array(np.array(0.0, dtype=np.float32), "zero"),
    ]
    nodes = [
        helper.make_node("ReduceMax", ["ITERATIONS"], ["trips"], keepdims=0),
        helper.make_node("Loop", ["trips", "keep_going", "x0"], ["x_final"], body=body),
        helper.make_node("ReduceSum", ["x_final"], ["total"], keepdims=0),
        helper.make_node("Mul", ["total", "zero"], ["nothing"]),
        helper.make_node("Cast", ["ITERATIONS"], ["as_float"], to=TensorProto.FLOAT),
        helper.make_node("Add", ["as_float", "nothing"], ["OUTPUT0"]),
    ]
    inputs = (mf.TensorSpec("ITERATIONS", "INT64", (-1, 1)),)
    outputs = (mf.TensorSpec("OUTPUT0", "FP32", (-1, 1)),)
    model = _model(
        name,
        nodes,
        [helper.make_tensor_value_info("ITERATIONS", TensorProto.INT64, ["batch", 1])],
        [helper.make_tensor_value_info("OUTPUT0", TensorProto.FLOAT, ["batch", 1])],
        initializers,
    )
    return _write(repo, name, model, inputs, outputs, max_batch_size, config_extra)


def write_gather_model(
    repo: Path, name: str, *, max_batch_size: int = 8, config_extra: str = ""
) -> mf.WrittenModel:
    """OUTPUT0 = GATHER_TABLE[INDEX]; an out-of-range INDEX fails inside onnxruntime."""
    table = numpy_helper.from_array(GATHER_TABLE, "table")
    nodes = [helper.make_node("Gather", ["table", "INDEX"], ["OUTPUT0"], axis=0, name="lookup")]
    inputs = (mf.TensorSpec("INDEX", "INT64", (-1, 1)),)
    outputs = (mf.TensorSpec("OUTPUT0", "FP32", (-1, 1)),)
    model = _model(
        name,
        nodes,
        [helper.make_tensor_value_info("INDEX", TensorProto.INT64, ["batch", 1])],
        [helper.make_tensor_value_info("OUTPUT0", TensorProto.FLOAT, ["batch", 1])],
        [table],
    )
    return _write(repo, name, model, inputs, outputs, max_batch_size, config_extra)


def write_row_breaking_model(
    repo: Path, name: str, *, max_batch_size: int = 8, config_extra: str = ""
) -> mf.WrittenModel:
    """Declares OUTPUT0 [batch, 4] but always returns the first row only.

    The slice end is n / n for n rows, computed at run time: shape inference cannot see that it
    is 1 (a constant end, or ReduceSum over the batch axis, is inferred as a fixed leading 1,
    which the server refuses at load for a batching model)."""
    nodes = [
        helper.make_node("Shape", ["INPUT0"], ["rows"], end=1),
        helper.make_node("Div", ["rows", "rows"], ["one"]),
        helper.make_node("Sub", ["rows", "rows"], ["zero"]),
        helper.make_node("Slice", ["INPUT0", "zero", "one", "batch_axis"], ["OUTPUT0"]),
    ]
    axes = numpy_helper.from_array(np.array([0], dtype=np.int64), "batch_axis")
    inputs = (mf.TensorSpec("INPUT0", "FP32", (-1, 4)),)
    outputs = (mf.TensorSpec("OUTPUT0", "FP32", (-1, 4)),)
    model = _model(
        name,
        nodes,
        [helper.make_tensor_value_info("INPUT0", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("OUTPUT0", TensorProto.FLOAT, ["batch", 4])],
        [axes],
    )
    return _write(repo, name, model, inputs, outputs, max_batch_size, config_extra)
