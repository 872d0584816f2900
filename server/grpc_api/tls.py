"""TLS for the gRPC front end, from certificate files that may be rotated."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import grpc

log = logging.getLogger(__name__)


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
