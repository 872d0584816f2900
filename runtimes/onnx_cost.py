"""Whether an ONNX graph's running time follows from its input shapes alone.

The scheduler may run a cheap batch on the event loop itself (no thread hand-off), predicting its
cost from earlier batches of similar size. That prediction is only safe when the graph cannot do
more work because of the *values* it is given: a Loop whose trip count is an input, a Range or
ConstantOfShape sized by an input, a NonZero whose output grows with the data, string tensors
whose cost follows their lengths. Such a graph could block the event loop for as long as a
client likes, so it never runs inline unless its config asks for it.

The check is a data-flow pass: a tensor is value-dependent if it comes from a graph input through
ops that pass values on; initializers, Constant nodes and Shape/Size outputs are not (a Shape is
the same for any values of its input). A node is refused if it is control flow, if its output
size depends on its input values, or if one of its size-giving operands is value-dependent.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import onnx

# Ops whose amount of work can follow values, whatever their operands.
_CONTROL_FLOW = frozenset({"Loop", "If", "Scan", "SequenceMap"})
_VALUE_SIZED_OUTPUT = frozenset(
    {"NonZero", "Unique", "Compress", "NonMaxSuppression", "StringSplit", "RegexFullMatch"}
)
# Operands (by position) that give an output's size or a work count; value-dependent ones here
# make the node's cost value-dependent.
_SIZE_OPERANDS: dict[str, tuple[int, ...]] = {
    "Reshape": (1,),
    "Expand": (1,),
    "Tile": (1,),
    "ConstantOfShape": (0,),
    "Range": (0, 1, 2),
    "Slice": (1, 2, 3, 4),
    "Pad": (1, 3),
    "Resize": (1, 2, 3),
    "Upsample": (1,),
    "TopK": (1,),
    "OneHot": (1,),
    "CenterCropPad": (1,),
}
# Standard domains; ops of other domains (custom or vendor ops) are not known to be safe.
_KNOWN_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml"})
_SHAPE_ONLY = frozenset({"Shape", "Size"})  # outputs depend on the input's shape, not its values


def cost_follows_shapes(model_path: Path) -> tuple[bool, str]:
    """(True, "") if the graph's work is fixed by its input shapes; else (False, why)."""
    try:
        model = onnx.load(str(model_path), load_external_data=False)
    except Exception as exc:  # an unreadable graph gets no inline execution, nothing worse
        return False, f"the graph could not be read ({exc})"
    graph = model.graph
    strings = [
        value.name
        for value in graph.input
        if value.type.HasField("tensor_type")
        and value.type.tensor_type.elem_type == onnx.TensorProto.STRING
    ]
    if strings:
        return False, f"input '{strings[0]}' is a string tensor, whose cost follows its lengths"
    static = {initializer.name for initializer in graph.initializer}
    value_dependent = {value.name for value in graph.input} - static
    return _check_nodes(graph.node, value_dependent)


def _check_nodes(nodes: Iterable[onnx.NodeProto], value_dependent: set[str]) -> tuple[bool, str]:
    for node in nodes:  # ONNX graphs are topologically sorted
        where = f"node '{node.name or node.op_type}' ({node.op_type})"
        if node.domain not in _KNOWN_DOMAINS:
            return False, f"{where} is from domain '{node.domain}', whose ops are not known"
        if node.op_type in _CONTROL_FLOW:
            return False, f"{where} is control flow"
        if node.op_type in _VALUE_SIZED_OUTPUT:
            return False, f"{where} has an output whose size follows its input values"
        operands = _SIZE_OPERANDS.get(node.op_type, ())
        sized_by_values = [
            node.input[i]
            for i in operands
            if i < len(node.input) and node.input[i] in value_dependent
        ]
        if sized_by_values:
            return False, f"{where} takes a size from '{sized_by_values[0]}', computed from inputs"
        if node.op_type in _SHAPE_ONLY or node.op_type == "Constant":
            continue
        if any(name in value_dependent for name in node.input):
            value_dependent.update(node.output)
    return True, ""
