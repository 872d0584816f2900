"""Build small ONNX models into a temporary Triton-style model repository for tests.

Layout written: ``<repo>/<name>/config.pbtxt`` (optional) and
``<repo>/<name>/<version>/model.onnx``.  Every writer returns a :class:`WrittenModel` that
describes what was written (paths, and the tensors as the v2 protocol would report them).

Datatypes
---------
``write_identity_model`` accepts every KServe v2 datatype name in :data:`ALL_DATATYPES`.
Which of them onnxruntime (CPUExecutionProvider, 1.31) can actually run was found by running
an ``Identity`` model for each one through ``InferenceSession.run`` with numpy arrays
(:func:`onnxruntime_can_run` repeats that check):

* :data:`SUPPORTED_DATATYPES`: BOOL, INT8, INT16, INT32, INT64, UINT8, UINT16, UINT32,
  UINT64, FP16, FP32, FP64 and BYTES (ONNX ``STRING``) all round-trip through Identity.
* :data:`UNSUPPORTED_DATATYPES`: BF16.  The CPU provider does have a bfloat16 Identity
  kernel, so a BF16 model loads, but numpy has no bfloat16 dtype and the Python API cannot
  feed or return one as a numpy array (``ml_dtypes.bfloat16`` arrays and ``uint16`` arrays are
  both rejected; a bfloat16 output fails with "No corresponding Numpy type").  It can only be
  run through ``OrtValue.ortvalue_from_numpy_with_onnx_type(uint16_array, onnx_element_type=16)``
  with an IO binding to a pre-allocated bfloat16 ``OrtValue`` for the output.

Notes on BYTES: onnxruntime returns string outputs as ``str`` objects (UTF-8 decoded), not
``bytes``; a ``bytes`` object inside an ``object`` array is turned into its ``repr``
(``b'abc'`` becomes ``"b'abc'"``), and an ``S`` (fixed-width bytes) array is UTF-8 decoded, so
bytes that are not valid UTF-8 cannot pass through an ONNX string tensor at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = [
    "ALL_DATATYPES",
    "CONFIG_DATATYPES",
    "NUMPY_DTYPES",
    "ONNX_DATATYPES",
    "SUPPORTED_DATATYPES",
    "TYPED_FIELDS",
    "UNSUPPORTED_DATATYPES",
    "TensorSpec",
    "WrittenModel",
    "make_array",
    "onnxruntime_can_run",
    "render_config",
    "write_add_sub_model",
    "write_config",
    "write_corrupt_model",
    "write_identity_model",
    "write_onnx_model",
]

OPSET = 17
IR_VERSION = 8  # goes with opset 17; loadable by onnxruntime >= 1.20
PLATFORM = "onnxruntime_onnx"

#: v2 protocol datatype name -> ONNX TensorProto element type.
ONNX_DATATYPES: dict[str, int] = {
    "BOOL": TensorProto.BOOL,
    "INT8": TensorProto.INT8,
    "INT16": TensorProto.INT16,
    "INT32": TensorProto.INT32,
    "INT64": TensorProto.INT64,
    "UINT8": TensorProto.UINT8,
    "UINT16": TensorProto.UINT16,
    "UINT32": TensorProto.UINT32,
    "UINT64": TensorProto.UINT64,
    "FP16": TensorProto.FLOAT16,
    "FP32": TensorProto.FLOAT,
    "FP64": TensorProto.DOUBLE,
    "BF16": TensorProto.BFLOAT16,
    "BYTES": TensorProto.STRING,
}

#: v2 protocol datatype name -> Triton model configuration ``data_type`` name.
CONFIG_DATATYPES: dict[str, str] = {
    "BOOL": "TYPE_BOOL",
    "INT8": "TYPE_INT8",
    "INT16": "TYPE_INT16",
    "INT32": "TYPE_INT32",
    "INT64": "TYPE_INT64",
    "UINT8": "TYPE_UINT8",
    "UINT16": "TYPE_UINT16",
    "UINT32": "TYPE_UINT32",
    "UINT64": "TYPE_UINT64",
    "FP16": "TYPE_FP16",
    "FP32": "TYPE_FP32",
    "FP64": "TYPE_FP64",
    "BF16": "TYPE_BF16",
    "BYTES": "TYPE_STRING",
}

#: v2 protocol datatype name -> numpy dtype.  BF16 has none (see the module docstring).
#: The typed InferTensorContents field of each datatype, as the protocol defines it (stated
#: here independently of runtimes/datatypes.py, so tests catch a wrong table there); FP16 and
#: BF16 have none.
TYPED_FIELDS: dict[str, str] = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}

NUMPY_DTYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(np.object_),
}

ALL_DATATYPES: tuple[str, ...] = tuple(ONNX_DATATYPES)

#: Datatypes that onnxruntime (CPU) runs through Identity with numpy inputs and outputs.
SUPPORTED_DATATYPES: tuple[str, ...] = (
    "BOOL",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "UINT8",
    "UINT16",
    "UINT32",
    "UINT64",
    "FP16",
    "FP32",
    "FP64",
    "BYTES",
)

#: Datatypes that onnxruntime's Python API cannot run with numpy arrays, and why.
UNSUPPORTED_DATATYPES: dict[str, str] = {
    "BF16": (
        "onnxruntime has a bfloat16 Identity kernel and loads the model, but numpy has no "
        "bfloat16 dtype: InferenceSession.run rejects uint16 and ml_dtypes.bfloat16 arrays and "
        "cannot return a bfloat16 output as numpy; only the OrtValue/IO-binding path works"
    ),
}

IDENTITY_ELEMENT_COUNT = 4
ADD_SUB_ELEMENT_COUNT = 16


@dataclass(frozen=True)
class TensorSpec:
    """A model input or output as the v2 protocol reports it (-1 marks the batch dim)."""

    name: str
    datatype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class WrittenModel:
    """What a writer put into the repository."""

    name: str
    version: int
    model_dir: Path
    model_path: Path
    config_path: Path | None
    max_batch_size: int
    inputs: tuple[TensorSpec, ...] = ()
    outputs: tuple[TensorSpec, ...] = ()


# --------------------------------------------------------------------------------------------
# Low-level writers
# --------------------------------------------------------------------------------------------


def _check_datatype(datatype: str) -> None:
    if datatype not in ONNX_DATATYPES:
        raise ValueError(f"unknown v2 datatype {datatype!r}; expected one of {ALL_DATATYPES}")


def _model_path(repo: Path, name: str, version: int) -> Path:
    return Path(repo) / name / str(version) / "model.onnx"


def write_onnx_model(repo: Path, name: str, model: onnx.ModelProto, *, version: int = 1) -> Path:
    """Check ``model`` with onnx.checker and write it to ``<repo>/<name>/<version>/model.onnx``."""
    onnx.checker.check_model(model, full_check=True)
    path = _model_path(repo, name, version)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString(deterministic=True))
    return path


def write_config(repo: Path, name: str, text: str) -> Path:
    """Write ``text`` verbatim to ``<repo>/<name>/config.pbtxt`` and return its path."""
    path = Path(repo) / name / "config.pbtxt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def render_config(
    name: str,
    *,
    max_batch_size: int,
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
    extra: str = "",
) -> str:
    """Render a Triton ``config.pbtxt``.

    The specs' shapes are full model shapes; when ``max_batch_size > 0`` their leading batch
    dimension is dropped, as Triton's ``dims`` exclude it.  ``extra`` is appended verbatim
    (e.g. ``"version_policy: { all { } }"`` or a ``dynamic_batching { }`` block).
    """

    def tensors(specs: Sequence[TensorSpec]) -> str:
        blocks = []
        for spec in specs:
            dims = spec.shape[1:] if max_batch_size > 0 else spec.shape
            blocks.append(
                "  {\n"
                f'    name: "{spec.name}"\n'
                f"    data_type: {CONFIG_DATATYPES[spec.datatype]}\n"
                f"    dims: [ {', '.join(str(d) for d in dims)} ]\n"
                "  }"
            )
        return ",\n".join(blocks)

    text = (
        f'name: "{name}"\n'
        f'platform: "{PLATFORM}"\n'
        f"max_batch_size: {max_batch_size}\n"
        f"input [\n{tensors(inputs)}\n]\n"
        f"output [\n{tensors(outputs)}\n]\n"
    )
    if extra:
        text += extra if extra.endswith("\n") else extra + "\n"
    return text


def _onnx_shape(shape: Sequence[int]) -> list[int | str]:
    """-1 becomes a symbolic dim: "batch" for the leading one, "dim<i>" for the others."""
    return [d if d != -1 else ("batch" if i == 0 else f"dim{i}") for i, d in enumerate(shape)]


def _value_info(spec: TensorSpec) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(
        spec.name, ONNX_DATATYPES[spec.datatype], _onnx_shape(spec.shape)
    )


def _make_model(
    name: str,
    nodes: Sequence[onnx.NodeProto],
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
    initializers: Sequence[TensorProto] = (),
) -> onnx.ModelProto:
    graph = helper.make_graph(
        list(nodes),
        name,
        [_value_info(s) for s in inputs],
        [_value_info(s) for s in outputs],
        initializer=list(initializers),
    )
    return helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        ir_version=IR_VERSION,
        producer_name="tensorgate-tests",
    )


def _finish(
    repo: Path,
    name: str,
    model: onnx.ModelProto,
    *,
    version: int,
    max_batch_size: int,
    inputs: tuple[TensorSpec, ...],
    outputs: tuple[TensorSpec, ...],
    with_config: bool,
    config_extra: str,
) -> WrittenModel:
    model_path = write_onnx_model(repo, name, model, version=version)
    config_path = None
    if with_config:
        text = render_config(
            name, max_batch_size=max_batch_size, inputs=inputs, outputs=outputs, extra=config_extra
        )
        config_path = write_config(repo, name, text)
    return WrittenModel(
        name=name,
        version=version,
        model_dir=Path(repo) / name,
        model_path=model_path,
        config_path=config_path,
        max_batch_size=max_batch_size,
        inputs=inputs,
        outputs=outputs,
    )


# --------------------------------------------------------------------------------------------
# Test models
# --------------------------------------------------------------------------------------------


def write_identity_model(
    repo: Path,
    name: str,
    datatype: str,
    *,
    max_batch_size: int,
    version: int = 1,
    with_config: bool,
    config_extra: str = "",
) -> WrittenModel:
    """Write an ONNX ``Identity`` model: ``OUTPUT0 = INPUT0``.

    Shapes are ``[batch, 4]`` when ``max_batch_size > 0`` (batch dim named "batch"),
    otherwise ``[4]``.  ``datatype`` is a v2 protocol name (BYTES maps to ONNX STRING).  Any
    name in :data:`ALL_DATATYPES` is written; only :data:`SUPPORTED_DATATYPES` can be run
    through onnxruntime with numpy arrays.  ``config.pbtxt`` is written only if
    ``with_config``.
    """
    _check_datatype(datatype)
    shape = (-1, IDENTITY_ELEMENT_COUNT) if max_batch_size > 0 else (IDENTITY_ELEMENT_COUNT,)
    inputs = (TensorSpec("INPUT0", datatype, shape),)
    outputs = (TensorSpec("OUTPUT0", datatype, shape),)
    node = helper.make_node("Identity", ["INPUT0"], ["OUTPUT0"], name="identity")
    model = _make_model(name, [node], inputs, outputs)
    return _finish(
        repo,
        name,
        model,
        version=version,
        max_batch_size=max_batch_size,
        inputs=inputs,
        outputs=outputs,
        with_config=with_config,
        config_extra=config_extra,
    )


def write_add_sub_model(
    repo: Path,
    name: str,
    *,
    max_batch_size: int = 8,
    version: int = 1,
    offset: float = 0.0,
    with_config: bool = True,
    config_extra: str = "",
) -> WrittenModel:
    """Write a two-input, two-output FP32 model.

    ``OUTPUT0 = INPUT0 + INPUT1 + offset`` and ``OUTPUT1 = INPUT0 - INPUT1``, all of shape
    ``[batch, 16]`` (``[16]`` when ``max_batch_size == 0``).  Give each version a different
    ``offset`` so that OUTPUT0 reveals which version answered.
    """
    shape = (-1, ADD_SUB_ELEMENT_COUNT) if max_batch_size > 0 else (ADD_SUB_ELEMENT_COUNT,)
    inputs = (TensorSpec("INPUT0", "FP32", shape), TensorSpec("INPUT1", "FP32", shape))
    outputs = (TensorSpec("OUTPUT0", "FP32", shape), TensorSpec("OUTPUT1", "FP32", shape))
    offset_init = numpy_helper.from_array(np.array(offset, dtype=np.float32), "offset")
    nodes = [
        helper.make_node("Add", ["INPUT0", "INPUT1"], ["sum"], name="add"),
        helper.make_node("Add", ["sum", "offset"], ["OUTPUT0"], name="add_offset"),
        helper.make_node("Sub", ["INPUT0", "INPUT1"], ["OUTPUT1"], name="sub"),
    ]
    model = _make_model(name, nodes, inputs, outputs, [offset_init])
    return _finish(
        repo,
        name,
        model,
        version=version,
        max_batch_size=max_batch_size,
        inputs=inputs,
        outputs=outputs,
        with_config=with_config,
        config_extra=config_extra,
    )


#: Bytes that are neither a valid ONNX model nor valid protobuf (a field number of 0 is illegal).
CORRUPT_MODEL_BYTES = b"\x00\xffthis is not an ONNX model\xff\xfe\x00" * 8


def write_corrupt_model(repo: Path, name: str, version: int = 1) -> WrittenModel:
    """Write garbage bytes as ``<repo>/<name>/<version>/model.onnx`` (no config)."""
    path = _model_path(repo, name, version)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(CORRUPT_MODEL_BYTES)
    return WrittenModel(
        name=name,
        version=version,
        model_dir=Path(repo) / name,
        model_path=path,
        config_path=None,
        max_batch_size=0,
    )


# --------------------------------------------------------------------------------------------
# Data helpers
# --------------------------------------------------------------------------------------------


def make_array(datatype: str, shape: Sequence[int], *, seed: int = 0) -> np.ndarray:
    """Deterministic example data of ``shape`` for a v2 ``datatype``.

    Integers span the dtype's full range, floats are standard normal, BOOL is random and
    BYTES is an ``object`` array of ``bytes`` (ASCII and multi-byte UTF-8, including ``b""``).
    BF16 has no numpy dtype; it returns FP32 values (what tritonclient expects for BF16).
    """
    _check_datatype(datatype)
    rng = np.random.default_rng(seed)
    shape = tuple(shape)
    if datatype == "BYTES":
        words = [b"", b"tensorgate", b"caf\xc3\xa9", b"\xe6\x97\xa5\xe6\x9c\xac", b"a b\tc"]
        picks = rng.integers(0, len(words), size=shape)
        out = np.empty(shape, dtype=np.object_)
        for index, pick in np.ndenumerate(picks):
            out[index] = words[int(pick)]
        return out
    if datatype == "BOOL":
        return rng.integers(0, 2, size=shape).astype(np.bool_)
    if datatype == "BF16":
        return rng.standard_normal(shape).astype(np.float32)
    dtype = NUMPY_DTYPES[datatype]
    if dtype.kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True)


def onnxruntime_can_run(datatype: str) -> bool:
    """Run an Identity model of ``datatype`` in onnxruntime (CPU) and compare the result.

    Returns False when the model cannot be loaded or run with numpy arrays.  BYTES outputs
    come back as ``str``; they are compared after UTF-8 decoding the input.
    """
    import onnxruntime as ort

    _check_datatype(datatype)
    if datatype not in NUMPY_DTYPES:
        return False
    spec = (TensorSpec("INPUT0", datatype, (-1, IDENTITY_ELEMENT_COUNT)),)
    out_spec = (TensorSpec("OUTPUT0", datatype, (-1, IDENTITY_ELEMENT_COUNT)),)
    node = helper.make_node("Identity", ["INPUT0"], ["OUTPUT0"])
    model = _make_model("probe", [node], spec, out_spec)
    data = make_array(datatype, (3, IDENTITY_ELEMENT_COUNT), seed=1)
    feed = data
    if datatype == "BYTES":
        feed = np.vectorize(lambda b: b.decode("utf-8"), otypes=[np.object_])(data)
    try:
        session = ort.InferenceSession(
            model.SerializeToString(), providers=["CPUExecutionProvider"]
        )
        (result,) = session.run(None, {"INPUT0": feed})
    except Exception:
        return False
    return (
        result.dtype == feed.dtype and result.shape == feed.shape and bool((result == feed).all())
    )
