"""Typed server settings. No side effects at import; the CLI fills them from argv and env."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

BUNDLED_MODELS = Path(__file__).resolve().parent / "example_models"
# Set by `serve --workers N` for each of its children; never by users.
WORKER_INDEX_VARIABLE = "TENSORGATE_WORKER_INDEX"
# And the pipe on which each child reports that it listens (one JSON line: {"port": ...}).
READY_FD_VARIABLE = "TENSORGATE_READY_FD"


@dataclass(frozen=True)
class ServerSettings:
    """Everything `tensorgate serve` can be told; every field has a TENSORGATE_* variable."""

    model_repository: Path = BUNDLED_MODELS
    # The served name of a repository holding one model file at its top (KServe's
    # /mnt/models); default: the file's stem. Triton's layout names models by directory.
    model_name: str = ""
    # Serve from an MLflow Model Registry instead of model_repository (server/models/
    # mlflow_source.py): its tracking server, the registered models (none: those tagged
    # tensorgate.serve=true), the aliases served, and the local artifact cache.
    mlflow_tracking_uri: str = ""
    mlflow_models: tuple[str, ...] = ()
    mlflow_alias: str = "champion"
    mlflow_second_alias: str = ""
    mlflow_cache_dir: Path = Path.home() / ".cache" / "tensorgate" / "mlflow"
    mlflow_cache_max_bytes: int = 10 << 30
    # none: load everything at start, never change; poll: follow the repository on disk;
    # explicit: load what load_models names, then only on RepositoryModelLoad/Unload calls.
    model_control_mode: str = "none"
    repository_poll_s: float = 15.0
    load_models: tuple[str, ...] = ()
    grpc_host: str = "0.0.0.0"
    grpc_port: int = 8001
    # HTTP/REST: the same protocol on another port. -1 turns it off; "" host: grpc_host's.
    http_port: int = 8000
    http_host: str = ""
    http_keepalive_s: int = 5
    # Server processes sharing the port (SO_REUSEPORT); 1 runs the server in this process.
    workers: int = 1
    # gRPC handler threads that run at once (more may wait for their batch: grpc_api/threads.py)
    # and calls handled at once (beyond: RESOURCE_EXHAUSTED at once; each holds a thread).
    grpc_handler_threads: int = 1
    max_concurrent_calls: int = 1024
    # A plaintext port serving only grpc.health.v1, for Kubernetes probes (which cannot speak
    # TLS) when the main port uses TLS. 0: none.
    grpc_health_port: int = 0
    max_message_bytes: int = 256 * 1024 * 1024
    # Per-request limits (beyond them: INVALID_ARGUMENT) and concurrent streams (beyond:
    # RESOURCE_EXHAUSTED).
    max_inputs: int = 64
    max_tensor_elements: int = 1 << 26
    max_tensor_bytes: int = 256 << 20
    # Request bytes held at once by inference calls, server-wide (beyond: RESOURCE_EXHAUSTED at
    # once); 0: no limit.
    max_inflight_bytes: int = 1 << 30
    max_bytes_element: int = 16 << 20
    max_concurrent_streams: int = 256
    default_max_batch_size: int = 32
    grace_period_s: float = 30.0
    # On SIGTERM, health turns NOT_SERVING at once but requests are still served this long, so
    # load balancers and health-checking clients move away before calls are refused.
    shutdown_delay_s: float = 0.0
    log_level: str = "INFO"
    metrics_enabled: bool = True
    metrics_port: int = 8002
    trace_exporter: str = "none"  # none, console, or otlp (OTEL_EXPORTER_OTLP_* settings apply)
    trace_sample_ratio: float = 1.0
    # Security. TLS is on when a certificate and key are given; mutual TLS when a client CA is.
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_client_ca_file: Path | None = None
    # Bearer tokens: a file of '<name> <scopes> <token>' lines, and/or the same lines in the
    # environment variable TENSORGATE_AUTH_TOKENS (';'-separated). None of either: auth off.
    auth_tokens_file: Path | None = None
    auth_tokens: str = ""
    audit_log: str | None = None  # a file path, or "-" for stderr
    # Connections older than this are closed (after a grace for in-flight calls), so clients
    # behind a load balancer reconnect and spread over replicas. 0 keeps connections forever.
    max_connection_age_s: float = 0.0
    max_connection_age_grace_s: float = 10.0
    # A connection that has not finished its HTTP/2 handshake by then is closed (a socket that
    # sends nothing, or half a preface, would otherwise hold a file descriptor for 120 s).
    handshake_timeout_s: float = 10.0
    # A connection with no call for this long is closed; 0 keeps idle connections (clients with
    # keepalive keep theirs open on purpose).
    max_connection_idle_s: float = 0.0
    # Connections to the gRPC port at once; beyond it new ones are closed at once, so a flood of
    # sockets cannot use up the process's file descriptors.
    max_connections: int = 10_000
    keepalive_time_s: float = 60.0
    # Set only by `--workers`' parent for its children (TENSORGATE_WORKER_INDEX): the one case
    # where several processes may listen on one port (SO_REUSEPORT). A lone server refuses a
    # port that is in use.
    worker_index: int | None = None
    keepalive_timeout_s: float = 20.0
