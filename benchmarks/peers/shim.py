"""The ModelConfig RPC for servers that lack it (MLServer, KServe), added from outside.

perf_analyzer calls ModelConfig before it sends a request and gives up without it. Neither
MLServer nor KServe's Python server implements it, so their peer programs call `install()` before
the server is built: every `grpc.aio.server()` created afterwards gets one more generic handler,
which answers `/inference.GRPCInferenceService/ModelConfig` with the serialized
ModelConfigResponse from the spec (tensorgate's own answer for that model). Every other method
falls through to the server's own handlers. The handler works on raw bytes, so it needs no
generated stubs and cannot clash with the server's protobuf registrations.

`install()` also records the port the server binds and prints the harness's "listening for gRPC
on HOST:PORT" line once the server has started. `install_rest()` does the same for their REST
apps (GET /v2/models/NAME/config, for perf_analyzer -i http).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

import grpc
import grpc.aio

from benchmarks.peers.common import announce

MODEL_CONFIG_METHOD = "/inference.GRPCInferenceService/ModelConfig"


def _varint(data: bytes, offset: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[offset]
        offset += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, offset
        shift += 7


def request_model_name(data: bytes) -> str:
    """Field 1 (`name`, a string) of a serialized ModelConfigRequest."""
    offset = 0
    while offset < len(data):
        key, offset = _varint(data, offset)
        field, wire_type = key >> 3, key & 7
        if wire_type == 0:
            _, offset = _varint(data, offset)
        elif wire_type == 2:
            length, offset = _varint(data, offset)
            if field == 1:
                return data[offset : offset + length].decode()
            offset += length
        elif wire_type == 1:
            offset += 8
        elif wire_type == 5:
            offset += 4
        else:
            raise ValueError(f"unexpected wire type {wire_type}")
    return ""


class ModelConfigHandler(grpc.GenericRpcHandler):
    """Answers ModelConfig from pre-serialized responses; declines every other method."""

    def __init__(self, responses: Mapping[str, bytes]) -> None:
        self._responses = dict(responses)

    def service(self, handler_call_details):
        if handler_call_details.method != MODEL_CONFIG_METHOD:
            return None
        # No (de)serializers: the request arrives and the response leaves as bytes.
        return grpc.unary_unary_rpc_method_handler(self._model_config)

    async def _model_config(self, request: bytes, context) -> bytes:
        name = request_model_name(request)
        response = self._responses.get(name)
        if response is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown model {name!r}")
        return response


def install(
    responses: Mapping[str, bytes],
    bind_host: str | None = None,
    on_started: Callable[[str, int], None] = announce,
) -> None:
    """Patch `grpc.aio.server` so the next servers built answer ModelConfig and announce their
    port (the first insecure port bound) once started. With `bind_host`, every insecure port is
    bound on that host instead of the one the server asked for (KServe asks for [::])."""
    original = grpc.aio.server

    def server(*args, **kwargs):
        instance = original(*args, **kwargs)
        instance.add_generic_rpc_handlers((ModelConfigHandler(responses),))
        bound: list[tuple[str, int]] = []
        add_insecure_port, start = instance.add_insecure_port, instance.start

        def recording_add_insecure_port(address: str) -> int:
            host, _, port = address.rpartition(":")
            if bind_host is not None:
                host = f"[{bind_host}]" if ":" in bind_host else bind_host
            bound_port = add_insecure_port(f"{host}:{port}")
            bound.append((host.strip("[]"), bound_port))
            return bound_port

        async def announcing_start() -> None:
            await start()
            if bound:
                on_started(*bound[0])

        instance.add_insecure_port = recording_add_insecure_port
        instance.start = announcing_start
        return instance

    grpc.aio.server = server


_REST_CONFIG = re.compile(r"/v2/models/(?P<model>[^/]+)(?:/versions/[^/]+)?/config/?")


def install_rest(configs_json: Mapping[str, str]) -> None:
    """Patch FastAPI (the REST layer of MLServer and KServe) so that every app answers
    `GET /v2/models/NAME/config` with the JSON tensorgate gives for that model, which
    perf_analyzer -i http reads before its first request. Every other request goes to the app."""
    import fastapi

    original = fastapi.FastAPI.__call__

    async def call(self, scope, receive, send) -> None:
        found = None
        if scope["type"] == "http" and scope["method"] == "GET":
            found = _REST_CONFIG.fullmatch(scope["path"])
        if found is None or found["model"] not in configs_json:
            await original(self, scope, receive, send)
            return
        body = configs_json[found["model"]].encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    fastapi.FastAPI.__call__ = call
