"""Bearer-token checks for the gRPC front end: which scope each method needs, refused calls
answered before their handler runs, and audit-logged."""

from __future__ import annotations

from collections.abc import Callable

import grpc

from server.security.audit import AuditLog
from server.security.tokens import ADMIN, INFER, TokenStore

_SERVICE = "/inference.GRPCInferenceService/"
_INFER_METHODS = (
    "ServerMetadata",
    "ModelMetadata",
    "ModelConfig",
    "ModelInfer",
    "ModelStreamInfer",
    "ModelStatistics",
    "RepositoryIndex",
    "SystemSharedMemoryStatus",
    "CudaSharedMemoryStatus",
)
_ADMIN_METHODS = (
    "RepositoryModelLoad",
    "RepositoryModelUnload",
    "SystemSharedMemoryRegister",
    "SystemSharedMemoryUnregister",
    "CudaSharedMemoryRegister",
    "CudaSharedMemoryUnregister",
    "TraceSetting",
    "LogSettings",
)
REQUIRED_SCOPE = {
    **{_SERVICE + method: INFER for method in _INFER_METHODS},
    **{_SERVICE + method: ADMIN for method in _ADMIN_METHODS},
}


class AuthInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]  # grpc has no type stubs
    """Checks the bearer token of every call to a protected method before it runs."""

    def __init__(self, tokens: TokenStore, audit: AuditLog) -> None:
        self._tokens = tokens
        self._audit = audit

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        scope = REQUIRED_SCOPE.get(details.method)
        handler = continuation(details)
        if scope is None or handler is None:
            return handler
        identity = self._tokens.identify(details.invocation_metadata)
        method = details.method.rsplit("/", 1)[-1]
        if identity is None:
            return self._deny(
                handler,
                method,
                "anonymous",
                grpc.StatusCode.UNAUTHENTICATED,
                f"{method} needs a valid bearer token in the 'authorization' metadata",
            )
        if not identity.allows(scope):
            return self._deny(
                handler,
                method,
                identity.name,
                grpc.StatusCode.PERMISSION_DENIED,
                f"token '{identity.name}' lacks the '{scope}' scope that {method} needs",
            )
        return handler

    def _deny(
        self,
        handler: grpc.RpcMethodHandler,
        method: str,
        identity: str,
        code: grpc.StatusCode,
        message: str,
    ) -> grpc.RpcMethodHandler:
        audit = self._audit

        def deny(request: object, context: grpc.ServicerContext) -> None:
            audit.record(context.peer(), identity, method, outcome=code.name)
            context.abort(code, message)

        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                deny,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_stream is not None:
            return grpc.stream_stream_rpc_method_handler(
                deny,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler  # the inference service has only unary and bidi methods
