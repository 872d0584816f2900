"""Bearer tokens with scopes: who may call what, for every front end.

Tokens are read from a file (a Kubernetes Secret mount) or TENSORGATE_AUTH_TOKENS, one per line:

    <name> <scope>[,<scope>...] <token>

with scopes `infer` (inference, metadata, statistics) and `admin` (repository control, shared
memory registration, trace and log settings; admin includes infer). Only SHA-256 digests of the
tokens are kept in memory and no token is ever logged. Each front end maps its calls to the scope
they need (grpc_api/auth.py); health checks and readiness stay open, as probes need.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

INFER = "infer"
ADMIN = "admin"
SCOPES = (INFER, ADMIN)


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
        """The identity of the `authorization: Bearer <token>` entry of gRPC metadata."""
        for key, value in metadata or ():
            if key == "authorization" and isinstance(value, str):
                return self.identify_header(value)
        return None

    def identify_header(self, value: str) -> Identity | None:
        """The identity of an `Authorization` header's value (`Bearer <token>`)."""
        scheme, _, token = value.partition(" ")
        if scheme.lower() == "bearer" and token:
            return self._by_digest.get(_digest(token.strip()))
        return None


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()
