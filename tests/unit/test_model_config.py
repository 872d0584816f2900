"""server.model_config: config.pbtxt parsing, completion from the graph, derived settings."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from google.protobuf import text_format

from batching.config import BatchingConfig, QueuePolicy, TimeoutAction
from runtimes.base import RuntimeMetadata, TensorSpec
from runtimes.errors import ModelLoadError, TensorgateError
from runtimes.onnx import options_for
from server._proto import model_config_pb2 as mc
from server.models import config as model_config
from server.settings import BUNDLED_MODELS

TRITON_CONFIG = """
# A config written for Triton's onnxruntime backend.
name: "resnet"   # trailing comment
platform: "onnxruntime_onnx"
max_batch_size: 8
version_policy: { latest { num_versions: 2 } }
input [
  {
    name: "INPUT0"
    data_type: TYPE_FP32
    format: FORMAT_NCHW
    dims: [ 3, 224, 224 ]
  }
]
output [
  {
    name: "OUTPUT0"
    data_type: TYPE_FP32
    dims: [ 1000 ]
    label_filename: "labels.txt"
  }
]
instance_group [ { count: 2, kind: KIND_CPU } ]
dynamic_batching {
  preferred_batch_size: [ 4, 8 ]
  max_queue_delay_microseconds: 100
}
parameters { key: "intra_op_thread_count" value: { string_value: "2" } }
parameters: { key: "pad_value" value: { string_value: "-1" } }
"""


@contextmanager
def raises(cls: type[TensorgateError], *fragments: str) -> Iterator[None]:
    with pytest.raises(TensorgateError) as info:
        yield
    assert type(info.value) is cls, f"{type(info.value).__name__}: {info.value}"
    for fragment in fragments:
        assert fragment in str(info.value), f"{fragment!r} not in {str(info.value)!r}"


def graph(
    inputs: dict[str, tuple[str, tuple[int, ...]]],
    outputs: dict[str, tuple[str, tuple[int, ...]]],
) -> RuntimeMetadata:
    specs_in = tuple(TensorSpec(n, d, s) for n, (d, s) in inputs.items())
    specs_out = tuple(TensorSpec(n, d, s) for n, (d, s) in outputs.items())
    return RuntimeMetadata(
        inputs=specs_in,
        outputs=specs_out,
        supports_batching=all(s.shape and s.shape[0] == -1 for s in (*specs_in, *specs_out)),
        device="CPUExecutionProvider",
    )


# A batchable two-input graph and a fixed-shape one-input graph.
BATCH_GRAPH = graph(
    {"ids": ("INT64", (-1, -1)), "mask": ("INT64", (-1, -1))},
    {"embedding": ("FP32", (-1, 64)), "pooled": ("FP16", (-1, 8))},
)
FIXED_GRAPH = graph({"x": ("FP32", (4,))}, {"y": ("FP32", (4,))})


def parse(text: str) -> mc.ModelConfig:
    return text_format.Parse(text, mc.ModelConfig())


def complete(text: str | None, g: RuntimeMetadata = BATCH_GRAPH, name: str = "m"):
    given = parse(text) if text is not None else None
    return model_config.complete_config(given, name, g, default_max_batch_size=16)


def write(tmp_path: Path, text: str | bytes, model: str = "resnet") -> Path:
    path = tmp_path / model / "config.pbtxt"
    path.parent.mkdir(parents=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


# --------------------------------------------------------------------------------------------
# Reading config.pbtxt
# --------------------------------------------------------------------------------------------


def test_read_triton_style_config_with_comments(tmp_path: Path) -> None:
    config = model_config.read_config_file(write(tmp_path, TRITON_CONFIG))
    assert config.name == "resnet"
    assert config.platform == "onnxruntime_onnx"
    assert config.max_batch_size == 8
    assert config.version_policy.latest.num_versions == 2
    assert [(t.name, t.data_type, list(t.dims)) for t in config.input] == [
        ("INPUT0", mc.TYPE_FP32, [3, 224, 224])
    ]
    assert config.input[0].format == mc.ModelInput.FORMAT_NCHW
    assert config.output[0].label_filename == "labels.txt"
    assert config.instance_group[0].count == 2
    assert config.instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU
    assert list(config.dynamic_batching.preferred_batch_size) == [4, 8]
    assert config.dynamic_batching.max_queue_delay_microseconds == 100
    assert config.parameters["intra_op_thread_count"].string_value == "2"
    assert config.parameters["pad_value"].string_value == "-1"


@pytest.mark.parametrize("model", ["image_classifier", "text_encoder"])
def test_bundled_example_configs_parse(model: str) -> None:
    config = model_config.read_config_file(BUNDLED_MODELS / model / "config.pbtxt")
    assert config.name == model
    assert config.max_batch_size > 0
    assert config.HasField("dynamic_batching")


@pytest.mark.parametrize(
    "text",
    [
        'name: "resnet"\nmax_batch_size: eight\n',
        'name: "resnet"\nnot_a_field: 1\n',
        "input [ { name: 'x' ",
        "max_batch_size: 99999999999\n",
    ],
    ids=["bad-value", "unknown-field", "unterminated", "int32-overflow"],
)
def test_invalid_config_text_is_a_model_load_error(tmp_path: Path, text: str) -> None:
    with raises(ModelLoadError, "resnet/config.pbtxt is not a valid model config"):
        model_config.read_config_file(write(tmp_path, text))


def test_non_utf8_config_is_a_model_load_error(tmp_path: Path) -> None:
    with raises(ModelLoadError, "resnet/config.pbtxt is not a valid model config"):
        model_config.read_config_file(write(tmp_path, b'name: "caf\xe9"\n'))


# --------------------------------------------------------------------------------------------
# complete_config
# --------------------------------------------------------------------------------------------


def test_no_config_is_completed_from_a_batchable_graph() -> None:
    config = complete(None)
    assert config.name == "m"
    assert (config.platform, config.backend) == ("onnxruntime_onnx", "onnxruntime")
    assert config.max_batch_size == 16
    assert config.HasField("dynamic_batching")
    assert [(t.name, t.data_type, list(t.dims)) for t in config.input] == [
        ("ids", mc.TYPE_INT64, [-1]),
        ("mask", mc.TYPE_INT64, [-1]),
    ]
    assert [(t.name, t.data_type, list(t.dims)) for t in config.output] == [
        ("embedding", mc.TYPE_FP32, [64]),
        ("pooled", mc.TYPE_FP16, [8]),
    ]
    assert config.version_policy.latest.num_versions == 1
    assert [(g.count, g.kind) for g in config.instance_group] == [
        (1, mc.ModelInstanceGroup.KIND_CPU)
    ]
    assert config.default_model_filename == "model.onnx"


def test_no_config_for_a_fixed_shape_graph_does_not_batch() -> None:
    config = complete(None, FIXED_GRAPH)
    assert config.max_batch_size == 0
    assert not config.HasField("dynamic_batching")
    assert list(config.input[0].dims) == [4]
    assert list(config.output[0].dims) == [4]


def test_config_without_tensors_keeps_its_own_max_batch_size() -> None:
    config = complete("max_batch_size: 4\ninstance_group [ { count: 0, kind: KIND_AUTO } ]")
    assert config.max_batch_size == 4
    assert [list(t.dims) for t in config.input] == [[-1], [-1]]
    assert [(g.count, g.kind) for g in config.instance_group] == [
        (1, mc.ModelInstanceGroup.KIND_CPU)
    ]


def test_config_listing_only_inputs_gets_outputs_from_the_graph() -> None:
    config = complete(
        "max_batch_size: 8\n"
        'input [ { name: "ids" data_type: TYPE_INT64 dims: [ 128 ] },'
        ' { name: "mask" data_type: TYPE_INT64 dims: [ -1 ] } ]'
    )
    assert [list(t.dims) for t in config.input] == [[128], [-1]]
    assert [(t.name, list(t.dims)) for t in config.output] == [("embedding", [64]), ("pooled", [8])]
    assert not config.HasField("dynamic_batching")


def test_complete_config_does_not_modify_the_given_config() -> None:
    given = parse('name: "m"')
    before = given.SerializeToString(deterministic=True)
    model_config.complete_config(given, "m", BATCH_GRAPH, default_max_batch_size=16)
    assert given.SerializeToString(deterministic=True) == before


def test_explicit_version_policy_and_filename_are_kept() -> None:
    config = complete('version_policy: { all { } }\ndefault_model_filename: "net.onnx"')
    assert config.version_policy.WhichOneof("policy_choice") == "all"
    assert config.default_model_filename == "net.onnx"


@pytest.mark.parametrize("backend", ["", "onnxruntime"])
def test_platform_and_backend_may_be_left_out_or_match(backend: str) -> None:
    config = complete(f'backend: "{backend}"')
    assert (config.platform, config.backend) == ("onnxruntime_onnx", "onnxruntime")


def test_fixed_shape_config_dims_match_full_graph_shape() -> None:
    config = complete(
        'input [ { name: "x" data_type: TYPE_FP32 dims: [ 4 ] } ]\n'
        'output [ { name: "y" data_type: TYPE_FP32 dims: [ -1 ] } ]',
        FIXED_GRAPH,
    )
    assert config.max_batch_size == 0


def test_wrong_datatype_names_tensor_and_both_types() -> None:
    text = (
        "max_batch_size: 8\n"
        'input [ { name: "ids" data_type: TYPE_INT32 dims: [ -1 ] },'
        ' { name: "mask" data_type: TYPE_INT64 dims: [ -1 ] } ]'
    )
    with raises(ModelLoadError, "model 'm'", "input 'ids'", "TYPE_INT32", "graph has INT64"):
        complete(text)


def test_missing_data_type_is_type_invalid() -> None:
    with raises(ModelLoadError, "output 'y'", "TYPE_INVALID", "FP32"):
        complete('output [ { name: "y" dims: [ 4 ] } ]', FIXED_GRAPH)


def test_wrong_dims_name_tensor_and_both_shapes_without_batch_dim() -> None:
    text = 'max_batch_size: 8\noutput [ { name: "embedding" data_type: TYPE_FP32 dims: [ 32 ] } ]'
    with raises(
        ModelLoadError,
        "model 'm'",
        "config dims [32] of output 'embedding'",
        "graph's [64]",
        "dims exclude the batch dimension",
    ):
        complete(text)


def test_wrong_rank_is_a_dims_mismatch() -> None:
    text = 'output [ { name: "y" data_type: TYPE_FP32 dims: [ 1, 4 ] } ]'
    with raises(ModelLoadError, "config dims [1, 4] of output 'y'", "graph's [4]"):
        complete(text, FIXED_GRAPH)


def test_dims_including_batch_dimension_are_a_mismatch() -> None:
    text = (
        'max_batch_size: 8\noutput [ { name: "embedding" data_type: TYPE_FP32 dims: [ -1, 64 ] } ]'
    )
    with raises(ModelLoadError, "[-1, 64]", "graph's [64]", "exclude the batch dimension"):
        complete(text)


def test_unknown_input_lists_the_graph_inputs() -> None:
    text = 'max_batch_size: 8\ninput [ { name: "tokens" data_type: TYPE_INT64 dims: [ -1 ] } ]'
    with raises(ModelLoadError, "input 'tokens'", "does not have", "['ids', 'mask']"):
        complete(text)


def test_unknown_output_lists_the_graph_outputs() -> None:
    text = 'max_batch_size: 8\noutput [ { name: "logits" data_type: TYPE_FP32 dims: [ 64 ] } ]'
    with raises(ModelLoadError, "output 'logits'", "['embedding', 'pooled']"):
        complete(text)


def test_config_missing_a_graph_input() -> None:
    text = 'max_batch_size: 8\ninput [ { name: "ids" data_type: TYPE_INT64 dims: [ -1 ] } ]'
    with raises(ModelLoadError, "model 'm'", "does not list graph input(s) ['mask']"):
        complete(text)


def test_config_may_list_a_subset_of_outputs() -> None:
    text = 'max_batch_size: 8\noutput [ { name: "pooled" data_type: TYPE_FP16 dims: [ 8 ] } ]'
    assert [t.name for t in complete(text).output] == ["pooled"]


def test_batching_on_a_graph_without_a_variable_first_dimension() -> None:
    with raises(ModelLoadError, "model 'm'", "max_batch_size 4", "variable first dimension"):
        complete("max_batch_size: 4", FIXED_GRAPH)


def test_batching_when_only_one_tensor_lacks_the_batch_dimension() -> None:
    partly = graph({"a": ("FP32", (-1, 2))}, {"b": ("FP32", (2,))})
    with raises(ModelLoadError, "max_batch_size 2", "variable first dimension"):
        complete("max_batch_size: 2", partly)
    assert complete(None, partly).max_batch_size == 0


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ('platform: "tensorrt_plan"', ["platform 'tensorrt_plan'", "'onnxruntime_onnx'"]),
        (
            'platform: "onnxruntime_onnx"\nbackend: "python"',
            ["platform 'onnxruntime_onnx' and backend 'python' disagree"],
        ),
    ],
)
def test_wrong_platform_or_backend(text: str, fragments: list[str]) -> None:
    with raises(ModelLoadError, "model 'm'", *fragments):
        complete(text)


def test_an_unknown_backend_is_named_with_the_ones_available() -> None:
    from runtimes.registry import runtime_factory

    assert model_config.backend_of(parse('backend: "pytorch"')) == "pytorch"
    with raises(ModelLoadError, "no runtime 'pytorch'", "onnxruntime", "python"):
        runtime_factory("pytorch")


def test_config_name_must_match_directory() -> None:
    with raises(ModelLoadError, "names the model 'other'", "directory is 'm'"):
        complete('name: "other"')


# --------------------------------------------------------------------------------------------
# unsupported_fields
# --------------------------------------------------------------------------------------------


def test_plain_completed_config_has_no_unsupported_fields() -> None:
    assert model_config.unsupported_fields(complete(None)) == []


def test_known_parameters_are_supported() -> None:
    text = "".join(
        f'parameters {{ key: "{key}" value: {{ string_value: "1" }} }}\n'
        for key in sorted(model_config.KNOWN_PARAMETERS)
    )
    assert model_config.unsupported_fields(parse(text)) == []


def test_unsupported_fields_are_listed() -> None:
    config = parse(
        """
        model_warmup [ { name: "w" batch_size: 1 } ]
        response_cache { enable: true }
        optimization { graph { level: 1 } }
        model_transaction_policy { decoupled: true }
        input [ { name: "x" data_type: TYPE_FP32 dims: [ 4 ]
                  reshape { shape: [ 2, 2 ] } allow_ragged_batch: true optional: true } ]
        output [ { name: "y" data_type: TYPE_FP32 dims: [ 4 ] is_shape_tensor: true } ]
        instance_group [ { count: 1 kind: KIND_GPU gpus: [ 0 ] },
                         { count: 1 kind: KIND_CPU rate_limiter { priority: 1 } } ]
        parameters { key: "zeta" value: { string_value: "1" } }
        parameters { key: "alpha" value: { string_value: "1" } }
        parameters { key: "pad_value" value: { string_value: "1" } }
        """
    )
    assert model_config.unsupported_fields(config) == [
        "model_transaction_policy",
        "response_cache",
        "x.reshape",
        "x.allow_ragged_batch",
        "x.optional",
        "y.is_shape_tensor",
        "instance_group.rate_limiter",
        "optimization.graph",
        "parameters.alpha",
        "parameters.zeta",
    ]


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("model_transaction_policy { decoupled: true }", "decoupled mode"),
        ("sequence_batching { max_sequence_idle_microseconds: 100 }", "sequence batching"),
    ],
)
def test_modes_that_would_leave_clients_waiting_are_refused(text: str, words: str) -> None:
    with pytest.raises(ModelLoadError, match=f"model 'm': {words} .* is not supported"):
        model_config.refuse_unsupported_modes(parse(text), "m")
    not_decoupled = parse("model_transaction_policy { decoupled: false }")
    model_config.refuse_unsupported_modes(not_decoupled, "m")  # loads (with a warning)


# --------------------------------------------------------------------------------------------
# signature_of
# --------------------------------------------------------------------------------------------


def test_signature_has_protocol_datatypes_and_dims_without_batch() -> None:
    signature = model_config.signature_of(complete(None))
    assert signature.max_batch_size == 16
    assert signature.inputs == (
        TensorSpec("ids", "INT64", (-1,)),
        TensorSpec("mask", "INT64", (-1,)),
    )
    assert signature.outputs == (
        TensorSpec("embedding", "FP32", (64,)),
        TensorSpec("pooled", "FP16", (8,)),
    )
    assert signature.full_shape(signature.outputs[0]) == (-1, 64)


def test_signature_of_a_fixed_shape_model() -> None:
    signature = model_config.signature_of(complete(None, FIXED_GRAPH))
    assert signature.max_batch_size == 0
    assert signature.full_shape(signature.inputs[0]) == (4,)


def test_signature_maps_type_string_to_bytes_and_bf16() -> None:
    text_graph = graph({"t": ("BYTES", (-1,))}, {"e": ("BF16", (-1, 2))})
    signature = model_config.signature_of(complete(None, text_graph))
    assert signature.inputs == (TensorSpec("t", "BYTES", ()),)
    assert signature.outputs == (TensorSpec("e", "BF16", (2,)),)


# --------------------------------------------------------------------------------------------
# batching_config_of and other derived settings
# --------------------------------------------------------------------------------------------


def batching(extra: str, batch_size: int = 8) -> BatchingConfig:
    return model_config.batching_config_of(complete(f"max_batch_size: {batch_size}\n{extra}"))


def test_batching_defaults() -> None:
    config = batching("")
    assert config.max_batch_size == 8
    assert config.max_queue_delay_us == 0
    assert config.preferred_batch_sizes == ()
    assert config.preserve_ordering is False
    assert (config.priority_levels, config.default_priority_level) == (1, 1)
    assert config.default_queue_policy == QueuePolicy()
    assert config.priority_queue_policies == {}
    assert config.padded_inputs == config.sliced_outputs == frozenset()
    assert (config.pad_value, config.max_queued_requests, config.latency_target_p99_us) == (
        0,
        BatchingConfig().max_queued_requests,
        0,
    )


def test_dynamic_batching_settings_are_carried_over() -> None:
    config = batching(
        "dynamic_batching { preferred_batch_size: [ 8, 2, 4 ] max_queue_delay_microseconds: 500"
        " preserve_ordering: true }"
    )
    assert config.preferred_batch_sizes == (2, 4, 8)
    assert config.max_queue_delay_us == 500
    assert config.preserve_ordering is True


@pytest.mark.parametrize(("levels", "default"), [(0, 1), (1, 1), (2, 1), (3, 2), (4, 2), (5, 3)])
def test_default_priority_level_is_the_middle_level(levels: int, default: int) -> None:
    config = batching(f"dynamic_batching {{ priority_levels: {levels} }}")
    assert config.priority_levels == max(1, levels)
    assert config.default_priority_level == default


def test_explicit_default_priority_level() -> None:
    config = batching("dynamic_batching { priority_levels: 4 default_priority_level: 4 }")
    assert (config.priority_levels, config.default_priority_level) == (4, 4)


@pytest.mark.parametrize(
    ("extra", "level", "levels"),
    [
        ("priority_levels: 3 default_priority_level: 4", 4, 3),
        ("default_priority_level: 2", 2, 1),
    ],
)
def test_default_priority_level_out_of_range(extra: str, level: int, levels: int) -> None:
    with raises(ModelLoadError, "model 'm'", f"default_priority_level {level}", f"1..{levels}"):
        batching(f"dynamic_batching {{ {extra} }}")


def test_queue_policies() -> None:
    config = batching(
        """
        dynamic_batching {
          priority_levels: 3
          default_queue_policy { max_queue_size: 10 default_timeout_microseconds: 1000 }
          priority_queue_policy {
            key: 1
            value: { timeout_action: DELAY default_timeout_microseconds: 5
                     allow_timeout_override: true max_queue_size: 2 }
          }
          priority_queue_policy { key: 3 value: { } }
        }
        """
    )
    assert config.default_queue_policy == QueuePolicy(max_queue_size=10, default_timeout_us=1000)
    assert config.priority_queue_policies == {
        1: QueuePolicy(
            max_queue_size=2,
            default_timeout_us=5,
            allow_timeout_override=True,
            timeout_action=TimeoutAction.DELAY,
        ),
        3: QueuePolicy(),
    }
    assert config.queue_policy(2) == config.default_queue_policy
    assert config.queue_policy(1).timeout_action is TimeoutAction.DELAY


@pytest.mark.parametrize("level", [0, 3])
def test_priority_queue_policy_outside_the_priority_levels_is_rejected(level: int) -> None:
    # Triton rejects this config ("priority queue policy must have priority level in range
    # [1, priority_levels]"); accepting it would silently ignore the policy.
    text = (
        f"dynamic_batching {{ priority_levels: 2 priority_queue_policy {{ key: {level} "
        "value: { max_queue_size: 1 } } }"
    )
    with raises(ModelLoadError, "model 'm'", str(level)):
        batching(text)


@pytest.mark.parametrize("size", [0, -2, 9])
def test_preferred_batch_size_outside_one_to_max_batch_size_is_rejected(size: int) -> None:
    # Triton: "dynamic batching preferred size must be positive" / "must be <= max batch size".
    with raises(ModelLoadError, "model 'm'", "preferred", str(size)):
        batching(f"dynamic_batching {{ preferred_batch_size: [ 4, {size} ] }}")


def param(key: str, value: str) -> str:
    return f'parameters {{ key: "{key}" value: {{ string_value: "{value}" }} }}\n'


def test_pad_inputs_and_slice_outputs() -> None:
    config = batching(param("pad_inputs", "ids, mask") + param("slice_outputs", "embedding"))
    assert config.padded_inputs == frozenset({"ids", "mask"})
    assert config.sliced_outputs == frozenset({"embedding"})


def test_pad_inputs_tolerates_a_trailing_comma() -> None:
    assert batching(param("pad_inputs", "ids,")).padded_inputs == frozenset({"ids"})


def test_pad_inputs_tolerates_a_trailing_comma_followed_by_a_space() -> None:
    # "ids, mask, " is the same list as "ids, mask"; the empty last name is not an input.
    config = batching(param("pad_inputs", "ids, mask, "))
    assert config.padded_inputs == frozenset({"ids", "mask"})


def test_pad_inputs_naming_an_output_is_rejected() -> None:
    with raises(ModelLoadError, "model 'm'", "pad_inputs", "unknown inputs ['embedding']"):
        batching(param("pad_inputs", "ids,embedding"))


def test_slice_outputs_naming_an_unknown_output_is_rejected() -> None:
    with raises(ModelLoadError, "slice_outputs", "unknown outputs ['logits', 'zz']"):
        batching(param("slice_outputs", "zz, logits, pooled"))


def test_integer_parameters() -> None:
    config = batching(
        param("pad_value", "-1")
        + param("max_queued_requests", "64")
        + param("latency_target_p99_us", "20000")
    )
    assert (config.pad_value, config.max_queued_requests, config.latency_target_p99_us) == (
        -1,
        64,
        20_000,
    )


@pytest.mark.parametrize("key", ["pad_value", "max_queued_requests", "latency_target_p99_us"])
def test_non_integer_parameter_is_rejected(key: str) -> None:
    with raises(ModelLoadError, "model 'm'", f"parameter {key} must be an integer", "'1.5'"):
        batching(param(key, "1.5"))


def test_thread_counts_reach_the_runtime_and_instances_add_up() -> None:
    config = complete(
        param("intra_op_thread_count", "3")
        + param("inter_op_thread_count", "2")
        + "instance_group [ { count: 2 }, { count: 3 kind: KIND_CPU } ]"
    )
    (placement, *_) = model_config.placements_of(config)
    spec = model_config.runtime_spec_of(config, "m", Path("/models/m/1"), placement)
    options = options_for(spec)
    assert (options.intra_op_threads, options.inter_op_threads) == (3, 2)
    assert model_config.instance_count_of(config) == 5
    assert model_config.instance_count_of(mc.ModelConfig()) == 1


def test_the_retired_inline_compute_parameter_is_named_as_ignored() -> None:
    """Requests no longer run on an event loop, so the parameter that chose it does nothing:
    a config that still sets it is told so at load, not silently."""
    text = (
        'max_batch_size: 8\nparameters { key: "inline_compute_threshold_us" '
        'value { string_value: "250" } }'
    )
    assert "parameters.inline_compute_threshold_us" in model_config.unsupported_fields(
        complete(text)
    )
