"""The `tensorgate` command. argv and the environment are read here and nowhere else."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from server import __version__
from server.settings import (
    BUNDLED_MODELS,
    READY_FD_VARIABLE,
    WORKER_INDEX_VARIABLE,
    ServerSettings,
)

log = logging.getLogger("tensorgate")

ENV_PREFIX = "TENSORGATE_"


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
CONTROL_MODES = ("none", "poll", "explicit")
TRACE_EXPORTERS = ("none", "console", "otlp")


def _choice(
    what: str, choices: tuple[str, ...], normalise: Callable[[str], str]
) -> Callable[[str], str]:
    """A type for an option with a fixed set of values, whose error lists them."""

    def parse(text: str) -> str:
        value = normalise(text.strip())
        if value not in choices:
            raise argparse.ArgumentTypeError(
                f"{what} must be one of {', '.join(choices)}, got '{text}'"
            )
        return value

    parse.__name__ = what.replace(" ", "_")
    return parse


_log_level = _choice("log level", LOG_LEVELS, str.upper)
_control_mode = _choice("model control mode", CONTROL_MODES, str.lower)
_trace_exporter = _choice("trace exporter", TRACE_EXPORTERS, str.lower)
_BOOLEANS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def _boolean(text: str) -> bool:
    value = _BOOLEANS.get(text.strip().lower())
    if value is None:
        raise argparse.ArgumentTypeError(f"expected true or false, got '{text}'")
    return value


def _name_list(text: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in text.split(",") if name.strip())


def _default_text(value: object) -> str:
    """A default as the help shows it: words instead of None, (), True or the package path."""
    if value is None or value == ():
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if value == BUNDLED_MODELS:
        return "the bundled example models"
    return str(value)


@dataclass(frozen=True)
class _Option:
    flag: str
    field: str
    type: Callable[[str], object]
    help: str
    repeatable: bool = False

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.flag.lstrip("-").replace("-", "_").upper()


_SERVE_OPTIONS = (
    _Option(
        "--model-repository",
        "model_repository",
        Path,
        "directory of models in Triton's layout (<model>/[config.pbtxt], <model>/<version>/"
        "model.onnx), or holding one model file at its top (KServe's /mnt/models for a "
        "storageUri naming one file: one model, version 1); default: the bundled example models",
    ),
    _Option(
        "--model-name",
        "model_name",
        str,
        "the served name of a repository holding one model file at its top (under KServe: "
        "{{.Name}}, the InferenceService's name); default: the file's name without .onnx",
    ),
    _Option(
        "--mlflow-tracking-uri",
        "mlflow_tracking_uri",
        str,
        "serve from this MLflow tracking server's Model Registry instead of --model-repository "
        "(http(s)://host:port; credentials from MLFLOW_TRACKING_TOKEN or "
        "MLFLOW_TRACKING_USERNAME/PASSWORD; needs pip install 'tensorgate[mlflow]')",
    ),
    _Option(
        "--mlflow-models",
        "mlflow_models",
        _name_list,
        "registered models to serve (comma-separated); default: those tagged tensorgate.serve=true",
    ),
    _Option(
        "--mlflow-alias",
        "mlflow_alias",
        str,
        "the alias whose version each model serves (a model without it serves its newest)",
    ),
    _Option(
        "--mlflow-second-alias",
        "mlflow_second_alias",
        str,
        "a second alias served beside the first (e.g. challenger), by its version number",
    ),
    _Option(
        "--mlflow-cache-dir",
        "mlflow_cache_dir",
        Path,
        "where registry versions are downloaded (kept across restarts; served from when the "
        "registry is down)",
    ),
    _Option(
        "--mlflow-cache-max-bytes",
        "mlflow_cache_max_bytes",
        int,
        "bound of the artifact cache; the least recently used versions not served go first",
    ),
    _Option(
        "--model-control-mode",
        "model_control_mode",
        _control_mode,
        "none: load every model at start; poll: follow the repository (load, reload, unload "
        "as it changes); explicit: load only --load-model at start, then only on "
        "RepositoryModelLoad/Unload calls",
    ),
    _Option(
        "--repository-poll-secs",
        "repository_poll_s",
        float,
        "poll mode: how often to rescan the repository",
    ),
    _Option(
        "--load-model",
        "load_models",
        _name_list,
        "explicit mode: models to load at start (comma-separated, repeatable; '*' for all)",
        repeatable=True,
    ),
    _Option("--grpc-host", "grpc_host", str, "address to listen on"),
    _Option("--grpc-port", "grpc_port", int, "port to listen on (0 picks a free one)"),
    _Option(
        "--http-port",
        "http_port",
        int,
        "port of the HTTP/REST endpoint (the same v2 protocol; 0 picks a free one; -1: no HTTP)",
    ),
    _Option("--http-host", "http_host", str, "address for HTTP (empty: --grpc-host's)"),
    _Option(
        "--http-keepalive-secs",
        "http_keepalive_s",
        int,
        "how long an idle HTTP keep-alive connection stays open",
    ),
    _Option(
        "--workers",
        "workers",
        int,
        "server processes sharing the port (SO_REUSEPORT): the front end scales with cores",
    ),
    _Option(
        "--grpc-handler-threads",
        "grpc_handler_threads",
        int,
        "gRPC handler threads running at once; calls waiting for their batch do not count "
        "(more threads fight over Python's GIL: see benchmarks/README.md)",
    ),
    _Option(
        "--max-concurrent-calls",
        "max_concurrent_calls",
        int,
        "gRPC calls handled at once, waiting ones included (beyond: RESOURCE_EXHAUSTED)",
    ),
    _Option(
        "--grpc-health-port",
        "grpc_health_port",
        int,
        "plaintext port serving only grpc.health.v1, for probes when the main port uses TLS "
        "(0: none)",
    ),
    _Option(
        "--max-message-bytes", "max_message_bytes", int, "largest gRPC message accepted or sent"
    ),
    _Option("--max-inputs", "max_inputs", int, "most input tensors in one request"),
    _Option(
        "--max-tensor-elements", "max_tensor_elements", int, "most elements in one input tensor"
    ),
    _Option("--max-tensor-bytes", "max_tensor_bytes", int, "most bytes in one input tensor"),
    _Option(
        "--max-inflight-bytes",
        "max_inflight_bytes",
        int,
        "most request bytes held by inference calls at once, server-wide (beyond: "
        "RESOURCE_EXHAUSTED at once; 0: no limit)",
    ),
    _Option("--max-bytes-element", "max_bytes_element", int, "longest element of a BYTES tensor"),
    _Option(
        "--max-concurrent-streams",
        "max_concurrent_streams",
        int,
        "most ModelStreamInfer streams open at once (beyond: RESOURCE_EXHAUSTED)",
    ),
    _Option(
        "--default-max-batch-size",
        "default_max_batch_size",
        int,
        "max_batch_size given to models whose config is completed from the graph",
    ),
    _Option(
        "--grace-period-secs",
        "grace_period_s",
        float,
        "on SIGTERM/SIGINT, how long in-flight requests may take to finish",
    ),
    _Option(
        "--grpc-max-connection-age-secs",
        "max_connection_age_s",
        float,
        "close connections older than this (after a grace) so clients behind a load balancer "
        "reconnect and spread over replicas; 0: never",
    ),
    _Option(
        "--grpc-max-connection-age-grace-secs",
        "max_connection_age_grace_s",
        float,
        "how long calls on an aged connection may still run",
    ),
    _Option(
        "--grpc-handshake-timeout-secs",
        "handshake_timeout_s",
        float,
        "close a connection that has not finished its HTTP/2 handshake by then",
    ),
    _Option(
        "--grpc-max-connection-idle-secs",
        "max_connection_idle_s",
        float,
        "close a connection with no call for this long; 0: never",
    ),
    _Option(
        "--grpc-max-connections",
        "max_connections",
        int,
        "connections at once; beyond it new ones are closed at once",
    ),
    _Option(
        "--grpc-keepalive-time-secs",
        "keepalive_time_s",
        float,
        "idle time before the server pings a client to check the connection",
    ),
    _Option(
        "--grpc-keepalive-timeout-secs",
        "keepalive_timeout_s",
        float,
        "how long the server waits for a ping answer before closing the connection",
    ),
    _Option(
        "--shutdown-delay-secs",
        "shutdown_delay_s",
        float,
        "on SIGTERM, keep serving this long with health NOT_SERVING before refusing new calls "
        "(part of the grace period)",
    ),
    _Option("--log-level", "log_level", _log_level, "DEBUG, INFO, WARNING or ERROR"),
    _Option("--tls-cert-file", "tls_cert_file", Path, "PEM certificate chain: turns TLS on"),
    _Option("--tls-key-file", "tls_key_file", Path, "PEM private key of the certificate"),
    _Option(
        "--tls-client-ca-file",
        "tls_client_ca_file",
        Path,
        "PEM CA bundle: clients must present a certificate it signed (mutual TLS)",
    ),
    _Option(
        "--auth-tokens-file",
        "auth_tokens_file",
        Path,
        "bearer tokens, one '<name> <scopes> <token>' line each (scopes: infer, admin); "
        "TENSORGATE_AUTH_TOKENS may hold more lines, ';'-separated; no tokens: auth off",
    ),
    _Option(
        "--audit-log",
        "audit_log",
        str,
        "JSON-lines audit of control actions and refused calls: a file, or - for stderr",
    ),
    _Option("--metrics", "metrics_enabled", _boolean, "serve Prometheus metrics (true/false)"),
    _Option(
        "--metrics-port",
        "metrics_port",
        int,
        "port of the Prometheus /metrics endpoint (0 picks a free one)",
    ),
    _Option(
        "--trace-exporter",
        "trace_exporter",
        _trace_exporter,
        "OpenTelemetry traces of inference requests: none, console, or otlp (the standard "
        "OTEL_EXPORTER_OTLP_* variables configure it)",
    ),
    _Option(
        "--trace-sample-ratio",
        "trace_sample_ratio",
        float,
        "fraction of new traces to sample; a caller's sampled traceparent is always followed",
    ),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tensorgate",
        description="A gRPC model server for ONNX models, compatible with Triton's clients "
        "(KServe v2 / Open Inference Protocol).",
    )
    parser.add_argument("--version", action="version", version=f"tensorgate {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser(
        "serve",
        help="serve a model repository over gRPC",
        description="Serve a model repository over gRPC. Every option can also be set by the "
        "environment variable shown in its help; a flag wins over the variable.",
    )
    defaults = ServerSettings()
    for option in _SERVE_OPTIONS:
        default = getattr(defaults, option.field)
        serve.add_argument(
            option.flag,
            dest=option.field,
            type=option.type,
            default=None,
            action="append" if option.repeatable else "store",
            metavar=option.field.split("_")[-1].upper(),
            help=f"{option.help} [env {option.env}; default {_default_text(default)}]",
        )
    profile = commands.add_parser(
        "profile",
        help="build a model's drift reference profile from a sample file",
        description="Run a sample of typical inputs through a model and write the drift "
        "reference profile of its inputs and outputs, where the server reads it when the model "
        "sets the parameter drift_sample_ratio: <model>/drift_profile.json in the repository "
        "named by --model-repository or TENSORGATE_MODEL_REPOSITORY; with the bundled example "
        "models, ./<model>.drift_profile.json. The sample is read as `tensorgate batch` reads "
        "its input.",
    )
    _add_model_arguments(profile)
    profile.add_argument(
        "--output",
        type=Path,
        default=None,
        help="where to write the profile (default: see above)",
    )
    _add_batch_parser(commands)
    return parser


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of the commands that run one model on a file, without a server (batch,
    profile): the same model choice and the same input files."""
    parser.add_argument("--model", required=True, help="model name in the repository")
    parser.add_argument(
        "--version",
        type=int,
        default=None,
        help="default: the highest version the model's version policy serves",
    )
    parser.add_argument(
        "--input",
        required=True,
        type=Path,
        help=".npy (a one-input model), .npz (one array per input), or .csv/.parquet (columns "
        "named after the inputs, or <input>_0.. <input>_K-1, or for a one-input model all "
        "columns)",
    )
    parser.add_argument(
        "--model-repository",
        type=Path,
        default=None,
        help="default: $TENSORGATE_MODEL_REPOSITORY or the bundled example models",
    )


def _add_batch_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    batch = commands.add_parser(
        "batch",
        help="score a file offline through a model (no server)",
        description="Run every row of a file through a model in large batches and write the "
        "outputs, in the format of --output's extension (.npy, .npz, .csv or .parquet). An "
        "interrupted run continues with --resume.",
    )
    _add_model_arguments(batch)
    batch.add_argument("--output", required=True, type=Path, help="file to write the outputs to")
    batch.add_argument(
        "--batch-size", type=int, default=0, help="rows per batch (default: about 8 MiB of input)"
    )
    batch.add_argument(
        "--outputs", type=_name_list, default=(), help="outputs to write (default: all)"
    )
    batch.add_argument(
        "--resume", action="store_true", help="continue an interrupted run with the same options"
    )
    batch.add_argument("--no-progress", action="store_true", help="no progress bar")


def settings_from(args: argparse.Namespace, environ: dict[str, str]) -> ServerSettings:
    """Flags first, then TENSORGATE_* variables, then the defaults."""
    # By field name: each value has its field's type, which the option's parser returns (a table
    # mypy cannot follow, hence Any).
    values: dict[str, Any] = {}
    for option in _SERVE_OPTIONS:
        value = getattr(args, option.field)
        if option.repeatable and value is not None:
            value = tuple(item for items in value for item in items)
        if value is None and option.env in environ:
            try:
                value = option.type(environ[option.env])
            except (ValueError, argparse.ArgumentTypeError) as exc:
                raise SystemExit(
                    f"tensorgate: invalid {option.env}={environ[option.env]}: {exc}"
                ) from None
        if value is not None:
            values[option.field] = value
    if environ.get(WORKER_INDEX_VARIABLE, "").isdigit():
        values["worker_index"] = int(environ[WORKER_INDEX_VARIABLE])
    if environ.get("TENSORGATE_AUTH_TOKENS"):
        values["auth_tokens"] = environ["TENSORGATE_AUTH_TOKENS"]  # never a flag: ps shows flags
    return dataclasses.replace(ServerSettings(), **values)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "profile":
        return _profile(args)
    if args.command == "batch":
        return _batch(args)
    settings = settings_from(args, dict(os.environ))
    _configure_logging(settings)
    if args.command == "serve" and settings.workers > 1:
        from server.workers import serve_workers

        return serve_workers(settings, list(argv if argv is not None else sys.argv[1:]))
    if args.command == "serve":
        return _serve(settings)
    return 0


def _profile(args: argparse.Namespace) -> int:
    from runtimes.errors import TensorgateError
    from server.offline.loading import repository_of
    from server.offline.profiling import build_profile, default_output

    logging.basicConfig(level="INFO", format="%(levelname)s %(name)s: %(message)s")
    repository, named = repository_of(args.model_repository, os.environ)
    output = args.output or default_output(repository, args.model, named)
    try:
        profile, rows = build_profile(repository, args.model, args.version, args.input)
        output.write_text(profile.to_json(), encoding="utf-8")
    except (TensorgateError, OSError, ValueError) as error:
        print(f"tensorgate profile: {error}", file=sys.stderr)
        return 2
    where = (
        ""
        if args.output or named
        else " (in the current directory: the bundled example models are not written to; "
        "--output chooses the place)"
    )
    print(f"profiled {len(profile.features)} features over {rows} rows: {output}{where}")
    return 0


def _batch(args: argparse.Namespace) -> int:
    from runtimes.errors import TensorgateError
    from server.offline.batch_scoring import BatchJob, score
    from server.offline.loading import repository_of

    logging.basicConfig(level="INFO", format="%(levelname)s %(name)s: %(message)s")
    repository, _ = repository_of(args.model_repository, os.environ)
    if args.batch_size < 0:
        print("tensorgate batch: --batch-size must be positive", file=sys.stderr)
        return 2
    job = BatchJob(
        model=args.model,
        version=args.version,
        input_path=args.input,
        output_path=args.output,
        model_repository=repository,
        batch_rows=args.batch_size,
        outputs=tuple(args.outputs),
        resume=args.resume,
        progress=not args.no_progress,
    )
    try:
        result = score(job)
    except (TensorgateError, OSError) as error:
        print(f"tensorgate batch: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tensorgate batch: interrupted; rerun with --resume to continue", file=sys.stderr)
        return 130
    resumed = result.rows - result.scored_rows
    print(
        f"scored {result.rows} rows with {args.model} version {result.version}"
        + (f" ({resumed} from the earlier run)" if resumed else "")
        + f" in {result.seconds:.2f}s ({result.rows_per_s:,.0f} rows/s): {result.output_path}"
    )
    return 0


def _report_ready(port: int, ready_fd: str | None) -> None:
    """Tell a `--workers` parent that this child listens (server/workers.py)."""
    if ready_fd:
        with os.fdopen(int(ready_fd), "w", encoding="utf-8") as pipe:
            pipe.write(json.dumps({"port": port}) + "\n")


def _configure_logging(settings: ServerSettings) -> None:
    if settings.trace_exporter == "none":
        logging.basicConfig(
            level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
        return
    from server.observability.tracing import TraceIdFilter

    handler = logging.StreamHandler()
    handler.addFilter(TraceIdFilter())
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s [trace %(trace_id)s]: %(message)s")
    )
    logging.basicConfig(level=settings.log_level, handlers=[handler])


def _serve(settings: ServerSettings) -> int:
    from server.app import TensorgateServer  # imported late: grpc and onnxruntime are heavy

    # SIGTERM and SIGINT are taken by sigwait below, not by a handler: blocked before any thread
    # starts, so every thread inherits the mask and none is interrupted by them.
    stop_signals = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
    server = TensorgateServer(settings)
    try:
        server.start()
    except (OSError, RuntimeError) as error:  # a port in use, an unreadable repository
        log.error("cannot start: %s", error)
        server.stop(grace_s=0)
        return 2
    _report_ready(server.port, os.environ.get(READY_FD_VARIABLE))
    signal.sigwait(stop_signals)
    if not server.stop():
        # Threads stuck in a model cannot be joined; leave without waiting for them.
        logging.shutdown()
        os._exit(0)
    return 0
