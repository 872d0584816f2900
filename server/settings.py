"""Typed server settings. No side effects at import; the CLI fills them from argv and env."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

BUNDLED_MODELS = Path(__file__).resolve().parent / "example_models"


@dataclass(frozen=True)
class ServerSettings:
    """Everything `tensorgate serve` can be told; every field has a TENSORGATE_* variable."""

    model_repository: Path = BUNDLED_MODELS
    grpc_host: str = "0.0.0.0"
    grpc_port: int = 8001
    max_message_bytes: int = 256 * 1024 * 1024
    default_max_batch_size: int = 32
    grace_period_s: float = 30.0
    log_level: str = "INFO"
