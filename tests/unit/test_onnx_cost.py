"""Which graphs may run inline: those whose work cannot grow with the values they are given."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from runtimes.onnx_cost import cost_follows_shapes
from tests.support import fault_models
from tests.support import model_factory as mf

BUNDLED = Path(__file__).resolve().parents[2] / "server" / "example_models"


def save(tmp_path: Path, nodes: list, inputs: list, outputs: list, initializers=()) -> Path:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", mf.OPSET)], ir_version=mf.IR_VERSION
    )
    path = tmp_path / "model.onnx"
    onnx.save(model, str(path))
    return path


def tensor(name: str, elem_type: int = TensorProto.FLOAT, shape=(None, 4)):
    return helper.make_tensor_value_info(name, elem_type, list(shape))


def const(name: str, values: list[int]) -> TensorProto:
    return numpy_helper.from_array(np.array(values, dtype=np.int64), name)


@pytest.mark.parametrize("model", ["tabular_classifier", "image_classifier", "text_encoder"])
def test_bundled_models_have_shape_bound_cost(model: str) -> None:
    assert cost_follows_shapes(BUNDLED / model / "1" / "model.onnx") == (True, "")


def test_loop_with_trip_count_from_the_request_is_refused(tmp_path: Path) -> None:
    written = fault_models.write_slow_model(tmp_path, "slow")
    ok, why = cost_follows_shapes(written.model_path)
    assert not ok
    assert "(Loop) is control flow" in why


def test_size_taken_from_input_values_is_refused(tmp_path: Path) -> None:
    path = save(
        tmp_path,
        [helper.make_node("ConstantOfShape", ["dims"], ["out"], name="fill")],
        [tensor("dims", TensorProto.INT64, (2,))],
        [tensor("out", shape=(None, None))],
    )
    assert cost_follows_shapes(path) == (
        False,
        "node 'fill' (ConstantOfShape) takes a size from 'dims', computed from inputs",
    )


def test_size_derived_through_arithmetic_on_values_is_refused(tmp_path: Path) -> None:
    nodes = [
        helper.make_node("Cast", ["x"], ["as_int"], to=TensorProto.INT64),
        helper.make_node("ReduceMax", ["as_int"], ["biggest"], keepdims=0),
        helper.make_node("Range", ["zero", "biggest", "one"], ["out"], name="count"),
    ]
    path = save(
        tmp_path,
        nodes,
        [tensor("x")],
        [tensor("out", TensorProto.INT64, (None,))],
        [const("zero", []), const("one", [])],
    )
    ok, why = cost_follows_shapes(path)
    assert not ok and "'biggest'" in why


def test_size_derived_from_the_input_shape_is_accepted(tmp_path: Path) -> None:
    # Shape -> ConstantOfShape: the work follows the input's shape, which the scheduler sees.
    nodes = [
        helper.make_node("Shape", ["x"], ["dims"]),
        helper.make_node("ConstantOfShape", ["dims"], ["zeros"]),
        helper.make_node("Add", ["x", "zeros"], ["out"]),
    ]
    path = save(tmp_path, nodes, [tensor("x")], [tensor("out")])
    assert cost_follows_shapes(path) == (True, "")


def test_reshape_to_a_constant_shape_is_accepted(tmp_path: Path) -> None:
    nodes = [helper.make_node("Reshape", ["x", "target"], ["out"])]
    path = save(
        tmp_path, nodes, [tensor("x")], [tensor("out", shape=(None,))], [const("target", [-1])]
    )
    assert cost_follows_shapes(path) == (True, "")


def test_value_sized_outputs_are_refused(tmp_path: Path) -> None:
    nodes = [helper.make_node("NonZero", ["x"], ["out"], name="where")]
    path = save(tmp_path, nodes, [tensor("x")], [tensor("out", TensorProto.INT64, (2, None))])
    assert cost_follows_shapes(path) == (
        False,
        "node 'where' (NonZero) has an output whose size follows its input values",
    )


def test_string_inputs_are_refused(tmp_path: Path) -> None:
    nodes = [helper.make_node("Identity", ["text"], ["out"])]
    path = save(
        tmp_path,
        nodes,
        [tensor("text", TensorProto.STRING, (None,))],
        [tensor("out", TensorProto.STRING, (None,))],
    )
    ok, why = cost_follows_shapes(path)
    assert not ok and "string tensor" in why


def test_ops_of_unknown_domains_are_refused(tmp_path: Path) -> None:
    nodes = [helper.make_node("Gelu", ["x"], ["out"], domain="com.example", name="custom")]
    path = save(tmp_path, nodes, [tensor("x")], [tensor("out")])
    ok, why = cost_follows_shapes(path)
    assert not ok and "domain 'com.example'" in why


def test_unreadable_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(b"not a model")
    ok, why = cost_follows_shapes(path)
    assert not ok and "could not be read" in why
