"""The v2 REST endpoints (KServe's Open Inference Protocol with Triton's extensions) as plain
functions of a request, independent of the HTTP server that carries them.

Each route names the scope its caller needs (server/security/tokens.py) and whether it is quick
enough to answer on the server's event loop; the others run on the front ends' shared handler
threads (server/grpc_api/threads.py), where a request may wait for its batch. Errors leave as
`{"error": "..."}` with the HTTP status Triton answers the same case with (`status_of`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import orjson

from batching.waiter import BlockingHooks, Waiter
from runtimes.errors import ErrorKind, InvalidInputError, TensorgateError
from server import __version__
from server.dataplane.errors import UnsupportedError
from server.dataplane.inference import DEFAULT_LIMITS, Call, RequestLimits
from server.dataplane.plane import DataPlane
from server.http_api import codec, protojson
from server.observability.stats import Duration
from server.security.tokens import ADMIN, INFER

SERVER_NAME = "tensorgate"
EXTENSIONS = (
    "binary_tensor_data",
    "classification",
    "model_configuration",
    "model_repository",
    "statistics",
    "schedule_policy",
    "system_shared_memory",
)
OPEN = ""  # a route anyone may call (health, readiness), as probes need
JSON = "application/json"
BINARY = "application/octet-stream"
HEADER_LENGTH = "inference-header-content-length"

# Triton's HTTP status for each error kind (its HttpCodeFromError), and for the kinds Triton
# does not have, the status that says the same to an HTTP client.
STATUS_OF_KIND = {
    ErrorKind.INVALID_ARGUMENT: 400,
    ErrorKind.NOT_FOUND: 404,
    ErrorKind.ALREADY_EXISTS: 400,
    ErrorKind.UNAVAILABLE: 503,
    ErrorKind.UNIMPLEMENTED: 501,
    ErrorKind.FAILED_PRECONDITION: 400,
    ErrorKind.RESOURCE_EXHAUSTED: 429,
    ErrorKind.DEADLINE_EXCEEDED: 504,
    ErrorKind.CANCELLED: 400,
    ErrorKind.UNAUTHENTICATED: 401,
    ErrorKind.PERMISSION_DENIED: 403,
    ErrorKind.INTERNAL: 500,
}
INTERNAL_MESSAGE = "internal server error; the server log has the details"


def status_of(error: BaseException) -> tuple[int, str]:
    if isinstance(error, TensorgateError):
        return STATUS_OF_KIND.get(error.kind, 500), str(error)
    return 500, INTERNAL_MESSAGE


@dataclass(slots=True)
class HttpRequest:
    method: str
    path: str
    headers: Mapping[str, str]  # lower-case names
    body: bytes
    peer: str = ""
    params: dict[str, str] = field(default_factory=dict)  # from the path


@dataclass(slots=True)
class HttpResponse:
    status: int
    chunks: list[bytes | memoryview]
    content_type: str = JSON
    headers: list[tuple[str, str]] = field(default_factory=list)


def json_response(value: object, status: int = 200) -> HttpResponse:
    return HttpResponse(status, [orjson.dumps(value)])


def error_response(status: int, message: str) -> HttpResponse:
    return HttpResponse(status, [orjson.dumps({"error": message})])


def empty(status: int = 200) -> HttpResponse:
    return HttpResponse(status, [])


Handler = Callable[[HttpRequest], HttpResponse]


@dataclass(frozen=True)
class Route:
    method: str
    pattern: re.Pattern[str]
    name: str  # as metrics and the audit log name it
    scope: str  # OPEN, INFER or ADMIN
    inline: bool  # quick: answered on the event loop
    handler: Handler


_MODEL = r"/v2/models/(?P<model>[^/]+)(?:/versions/(?P<version>[^/]+))?"
_REGION = r"(?:/region/(?P<region>[^/]+))?"


class Routes:
    def __init__(
        self,
        plane: DataPlane,
        *,
        hooks: BlockingHooks | None = None,
        limits: RequestLimits = DEFAULT_LIMITS,
        trace_headers: bool = False,
    ) -> None:
        """hooks: the handler threads' run slots, lent while a request waits or computes."""
        self._plane = plane
        self._hooks = hooks
        self._limits = limits
        self._trace_headers = trace_headers
        table: list[tuple[str, str, str, str, bool, Handler]] = [
            ("GET", r"/v2/health/live", "health/live", OPEN, True, self.live),
            ("GET", r"/v2/health/ready", "health/ready", OPEN, True, self.ready),
            ("GET", r"/v2", "server metadata", INFER, True, self.server_metadata),
            # Before model metadata, which would take "stats" for a model name.
            ("GET", r"/v2/models/stats", "model stats", INFER, True, self.statistics),
            ("GET", _MODEL, "model metadata", INFER, True, self.model_metadata),
            ("GET", _MODEL + r"/ready", "model ready", OPEN, True, self.model_ready),
            ("GET", _MODEL + r"/config", "model config", INFER, True, self.model_config),
            ("GET", _MODEL + r"/stats", "model stats", INFER, True, self.statistics),
            ("POST", _MODEL + r"/infer", "infer", INFER, False, self.infer),
            ("POST", r"/v2/repository/index", "repository index", INFER, False, self.index),
            (
                "POST",
                r"/v2/repository/models/(?P<model>[^/]+)/load",
                "repository load",
                ADMIN,
                False,
                self.load,
            ),
            (
                "POST",
                r"/v2/repository/models/(?P<model>[^/]+)/unload",
                "repository unload",
                ADMIN,
                False,
                self.unload,
            ),
            (
                "GET",
                r"/v2/systemsharedmemory" + _REGION + r"/status",
                "system shared memory status",
                INFER,
                True,
                self.shm_status,
            ),
            (
                "POST",
                r"/v2/systemsharedmemory/region/(?P<region>[^/]+)/register",
                "system shared memory register",
                ADMIN,
                False,
                self.shm_register,
            ),
            (
                "POST",
                r"/v2/systemsharedmemory" + _REGION + r"/unregister",
                "system shared memory unregister",
                ADMIN,
                False,
                self.shm_unregister,
            ),
            (
                "GET",
                r"/v2/cudasharedmemory" + _REGION + r"/status",
                "cuda shared memory status",
                INFER,
                True,
                self.cuda_shm_status,
            ),
            (
                "POST",
                r"/v2/cudasharedmemory" + _REGION + r"/register",
                "cuda shared memory register",
                ADMIN,
                False,
                self.cuda_shm_register,
            ),
            (
                "POST",
                r"/v2/cudasharedmemory" + _REGION + r"/unregister",
                "cuda shared memory unregister",
                ADMIN,
                False,
                self.cuda_shm_unregister,
            ),
            ("GET", r"/v2/trace/setting", "trace setting", ADMIN, True, self.unsupported),
            ("POST", r"/v2/trace/setting", "trace setting", ADMIN, True, self.unsupported),
            ("GET", r"/v2/logging", "log settings", ADMIN, True, self.unsupported),
            ("POST", r"/v2/logging", "log settings", ADMIN, True, self.unsupported),
        ]
        self.routes = [
            Route(method, re.compile(pattern + r"/?"), name, scope, inline, handler)
            for method, pattern, name, scope, inline, handler in table
        ]

    def match(self, method: str, path: str) -> tuple[Route, dict[str, str]] | HttpResponse:
        """The route and its path parameters, or the 404/405 answer."""
        allowed = []
        for route in self.routes:
            found = route.pattern.fullmatch(path)
            if found is None:
                continue
            if route.method == method or (method == "HEAD" and route.method == "GET"):
                params = {k: unquote(v) for k, v in found.groupdict().items() if v is not None}
                return route, params
            allowed.append(route.method)
        if allowed:
            response = error_response(405, f"{method} is not allowed on {path}")
            response.headers.append(("allow", ", ".join(sorted(set(allowed)))))
            return response
        return error_response(404, f"no endpoint {path}; see docs/openapi.yaml")

    # health and metadata -----------------------------------------------------------------------

    def live(self, request: HttpRequest) -> HttpResponse:
        return empty(200)

    def ready(self, request: HttpRequest) -> HttpResponse:
        return empty(200 if self._plane.ready() else 400)

    def server_metadata(self, request: HttpRequest) -> HttpResponse:
        return json_response(
            {"name": SERVER_NAME, "version": __version__, "extensions": list(EXTENSIONS)}
        )

    def model_metadata(self, request: HttpRequest) -> HttpResponse:
        metadata = self._plane.model_metadata(*_model(request))

        def tensors(items: object) -> list[dict[str, Any]]:
            return [
                {"name": t.name, "datatype": t.datatype, "shape": list(t.shape)}
                for t in items  # type: ignore[attr-defined]
            ]

        return json_response(
            {
                "name": metadata.name,
                "versions": list(metadata.versions),
                "platform": metadata.platform,
                "inputs": tensors(metadata.inputs),
                "outputs": tensors(metadata.outputs),
            }
        )

    def model_ready(self, request: HttpRequest) -> HttpResponse:
        return empty(200 if self._plane.model_ready(*_model(request)) else 400)

    def model_config(self, request: HttpRequest) -> HttpResponse:
        config = self._plane.model_config(*_model(request))
        return json_response(protojson.to_json(config))

    def statistics(self, request: HttpRequest) -> HttpResponse:
        name = request.params.get("model", "")
        models = self._plane.statistics(name, request.params.get("version", ""))

        def duration(value: Duration) -> dict[str, int]:
            return {"count": value.count, "ns": value.ns}

        return json_response(
            {
                "model_stats": [
                    {
                        "name": m.name,
                        "version": str(m.version),
                        "last_inference": m.stats.last_inference_ms,
                        "inference_count": m.stats.inference_count,
                        "execution_count": m.stats.execution_count,
                        "inference_stats": {
                            key: duration(getattr(m.stats, key))
                            for key in (
                                "success",
                                "fail",
                                "queue",
                                "compute_input",
                                "compute_infer",
                                "compute_output",
                            )
                        },
                        "batch_stats": [
                            {
                                "batch_size": size,
                                "compute_input": duration(per_size.compute_input),
                                "compute_infer": duration(per_size.compute_infer),
                                "compute_output": duration(per_size.compute_output),
                            }
                            for size, per_size in sorted(m.stats.batch_stats.items())
                        ],
                    }
                    for m in models
                ]
            }
        )

    # inference ---------------------------------------------------------------------------------

    def infer(self, request: HttpRequest) -> HttpResponse:
        model, version = _model(request)
        header_length = _header_length(request.headers)
        shared_memory = self._plane.shared_memory
        limits = self._limits
        decoded: list[codec.DecodedRequest] = []

        def decode() -> Any:
            decoded.append(
                codec.decode_infer_request(
                    model, version, request.body, header_length, shared_memory, limits
                )
            )
            return decoded[0].request

        def encode(result: Any) -> codec.EncodedResponse:
            return codec.encode_infer_response(
                result, decoded[0].binary_outputs, decoded[0].all_binary, shared_memory
            )

        waiter = Waiter(hooks=self._hooks, compute_hooks=self._hooks)
        headers = list(request.headers.items()) if self._trace_headers else None
        size = len(request.body)
        inflight = self._plane.inflight
        inflight.take(size)
        try:
            encoded = self._plane.infer(
                model, version, "", decode, encode, Call(None, waiter, headers)
            )
        finally:
            inflight.give_back(size)
        if encoded.header_length is None:
            return HttpResponse(200, encoded.chunks)
        return HttpResponse(
            200,
            encoded.chunks,
            BINARY,
            [("inference-header-content-length", str(encoded.header_length))],
        )

    # repository control ------------------------------------------------------------------------

    def index(self, request: HttpRequest) -> HttpResponse:
        body = _json_object(request.body) if request.body else {}
        ready_only = bool(body.get("ready", False))
        return json_response(
            [
                {"name": e.name, "version": e.version, "state": e.state, "reason": e.reason}
                for e in self._plane.repository_index(ready_only=ready_only)
            ]
        )

    def load(self, request: HttpRequest) -> HttpResponse:
        body = _json_object(request.body) if request.body else {}
        parameters = body.get("parameters") or {}
        if not isinstance(parameters, dict):
            raise InvalidInputError("'parameters' must be a JSON object")
        self._plane.load_model(request.params["model"], parameters, base64_files=True)
        return empty(200)

    def unload(self, request: HttpRequest) -> HttpResponse:
        self._plane.unload_model(request.params["model"])
        return empty(200)

    # system shared memory ----------------------------------------------------------------------

    def shm_status(self, request: HttpRequest) -> HttpResponse:
        regions = self._plane.shared_memory.status(request.params.get("region", ""))
        return json_response(
            [
                {"name": r.name, "key": r.key, "offset": r.offset, "byte_size": r.byte_size}
                for r in regions
            ]
        )

    def shm_register(self, request: HttpRequest) -> HttpResponse:
        body = _json_object(request.body)
        key, offset, byte_size = body.get("key"), body.get("offset", 0), body.get("byte_size")
        if (
            not isinstance(key, str)
            or not isinstance(offset, int)
            or not isinstance(byte_size, int)
        ):
            raise InvalidInputError(
                "register needs 'key' (a string), 'byte_size' and optionally 'offset' (integers)"
            )
        self._plane.shared_memory.register(request.params["region"], key, offset, byte_size)
        return empty(200)

    def shm_unregister(self, request: HttpRequest) -> HttpResponse:
        self._plane.shared_memory.unregister(request.params.get("region", ""))
        return empty(200)

    def cuda_shm_status(self, request: HttpRequest) -> HttpResponse:
        region = request.params.get("region", "")
        return json_response(self._plane.cuda_shared_memory.status(region))

    def cuda_shm_register(self, request: HttpRequest) -> HttpResponse:
        self._plane.cuda_shared_memory.register(request.params.get("region", ""))
        raise AssertionError("register always refuses")  # pragma: no cover

    def cuda_shm_unregister(self, request: HttpRequest) -> HttpResponse:
        self._plane.cuda_shared_memory.unregister(request.params.get("region", ""))
        return empty(200)

    def unsupported(self, request: HttpRequest) -> HttpResponse:
        raise UnsupportedError(f"{request.path} is not supported by this server")


def _model(request: HttpRequest) -> tuple[str, str]:
    return request.params["model"], request.params.get("version", "")


def _header_length(headers: Mapping[str, str]) -> int | None:
    value = headers.get(HEADER_LENGTH)
    if value is None:
        return None
    if not value.strip().isdigit():
        raise InvalidInputError(f"Inference-Header-Content-Length must be a number, got '{value}'")
    return int(value)


def _json_object(body: bytes) -> dict[str, Any]:
    document = codec.parse_json(body)
    if not isinstance(document, dict):
        raise InvalidInputError("the request body must be a JSON object")
    return document
