"""Who may call what: TLS (optionally mutual) and bearer-token authentication with scopes.

Tokens are read from a file (a Kubernetes Secret mount) or TENSORGATE_AUTH_TOKENS, one per line:

    <name> <scope>[,<scope>...] <token>

with scopes `infer` (inference, metadata, statistics) and `admin` (repository control, shared
memory registration, trace and log settings; admin includes infer). Only SHA-256 digests of the
tokens are kept in memory and no token is ever logged. Health checks, reflection, ServerLive,
ServerReady and ModelReady stay open, as probes need.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from server.security.audit import AuditLog

log = logging.getLogger(__name__)

INFER = "infer"
ADMIN = "admin"
SCOPES = (INFER, ADMIN)
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


@dataclass(frozen=True)
class Identity:
    name: str
    scopes: frozenset[str]

    def allows(self, scope: str) -> bool:
        return scope in self.scopes or ADMIN in self.scopes


class TokenStore:
    def __init__(self, identities: dict[bytes, Identity]) -> None:
        self._by_digest = identities

    def __len__(self) -> int:
        return len(self._by_digest)

    @classmethod
    def parse(cls, text: str, source: str) -> TokenStore:
        identities: dict[bytes, Identity] = {}
        for number, line in enumerate(text.splitlines(), start=1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split()
            if len(parts) != 3:
                raise ValueError(f"{source} line {number}: expected '<name> <scopes> <token>'")
            name, scopes, token = parts
            wanted = frozenset(scopes.split(","))
            unknown = sorted(wanted - set(SCOPES))
            if unknown:
                raise ValueError(f"{source} line {number}: unknown scope(s) {unknown}")
            identities[_digest(token)] = Identity(name, wanted)
        return cls(identities)

    @classmethod
    def load(cls, path: Path | None, inline: str) -> TokenStore | None:
        """Tokens from the file and from `inline` (lines separated by ';' or newlines, from
        TENSORGATE_AUTH_TOKENS); None when neither gives any, which turns authentication off."""
        texts = []
        if path is not None:
            texts.append((path.read_text(encoding="utf-8"), str(path)))
        if inline.strip():
            texts.append((inline.replace(";", "\n"), "TENSORGATE_AUTH_TOKENS"))
        identities: dict[bytes, Identity] = {}
        for text, source in texts:
            identities.update(cls.parse(text, source)._by_digest)
        return cls(identities) if identities else None

    def identify(self, metadata: Sequence[tuple[str, Any]] | None) -> Identity | None:
        for key, value in metadata or ():
            if key == "authorization" and isinstance(value, str):
                scheme, _, token = value.partition(" ")
                if scheme.lower() == "bearer" and token:
                    return self._by_digest.get(_digest(token.strip()))
        return None


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Checks the bearer token of every call to a protected method before it runs."""

    def __init__(self, tokens: TokenStore, audit: AuditLog) -> None:
        self._tokens = tokens
        self._audit = audit

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        scope = REQUIRED_SCOPE.get(details.method)
        handler = await continuation(details)
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

        async def deny(request: object, context: grpc.aio.ServicerContext) -> None:
            audit.record(context.peer(), identity, method, outcome=code.name)
            del request  # not kept alive by the abort's reference cycle (see server/status.py)
            await context.abort(code, message)

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


class CertificateFiles:
    """TLS credentials from files, re-read when they change (rotated Kubernetes Secrets): gRPC
    asks for a new configuration at each handshake, so new connections get the new certificate
    while established ones keep theirs."""

    def __init__(self, cert: Path, key: Path, client_ca: Path | None) -> None:
        self._paths = [p for p in (cert, key, client_ca) if p is not None]
        self._cert, self._key, self._client_ca = cert, key, client_ca
        self._stamp = self._stamps()

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.dynamic_ssl_server_credentials(
            self._configuration(),
            self._fetch,
            require_client_authentication=self._client_ca is not None,
        )

    def _stamps(self) -> tuple[tuple[int, int], ...]:
        return tuple((os.stat(p).st_mtime_ns, os.stat(p).st_size) for p in self._paths)

    def _configuration(self) -> grpc.ServerCertificateConfiguration:
        return grpc.ssl_server_certificate_configuration(
            [(self._key.read_bytes(), self._cert.read_bytes())],
            root_certificates=self._client_ca.read_bytes() if self._client_ca else None,
        )

    def _fetch(self) -> grpc.ServerCertificateConfiguration | None:
        try:
            stamp = self._stamps()
            if stamp == self._stamp:
                return None
            configuration = self._configuration()
        except OSError as error:  # mid-rotation: keep serving the current certificate
            log.warning("TLS files not readable, keeping the current certificate: %s", error)
            return None
        self._stamp = stamp
        log.info("TLS certificate files changed; new connections use the new certificate")
        return configuration
