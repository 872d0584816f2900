"""Two models for the big-tensor memory checks, each one FP32 vector ``x`` of any length in.

* ``reduce``: ``y`` = [sum(x)], four bytes out, so a request costs what receiving it costs.
* ``identity``: ``y`` = x, the tensor back, so a request costs receiving and sending it.

No batching (max_batch_size 0): a request's tensor is never copied into a larger batch.
"""

from __future__ import annotations

from pathlib import Path

import onnx
from onnx import TensorProto, helper

from tests.support import model_factory as mf


def _write(repo: Path, name: str, node: onnx.NodeProto, out_dims: str) -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1] if out_dims == "[1]" else ["n"])
    graph = helper.make_graph([node], name, [x], [y])
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", mf.OPSET)], ir_version=mf.IR_VERSION
    )
    mf.write_onnx_model(repo, name, model)
    mf.write_config(
        repo,
        name,
        f'name: "{name}"\nplatform: "onnxruntime_onnx"\nmax_batch_size: 0\n'
        'input [{ name: "x" data_type: TYPE_FP32 dims: [-1] }]\n'
        f'output [{{ name: "y" data_type: TYPE_FP32 dims: {out_dims} }}]\n',
    )


def write_big_tensor_models(repo: Path) -> None:
    _write(repo, "reduce", helper.make_node("ReduceSum", ["x"], ["y"], keepdims=1), "[1]")
    _write(repo, "identity", helper.make_node("Identity", ["x"], ["y"]), "[-1]")
