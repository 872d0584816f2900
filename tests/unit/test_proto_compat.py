"""Our protocol stubs (server._proto) must be wire-identical to tritonclient's.

tritonclient registers its grpc_service.proto / model_config.proto (package ``inference``) in
protobuf's default descriptor pool, and so do our stubs, so the two sets of symbols cannot be
loaded into one process ("duplicate symbol"). This module therefore imports only OUR stubs;
everything that needs tritonclient runs in a subprocess (``sys.executable -c ...``) and talks
to the test through JSON on stdin/stdout.

tritonclient is a test dependency: if it is missing the subprocess fails and so do the tests
(they never skip).
"""

from __future__ import annotations

import base64
import inspect
import json
import subprocess
import sys
import textwrap
from typing import Any

import numpy as np
import pytest
from google.protobuf import text_format

from server._proto import grpc_service_pb2, grpc_service_pb2_grpc, model_config_pb2

SERVICE = "inference.GRPCInferenceService"


def _describe_files(file_descriptors: list[Any]) -> dict[str, Any]:
    """Describe every message (nested included), enum and service method of the given files.

    Self-contained (only local imports, JSON-safe output) because its source is also run, via
    inspect.getsource, in the subprocess that loads tritonclient's stubs.
    """
    from google.protobuf.descriptor import FieldDescriptor

    type_names = {
        getattr(FieldDescriptor, attr): attr[len("TYPE_") :].lower()
        for attr in dir(FieldDescriptor)
        if attr.startswith("TYPE_")
    }
    messages: dict[str, Any] = {}
    enums: dict[str, Any] = {}
    methods: dict[str, Any] = {}

    def enum(e: Any) -> None:
        enums[e.full_name] = {
            "values": {v.name: v.number for v in e.values},
            "containing_type": e.containing_type.full_name if e.containing_type else None,
        }

    def field(f: Any) -> dict[str, Any]:
        oneof = f.containing_oneof
        msg_type = f.message_type
        return {
            "number": f.number,
            "type": type_names[f.type],
            "label": "repeated" if f.is_repeated else "required" if f.is_required else "optional",
            "message_type": msg_type.full_name if msg_type else None,
            "enum_type": f.enum_type.full_name if f.enum_type else None,
            "oneof": oneof.name if oneof is not None else None,
            "map": bool(msg_type and msg_type.GetOptions().map_entry),
            "has_presence": f.has_presence,
            "packed": f.is_packed,
            "json_name": f.json_name,
            "default": repr(f.default_value),
        }

    def message(m: Any) -> None:
        messages[m.full_name] = {
            "fields": {f.name: field(f) for f in m.fields},
            "oneofs": {o.name: sorted(f.name for f in o.fields) for o in m.oneofs},
            "map_entry": m.GetOptions().map_entry,
            "nested_types": sorted(n.name for n in m.nested_types),
            "enum_types": sorted(e.name for e in m.enum_types),
            "containing_type": m.containing_type.full_name if m.containing_type else None,
        }
        for e in m.enum_types:
            enum(e)
        for n in m.nested_types:
            message(n)

    for fd in file_descriptors:
        for m in fd.message_types_by_name.values():
            message(m)
        for e in fd.enum_types_by_name.values():
            enum(e)
        for s in fd.services_by_name.values():
            for meth in s.methods:
                methods[meth.full_name] = {
                    "input_type": meth.input_type.full_name,
                    "output_type": meth.output_type.full_name,
                    "client_streaming": meth.client_streaming,
                    "server_streaming": meth.server_streaming,
                }
    return {
        "packages": sorted({fd.package for fd in file_descriptors}),
        "messages": messages,
        "enums": enums,
        "methods": methods,
    }


def _run_tritonclient(body: str, payload: Any = None) -> Any:
    """Run `body` in a fresh interpreter with tritonclient's stubs imported; return its JSON.

    The body sees `service_pb2`, `model_config_pb2`, `payload` (decoded JSON from stdin) and
    `_describe_files`, and must assign the JSON-able result to `result`.
    """
    script = "\n".join(
        [
            "from __future__ import annotations",
            "import base64, json, sys",
            "from typing import Any",
            "import numpy as np",
            "from tritonclient.grpc import model_config_pb2, service_pb2",
            inspect.getsource(_describe_files),
            "payload = json.loads(sys.stdin.read())",
            textwrap.dedent(body),
            "sys.stdout.write(json.dumps(result))",
        ]
    )
    proc = subprocess.run(
        [sys.executable, "-c", script],
        input=json.dumps(payload),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, (
        "tritonclient subprocess failed (tritonclient[grpc] is a test dependency):\n" + proc.stderr
    )
    return json.loads(proc.stdout)


def _diff(theirs: Any, ours: Any, path: str = "") -> list[str]:
    """Every difference between two JSON-like trees, as readable lines."""
    if isinstance(theirs, dict) and isinstance(ours, dict):
        out: list[str] = []
        for key in sorted(set(theirs) | set(ours)):
            sub = f"{path}.{key}" if path else key
            if key not in ours:
                out.append(f"{sub}: missing in ours (triton: {json.dumps(theirs[key])})")
            elif key not in theirs:
                out.append(f"{sub}: only in ours ({json.dumps(ours[key])})")
            else:
                out.extend(_diff(theirs[key], ours[key], sub))
        return out
    if theirs != ours:
        return [f"{path}: triton {json.dumps(theirs)} != ours {json.dumps(ours)}"]
    return []


@pytest.fixture(scope="module")
def triton_schema() -> dict[str, Any]:
    return _run_tritonclient(
        "result = _describe_files([model_config_pb2.DESCRIPTOR, service_pb2.DESCRIPTOR])"
    )


@pytest.fixture(scope="module")
def our_schema() -> dict[str, Any]:
    # JSON round trip so both sides have exactly the same value types.
    described = _describe_files([model_config_pb2.DESCRIPTOR, grpc_service_pb2.DESCRIPTOR])
    return json.loads(json.dumps(described))


def test_schema_is_identical_to_tritonclient(triton_schema, our_schema):
    # Sanity: the dump really walked Triton's whole tree.
    assert len(triton_schema["methods"]) == 20
    assert "inference.ModelConfig" in triton_schema["messages"]
    assert (
        "inference.ModelOptimizationPolicy.Cuda.GraphSpec.LowerBound" in (triton_schema["messages"])
    )

    differences = _diff(triton_schema, our_schema)
    assert not differences, (
        f"{len(differences)} difference(s) between tritonclient's descriptors and ours:\n"
        + "\n".join(differences)
    )


def test_file_layout_and_imports():
    assert grpc_service_pb2.DESCRIPTOR.package == "inference"
    assert model_config_pb2.DESCRIPTOR.package == "inference"
    assert grpc_service_pb2.DESCRIPTOR.name == "server/_proto/grpc_service.proto"
    assert [d.name for d in grpc_service_pb2.DESCRIPTOR.dependencies] == [
        "server/_proto/model_config.proto"
    ]
    # The generated import resolved to our package module, not a top-level one.
    field = grpc_service_pb2.ModelConfigResponse.DESCRIPTOR.fields_by_name["config"]
    assert field.message_type is model_config_pb2.ModelConfig.DESCRIPTOR
    assert "model_config_pb2" not in sys.modules
    # Stubs for every RPC exist, under the wire path clients use.
    assert hasattr(grpc_service_pb2_grpc, "GRPCInferenceServiceStub")
    assert hasattr(grpc_service_pb2_grpc, "add_GRPCInferenceServiceServicer_to_server")
    service = grpc_service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    assert service.full_name == SERVICE


_TRITON_BUILDS_REQUEST = """
import tritonclient.grpc as grpcclient
from tritonclient.grpc import _utils
from tritonclient.utils import serialize_byte_tensor

fp32 = np.arange(12, dtype=np.float32).reshape(2, 6) / 3
i64 = np.array([[-1, 2**40, 7]], dtype=np.int64)
strs = np.array([b"hello", b"", "w\\u00f6rld".encode()], dtype=np.object_)
flags = np.array([True, False, True, True], dtype=bool)
inputs = [
    grpcclient.InferInput("INPUT0", list(fp32.shape), "FP32"),
    grpcclient.InferInput("INPUT1", list(i64.shape), "INT64"),
    grpcclient.InferInput("TEXT", list(strs.shape), "BYTES"),
    grpcclient.InferInput("MASK", list(flags.shape), "BOOL"),
]
inputs[0].set_data_from_numpy(fp32)
inputs[1].set_data_from_numpy(i64)
inputs[2].set_data_from_numpy(strs)
inputs[3].set_data_from_numpy(flags)
outputs = [
    grpcclient.InferRequestedOutput("OUTPUT0"),
    grpcclient.InferRequestedOutput("LABELS", class_count=3),
]
request = _utils._get_inference_request(
    model_name="resnet",
    inputs=inputs,
    model_version="3",
    request_id="req-42",
    outputs=outputs,
    sequence_id=99,
    sequence_start=True,
    sequence_end=False,
    priority=5,
    timeout=250000,
    parameters={"custom_str": "x", "custom_bool": True, "custom_int": -7, "custom_f": 0.25},
)
request.inputs[0].parameters["shared_memory_region"].string_param = "region0"
result = {
    "wire": base64.b64encode(request.SerializeToString(deterministic=True)).decode(),
    "raw": [base64.b64encode(b).decode() for b in
            (fp32.tobytes(), i64.tobytes(), serialize_byte_tensor(strs).item(), flags.tobytes())],
}
"""


def test_infer_request_built_by_tritonclient_parses_with_ours():
    produced = _run_tritonclient(_TRITON_BUILDS_REQUEST)
    wire = base64.b64decode(produced["wire"])

    req = grpc_service_pb2.ModelInferRequest()
    req.ParseFromString(wire)
    assert req.model_name == "resnet"
    assert req.model_version == "3"
    assert req.id == "req-42"

    assert [(t.name, t.datatype, list(t.shape)) for t in req.inputs] == [
        ("INPUT0", "FP32", [2, 6]),
        ("INPUT1", "INT64", [1, 3]),
        ("TEXT", "BYTES", [3]),
        ("MASK", "BOOL", [4]),
    ]
    assert req.inputs[0].parameters["shared_memory_region"].string_param == "region0"
    assert [base64.b64encode(b).decode() for b in req.raw_input_contents] == produced["raw"]
    np.testing.assert_array_equal(
        np.frombuffer(req.raw_input_contents[0], dtype="<f4").reshape(2, 6),
        np.arange(12, dtype=np.float32).reshape(2, 6) / 3,
    )
    assert np.frombuffer(req.raw_input_contents[1], dtype="<i8").tolist() == [-1, 2**40, 7]

    assert [o.name for o in req.outputs] == ["OUTPUT0", "LABELS"]
    assert req.outputs[1].parameters["classification"].int64_param == 3

    params = req.parameters
    expected = {
        "sequence_id": ("int64_param", 99),
        "sequence_start": ("bool_param", True),
        "sequence_end": ("bool_param", False),
        "priority": ("uint64_param", 5),
        "timeout": ("int64_param", 250000),
        "custom_str": ("string_param", "x"),
        "custom_bool": ("bool_param", True),
        "custom_int": ("int64_param", -7),
        "custom_f": ("double_param", 0.25),
    }
    assert set(params) == set(expected)
    for key, (kind, value) in expected.items():
        assert params[key].WhichOneof("parameter_choice") == kind, key
        assert getattr(params[key], kind) == value, key

    # Nothing was dropped as an unknown field: re-encoding gives the same bytes.
    assert req.SerializeToString(deterministic=True) == wire


_TRITON_READS_RESPONSE = """
from tritonclient.grpc import InferResult

results = {}
for key, wire in payload.items():
    if key == "stream":
        msg = service_pb2.ModelStreamInferResponse()
        msg.ParseFromString(base64.b64decode(wire))
        response = msg.infer_response
        results["stream_error"] = msg.error_message
    else:
        response = service_pb2.ModelInferResponse()
        response.ParseFromString(base64.b64decode(wire))
    res = InferResult(response)
    out = {
        "model_name": response.model_name,
        "model_version": response.model_version,
        "id": response.id,
        "params": {k: [v.WhichOneof("parameter_choice"),
                       getattr(v, v.WhichOneof("parameter_choice"))]
                   for k, v in response.parameters.items()},
        "reencoded": base64.b64encode(response.SerializeToString(deterministic=True)).decode(),
        "tensors": {},
    }
    for o in response.outputs:
        arr = res.as_numpy(o.name)
        if arr.dtype == np.object_:
            values = [v.decode() if isinstance(v, bytes) else v for v in arr.ravel().tolist()]
        else:
            values = arr.ravel().tolist()
        out["tensors"][o.name] = {"shape": list(arr.shape), "dtype": str(arr.dtype),
                                  "values": values}
    results[key] = out
result = results
"""


def _bytes_tensor(items: list[bytes]) -> bytes:
    return b"".join(len(b).to_bytes(4, "little") + b for b in items)


def test_infer_response_built_by_us_reads_in_tritonclient():
    resp = grpc_service_pb2.ModelInferResponse(model_name="m", model_version="2", id="abc")
    resp.parameters["sequence_end"].bool_param = True
    resp.parameters["note"].string_param = "n"
    outputs = [
        ("OUT_F", "FP32", [2, 2], np.array([1.5, -2, 0, 3.25], dtype="<f4").tobytes()),
        ("OUT_I", "INT64", [3], np.array([-5, 0, 2**50], dtype="<i8").tobytes()),
        ("OUT_B", "BOOL", [2], np.array([True, False]).tobytes()),
        ("OUT_S", "BYTES", [2], _bytes_tensor([b"ab", "\u00e9".encode()])),
    ]
    for name, datatype, shape, raw in outputs:
        resp.outputs.add(name=name, datatype=datatype, shape=shape)
        resp.raw_output_contents.append(raw)
    stream = grpc_service_pb2.ModelStreamInferResponse(error_message="", infer_response=resp)

    ours = resp.SerializeToString(deterministic=True)
    payload = {
        "unary": base64.b64encode(ours).decode(),
        "stream": base64.b64encode(stream.SerializeToString()).decode(),
    }
    seen = _run_tritonclient(_TRITON_READS_RESPONSE, payload)

    assert seen["stream_error"] == ""
    for key in ("unary", "stream"):
        got = seen[key]
        assert (got["model_name"], got["model_version"], got["id"]) == ("m", "2", "abc")
        assert got["params"] == {
            "sequence_end": ["bool_param", True],
            "note": ["string_param", "n"],
        }
        assert base64.b64decode(got["reencoded"]) == ours
        assert got["tensors"] == {
            "OUT_F": {"shape": [2, 2], "dtype": "float32", "values": [1.5, -2.0, 0.0, 3.25]},
            "OUT_I": {"shape": [3], "dtype": "int64", "values": [-5, 0, 2**50]},
            "OUT_B": {"shape": [2], "dtype": "bool", "values": [True, False]},
            "OUT_S": {"shape": [2], "dtype": "object", "values": ["ab", "\u00e9"]},
        }


# A config.pbtxt as written for Triton, touching most of the ModelConfig tree.
_TRITON_CONFIG_PBTXT = """
name: "everything"
platform: "onnxruntime_onnx"
backend: "onnxruntime"
runtime: "libtriton_onnxruntime.so"
max_batch_size: 8
version_policy { specific { versions: [1, 3] } }
input [
  {
    name: "INPUT0" data_type: TYPE_FP32 format: FORMAT_NCHW dims: [3, -1, -1]
    reshape { shape: [3, 224, 224] } allow_ragged_batch: true optional: false
  },
  { name: "LEN" data_type: TYPE_INT32 dims: [1] is_shape_tensor: true
    is_non_linear_format_io: false }
]
output [
  { name: "OUTPUT0" data_type: TYPE_FP16 dims: [1000] label_filename: "labels.txt"
    reshape { shape: [1, 1000] } },
  { name: "TEXT" data_type: TYPE_STRING dims: [-1] }
]
batch_input [{ kind: BATCH_ITEM_SHAPE_FLATTEN target_name: ["T"] data_type: TYPE_INT64
               source_input: ["INPUT0"] }]
batch_output [{ target_name: ["OUTPUT0"] kind: BATCH_SCATTER_WITH_INPUT_SHAPE
                source_input: ["INPUT0"] }]
optimization {
  graph { level: 1 }
  priority: PRIORITY_MAX
  cuda {
    graphs: true busy_wait_events: true output_copy_stream: true
    graph_spec [{
      batch_size: 4
      input { key: "INPUT0" value { dim: [3, 224, 224] } }
      graph_lower_bound { batch_size: 1 input { key: "INPUT0" value { dim: [3, 1, 1] } } }
    }]
  }
  execution_accelerators {
    gpu_execution_accelerator [{ name: "tensorrt"
      parameters { key: "precision_mode" value: "FP16" } }]
    cpu_execution_accelerator [{ name: "openvino" }]
  }
  input_pinned_memory { enable: false }
  output_pinned_memory { enable: true }
  gather_kernel_buffer_threshold: 2
  eager_batching: true
}
dynamic_batching {
  preferred_batch_size: [4, 8]
  max_queue_delay_microseconds: 100
  preserve_ordering: true
  priority_levels: 2
  default_priority_level: 1
  default_queue_policy { timeout_action: DELAY default_timeout_microseconds: 5
                         allow_timeout_override: true max_queue_size: 10 }
  priority_queue_policy { key: 2 value { timeout_action: REJECT max_queue_size: 3 } }
}
instance_group [
  { name: "g" kind: KIND_GPU count: 2 gpus: [0, 1] profile: ["0"] passive: false
    host_policy: "numa0"
    rate_limiter { resources [{ name: "R1" global: true count: 4 }] priority: 2 }
    secondary_devices [{ kind: KIND_NVDLA device_id: 1 }] },
  { kind: KIND_CPU count: 1 }
]
default_model_filename: "model.onnx"
cc_model_filenames { key: "8.0" value: "model_a100.onnx" }
metric_tags { key: "team" value: "vision" }
parameters { key: "intra_op_thread_count" value { string_value: "4" } }
model_warmup [{
  name: "w" batch_size: 2 count: 3
  inputs { key: "INPUT0" value { data_type: TYPE_FP32 dims: [3, 224, 224] random_data: true } }
  inputs { key: "LEN" value { data_type: TYPE_INT32 dims: [1] input_data_file: "len.bin" } }
}]
model_operations { op_library_filename: ["libcustom.so"] }
model_transaction_policy { decoupled: false }
model_repository_agents { agents [{ name: "checksum" parameters { key: "MD5" value: "x" } }] }
response_cache { enable: true }
model_metrics { metric_control [{ metric_identifier { family: "nv_inference_request_duration" }
                                  histogram_options { buckets: [0.5, 1, 10] } }] }
"""

_SEQUENCE_PBTXT = """
name: "seq" backend: "onnxruntime" max_batch_size: 4
sequence_batching {
  max_sequence_idle_microseconds: 5000000
  oldest { max_candidate_sequences: 4 preferred_batch_size: [2] max_queue_delay_microseconds: 10
           preserve_ordering: true }
  control_input [
    { name: "START" control [{ kind: CONTROL_SEQUENCE_START fp32_false_true: [0, 1] }] },
    { name: "CORRID" control [{ kind: CONTROL_SEQUENCE_CORRID data_type: TYPE_UINT64 }] },
    { name: "READY" control [{ kind: CONTROL_SEQUENCE_READY bool_false_true: [false, true] }] },
    { name: "END" control [{ kind: CONTROL_SEQUENCE_END int32_false_true: [0, 1] }] }
  ]
  state [{ input_name: "IN_S" output_name: "OUT_S" data_type: TYPE_FP32 dims: [-1]
           use_same_buffer_for_input_output: true use_growable_memory: true
           initial_state [{ name: "init" data_type: TYPE_FP32 dims: [1] zero_data: true }] }]
  iterative_sequence: false
}
"""

_ENSEMBLE_PBTXT = """
name: "ens" platform: "ensemble" max_batch_size: 1
ensemble_scheduling {
  max_inflight_requests: 2
  step [{ model_name: "a" model_version: -1 model_namespace: "ns"
          input_map { key: "x" value: "IN" } output_map { key: "y" value: "MID" } }]
}
"""

_TRITON_PARSES_CONFIG = """
from google.protobuf import text_format

result = {}
for key, item in payload.items():
    msg = service_pb2.ModelConfigResponse()
    msg.ParseFromString(base64.b64decode(item["wire"]))
    from_text = model_config_pb2.ModelConfig()
    text_format.Parse(item["pbtxt"], from_text)
    result[key] = {
        "text": text_format.MessageToString(msg.config),
        "same_as_triton_parse": msg.config == from_text,
        "reencoded": base64.b64encode(msg.SerializeToString(deterministic=True)).decode(),
    }
"""


def test_triton_config_pbtxt_parses_and_round_trips():
    payload = {}
    ours = {}
    for key, pbtxt in (
        ("full", _TRITON_CONFIG_PBTXT),
        ("sequence", _SEQUENCE_PBTXT),
        ("ensemble", _ENSEMBLE_PBTXT),
    ):
        config = text_format.Parse(pbtxt, model_config_pb2.ModelConfig())
        response = grpc_service_pb2.ModelConfigResponse(config=config)
        ours[key] = response
        wire = response.SerializeToString(deterministic=True)
        payload[key] = {"wire": base64.b64encode(wire).decode(), "pbtxt": pbtxt}

    assert ours["full"].config.WhichOneof("scheduling_choice") == "dynamic_batching"
    assert ours["sequence"].config.sequence_batching.WhichOneof("strategy_choice") == "oldest"
    assert ours["ensemble"].config.ensemble_scheduling.step[0].model_version == -1

    seen = _run_tritonclient(_TRITON_PARSES_CONFIG, payload)
    for key, response in ours.items():
        got = seen[key]
        assert got["same_as_triton_parse"], key
        assert got["text"] == text_format.MessageToString(response.config), key
        assert base64.b64decode(got["reencoded"]) == response.SerializeToString(
            deterministic=True
        ), key


class _EchoServicer(grpc_service_pb2_grpc.GRPCInferenceServiceServicer):
    """Just enough of the service, on our stubs, to be called by a real tritonclient."""

    def ServerLive(self, request, context):
        return grpc_service_pb2.ServerLiveResponse(live=True)

    def ModelInfer(self, request, context):
        return self._echo(request)

    def ModelStreamInfer(self, request_iterator, context):
        for request in request_iterator:
            yield grpc_service_pb2.ModelStreamInferResponse(infer_response=self._echo(request))

    @staticmethod
    def _echo(request):
        response = grpc_service_pb2.ModelInferResponse(
            model_name=request.model_name, model_version="1", id=request.id
        )
        for tensor, raw in zip(request.inputs, request.raw_input_contents, strict=True):
            response.outputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
            response.raw_output_contents.append(raw)
        return response


_TRITON_CALLS_SERVER = """
import queue
import tritonclient.grpc as grpcclient

client = grpcclient.InferenceServerClient(payload["url"])
live = client.is_server_live()
data = np.arange(6, dtype=np.float32).reshape(2, 3)
inp = grpcclient.InferInput("X", [2, 3], "FP32")
inp.set_data_from_numpy(data)
unary = client.infer("echo", [inp], request_id="u1")

answers = queue.Queue()
client.start_stream(callback=lambda result, error: answers.put((result, error)))
client.async_stream_infer("echo", [inp], request_id="s1")
streamed, error = answers.get(timeout=20)
client.stop_stream()
client.close()
result = {
    "live": live,
    "unary": [unary.get_response().id, unary.as_numpy("X").tolist()],
    "stream_error": None if error is None else str(error),
    "stream": [streamed.get_response().id, streamed.as_numpy("X").tolist()],
}
"""


def test_tritonclient_calls_a_server_built_on_our_stubs():
    """Method paths, unary and bidi-streaming shapes agree with what tritonclient calls."""
    from concurrent import futures

    import grpc

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    grpc_service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(_EchoServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        seen = _run_tritonclient(_TRITON_CALLS_SERVER, {"url": f"127.0.0.1:{port}"})
    finally:
        server.stop(grace=None)

    expected = np.arange(6, dtype=np.float32).reshape(2, 3).tolist()
    assert seen == {
        "live": True,
        "unary": ["u1", expected],
        "stream_error": None,
        "stream": ["s1", expected],
    }
