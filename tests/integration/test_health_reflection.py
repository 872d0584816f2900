"""The standard gRPC health service and server reflection, as generic tools use them."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from tritonclient.grpc import model_config_pb2, service_pb2

from tests.support.server_process import ServerProcess

INFERENCE_SERVICE = "inference.GRPCInferenceService"
HEALTH_SERVICE = "grpc.health.v1.Health"
REFLECTION_SERVICE = "grpc.reflection.v1alpha.ServerReflection"
BUNDLED_MODELS = ("tabular_classifier", "image_classifier", "text_encoder")
SERVING = health_pb2.HealthCheckResponse.SERVING


@pytest.fixture(scope="module")
def channel(bundled_server: ServerProcess) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(bundled_server.url) as channel:
        yield channel


@pytest.fixture(scope="module")
def health(channel: grpc.Channel) -> health_pb2_grpc.HealthStub:
    return health_pb2_grpc.HealthStub(channel)


@pytest.fixture(scope="module")
def reflection(channel: grpc.Channel) -> reflection_pb2_grpc.ServerReflectionStub:
    return reflection_pb2_grpc.ServerReflectionStub(channel)


def _check(health: health_pb2_grpc.HealthStub, service: str) -> int:
    return health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status


def _reflect(
    reflection: reflection_pb2_grpc.ServerReflectionStub, **kwargs: str
) -> reflection_pb2.ServerReflectionResponse:
    request = reflection_pb2.ServerReflectionRequest(**kwargs)
    (response,) = list(reflection.ServerReflectionInfo(iter([request]), timeout=10))
    return response


def _files(
    response: reflection_pb2.ServerReflectionResponse,
) -> list[descriptor_pb2.FileDescriptorProto]:
    assert response.WhichOneof("message_response") == "file_descriptor_response", response
    return [
        descriptor_pb2.FileDescriptorProto.FromString(raw)
        for raw in response.file_descriptor_response.file_descriptor_proto
    ]


# health ----------------------------------------------------------------------------------------


def test_overall_health_is_serving(health: health_pb2_grpc.HealthStub):
    assert _check(health, "") == SERVING


def test_inference_service_health_is_serving(health: health_pb2_grpc.HealthStub):
    assert _check(health, INFERENCE_SERVICE) == SERVING


@pytest.mark.parametrize("model", BUNDLED_MODELS)
def test_model_health_is_serving(health: health_pb2_grpc.HealthStub, model: str):
    assert _check(health, model) == SERVING


def test_unknown_model_health_is_not_found(health: health_pb2_grpc.HealthStub):
    with pytest.raises(grpc.RpcError) as info:
        _check(health, "no_such_model")
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_health_watch_reports_serving(health: health_pb2_grpc.HealthStub):
    stream = health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=10)
    try:
        first = next(stream)
        assert first.status == SERVING
    finally:
        stream.cancel()


# reflection ------------------------------------------------------------------------------------


def test_reflection_lists_services(reflection: reflection_pb2_grpc.ServerReflectionStub):
    response = _reflect(reflection, list_services="")
    names = {service.name for service in response.list_services_response.service}
    assert {INFERENCE_SERVICE, HEALTH_SERVICE, REFLECTION_SERVICE} <= names


def test_reflection_file_containing_inference_service(
    reflection: reflection_pb2_grpc.ServerReflectionStub,
):
    files = _files(_reflect(reflection, file_containing_symbol=INFERENCE_SERVICE))
    main = files[0]
    assert main.package == "inference"
    (service,) = [s for s in main.service if s.name == "GRPCInferenceService"]
    methods = {m.name: m for m in service.method}
    infer = methods["ModelInfer"]
    assert (infer.input_type, infer.output_type) == (
        ".inference.ModelInferRequest",
        ".inference.ModelInferResponse",
    )
    stream = methods["ModelStreamInfer"]
    assert stream.client_streaming and stream.server_streaming
    assert stream.output_type == ".inference.ModelStreamInferResponse"
    for rpc in ("ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata"):
        assert rpc in methods


def test_reflection_file_containing_message_and_health(
    reflection: reflection_pb2_grpc.ServerReflectionStub,
):
    files = _files(_reflect(reflection, file_containing_symbol="inference.ModelInferRequest"))
    (request,) = [m for m in files[0].message_type if m.name == "ModelInferRequest"]
    assert {f.name: f.number for f in request.field}["raw_input_contents"] == 7

    files = _files(_reflect(reflection, file_containing_symbol=HEALTH_SERVICE))
    assert files[0].package == "grpc.health.v1"
    assert [s.name for s in files[0].service] == ["Health"]


def test_reflection_unknown_symbol_is_not_found(
    reflection: reflection_pb2_grpc.ServerReflectionStub,
):
    response = _reflect(reflection, file_containing_symbol="inference.NoSuchThing")
    assert response.WhichOneof("message_response") == "error_response"
    assert response.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]


def _messages(
    prefix: str, messages: object
) -> Iterator[tuple[str, descriptor_pb2.DescriptorProto]]:
    for message in messages:
        name = f"{prefix}.{message.name}"
        yield name, message
        yield from _messages(name, message.nested_type)


def test_reflected_schema_matches_tritonclient(
    reflection: reflection_pb2_grpc.ServerReflectionStub,
):
    """Every field both sides know has the same number, type and label; every RPC the server
    offers exists in tritonclient's service with the same request and response types."""
    served: dict[str, descriptor_pb2.DescriptorProto] = {}
    served_service = None
    for symbol in (INFERENCE_SERVICE, "inference.ModelConfig"):
        for file in _files(_reflect(reflection, file_containing_symbol=symbol)):
            served.update(_messages(f".{file.package}", file.message_type))
            for service in file.service:
                if service.name == "GRPCInferenceService":
                    served_service = service
    assert served_service is not None

    reference: dict[str, descriptor_pb2.DescriptorProto] = {}
    reference_service = None
    for module in (service_pb2, model_config_pb2):
        file = descriptor_pb2.FileDescriptorProto()
        module.DESCRIPTOR.CopyToProto(file)
        reference.update(_messages(f".{file.package}", file.message_type))
        for service in file.service:
            if service.name == "GRPCInferenceService":
                reference_service = service
    assert reference_service is not None

    mismatches = []
    compared = 0
    for name, message in served.items():
        theirs = {f.name: f for f in reference.get(name, descriptor_pb2.DescriptorProto()).field}
        for field in message.field:
            other = theirs.get(field.name)
            if other is None:
                continue
            compared += 1
            ours_key = (field.number, field.type, field.label, field.type_name)
            theirs_key = (other.number, other.type, other.label, other.type_name)
            if ours_key != theirs_key:
                mismatches.append(f"{name}.{field.name}: {ours_key} != {theirs_key}")
    assert not mismatches, "\n".join(mismatches)
    assert compared > 150, compared  # the comparison really covered the schema

    for key in ("ModelInferRequest", "ModelInferResponse", "ModelConfig", "ModelStatistics"):
        assert f".inference.{key}" in served, key

    reference_methods = {m.name: m for m in reference_service.method}
    for method in served_service.method:
        other = reference_methods.get(method.name)
        assert other is not None, method.name
        assert (method.input_type, method.output_type) == (other.input_type, other.output_type)
        assert (method.client_streaming, method.server_streaming) == (
            other.client_streaming,
            other.server_streaming,
        )
