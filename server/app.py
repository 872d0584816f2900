"""The composition root: settings -> repository -> registry -> data plane -> front ends.

start() binds the ports (a port in use fails before anything loads), loads the models, then
serves; stop() turns health NOT_SERVING, refuses new inference, waits for the accepted requests
to be answered, closes the listener, unloads the models, and flushes telemetry, all within the
grace period.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence

from opentelemetry.sdk.trace import SpanProcessor

from runtimes.errors import TensorgateError
from server.dataplane.inference import RequestLimits
from server.dataplane.plane import DataPlane
from server.dataplane.shared_memory import SharedMemoryRegistry
from server.grpc_api.server import GrpcFrontEnd
from server.grpc_api.threads import SlotPool
from server.http_api.server import HttpFrontEnd
from server.models.loader import LoadOptions
from server.models.manager import ModelManager
from server.models.mlflow_source import MlflowOptions, MlflowRepository
from server.models.registry import ModelRegistry
from server.models.repository import ModelRepository
from server.models.watcher import RepositoryWatcher
from server.observability.metrics import (
    ModelRow,
    ModelSourceCollector,
    ModelStateCollector,
    ServerMetrics,
)
from server.observability.tracing import Tracing
from server.security.audit import AuditLog
from server.security.tokens import TokenStore
from server.settings import ServerSettings

log = logging.getLogger(__name__)

# After the drain, calls still arriving are refused until SETTLE_QUIET_S pass without one, for
# at most SETTLE_MAX_S (see ServerState.wait_settled).
SETTLE_QUIET_S = 0.05
SETTLE_MAX_S = 0.5


class TensorgateServer:
    def __init__(
        self, settings: ServerSettings, span_processors: Sequence[SpanProcessor] = ()
    ) -> None:
        """span_processors receive every span in addition to the configured exporter (tests
        pass an in-memory exporter here)."""
        self.settings = settings
        self.registry = ModelRegistry()
        worker = None if settings.worker_index is None else str(settings.worker_index)
        self.metrics = ServerMetrics(worker) if settings.metrics_enabled else None
        self.audit = AuditLog(settings.audit_log)
        self.tokens = TokenStore.load(settings.auth_tokens_file, settings.auth_tokens)
        self.tracing = Tracing(
            settings.trace_exporter, settings.trace_sample_ratio, processors=span_processors
        )
        self.models_on_disk = _model_source(settings)
        self.models = ModelManager(
            self.registry,
            LoadOptions(
                default_max_batch_size=settings.default_max_batch_size,
                metrics=self.metrics,
                tracing=self.tracing,
            ),
            self.models_on_disk,
            on_readiness=self._model_readiness,
        )
        self.plane = DataPlane(
            self.registry,
            self.models,
            explicit_control=settings.model_control_mode == "explicit",
            tracing=self.tracing,
            shared_memory=SharedMemoryRegistry(),
            max_upload_bytes=settings.max_message_bytes,
            max_inflight_bytes=settings.max_inflight_bytes,
        )
        self.watcher = (
            RepositoryWatcher(self.models_on_disk, self.models, settings.repository_poll_s)
            if settings.model_control_mode == "poll"
            else None
        )
        # One budget of running handler threads for both front ends (grpc_api/threads.py).
        self.pool = SlotPool(settings.grpc_handler_threads, settings.max_concurrent_calls)
        self.grpc: GrpcFrontEnd | None = None
        self.http: HttpFrontEnd | None = None
        self.port = 0
        self.http_port = 0
        self.metrics_port = 0

    def start(self) -> None:
        settings = self.settings
        log.info(
            "model repository: %s (model control mode %s)",
            self.models_on_disk.root,
            settings.model_control_mode,
        )
        limits = RequestLimits(
            max_inputs=settings.max_inputs,
            max_tensor_elements=settings.max_tensor_elements,
            max_tensor_bytes=settings.max_tensor_bytes,
            max_bytes_element=settings.max_bytes_element,
        )
        self.grpc = GrpcFrontEnd(
            settings,
            self.plane,
            self.pool,
            limits=limits,
            record_call=self.metrics.grpc_call if self.metrics else None,
            tokens=self.tokens,
            audit=self.audit,
            trace_headers=self.tracing.enabled,
        )
        self.port = self.grpc.port
        if settings.http_port >= 0:
            self.http = HttpFrontEnd(
                settings,
                self.plane,
                self.pool,
                limits=limits,
                tokens=self.tokens,
                audit=self.audit,
                record_call=self.metrics.http_call if self.metrics else None,
                trace_headers=self.tracing.enabled,
            )
            self.http_port = self.http.port
        if self.metrics is not None:
            self.metrics.add_collector(ModelStateCollector(self._model_rows))
            if isinstance(self.models_on_disk, MlflowRepository):
                self.metrics.add_collector(ModelSourceCollector(self.models_on_disk.status))
            if self.metrics.worker is None:  # a --workers child's metrics are its parent's to serve
                self.metrics_port = self.metrics.serve(settings.grpc_host, settings.metrics_port)
                log.info("metrics on http://%s:%d/metrics", settings.grpc_host, self.metrics_port)
        if self.watcher is not None:
            self.watcher.mark_applied()
        for name in self._models_to_load_at_start():
            try:
                self.models.load(name)
            except TensorgateError as error:
                log.error("model '%s' is not serving: %s", name, error)
        if self.watcher is not None:
            self.watcher.start()
        if self.tokens is not None:
            log.info("authentication on: %d token(s)", len(self.tokens))
        else:
            log.warning(
                "AUTHENTICATION IS OFF: anyone who can reach the gRPC port can run inference "
                "and control models; give --auth-tokens-file (or TENSORGATE_AUTH_TOKENS) to "
                "require bearer tokens"
            )
        self.grpc.start()
        if self.http is not None:
            self.http.start()
        self.plane.state.accepting = True
        if self.http is not None and settings.worker_index is None:
            host = settings.http_host or settings.grpc_host
            log.info("listening for HTTP on %s:%d", host, self.http_port)
        if settings.worker_index is None:
            log.info("listening for gRPC on %s:%d", settings.grpc_host, self.port)
        else:  # the parent announces the shared port once all workers serve
            log.info("worker %d serving gRPC on port %d", settings.worker_index, self.port)

    def stop(self, grace_s: float | None = None) -> bool:
        """Drain and stop within grace_s; False when work was still running at its end (its
        threads cannot be stopped: the caller should exit the process without them).

        Inference calls that arrive while the accepted ones drain get a clear UNAVAILABLE
        ("server is shutting down"), which clients retry elsewhere; over gRPC, once the drain is
        done, it is sent after the listener has closed (ServerState.hold_refusal), so a retry
        cannot be caught, and cancelled, inside the stopping transport. The listener closes as
        soon as the accepted requests are answered, not after a quiet period.
        """
        grace_s = self.settings.grace_period_s if grace_s is None else grace_s
        deadline = time.monotonic() + grace_s
        log.info("shutting down (grace period %.1fs)", grace_s)
        self.plane.state.stopping = True  # HTTP readiness answers 400 from now on
        if self.grpc is not None:
            self.grpc.stopping()
        delay_s = min(self.settings.shutdown_delay_s, grace_s)
        if delay_s > 0:  # still serving: health-checking clients and load balancers move away
            log.info("health is NOT_SERVING; still serving for %.1fs", delay_s)
            time.sleep(delay_s)
        self.plane.state.accepting = False
        log.info("refusing new requests; answering the %d in flight", self.plane.state.in_flight)
        if self.watcher is not None:
            self.watcher.stop(max(0.0, deadline - time.monotonic()))
        drained = self.plane.state.wait_idle(deadline)
        self.plane.state.drained = True  # refusals from now on wait for the transport to stop
        settle_until = min(deadline, time.monotonic() + SETTLE_MAX_S)
        self.plane.state.wait_settled(SETTLE_QUIET_S, settle_until)
        if self.grpc is not None:
            self.grpc.stop(max(0.0, deadline - time.monotonic()))
        if self.http is not None:
            self.http.stop(max(0.0, deadline - time.monotonic()))
        if not self.models.unload_all(deadline):
            drained = False
        if not drained:
            log.error("the grace period ended with work still running; it is abandoned")
        self.pool.close()
        self.plane.shared_memory.close()
        self.tracing.shutdown()
        self.audit.close()
        if self.metrics is not None:
            self.metrics.close()
        log.info("stopped")
        return drained

    def _model_readiness(self, model: str, ready: bool) -> None:
        if self.grpc is not None:
            self.grpc.model_readiness(model, ready)

    def _model_rows(self) -> list[ModelRow]:
        """Model versions for the metrics collector; runs on the metrics HTTP thread, so it
        copies what it reads and gives up on a registry that changed under it."""
        rows = []
        try:
            for name in self.registry.names():
                for version, entry in self.registry.entries(name).items():
                    model = entry.model
                    depths: tuple[tuple[int, int], ...] = ()
                    if model is not None:
                        levels = range(1, model.scheduler.config.priority_levels + 1)
                        depths = tuple((lvl, model.scheduler.queue_depth(lvl)) for lvl in levels)
                    in_flight = model.in_flight if model is not None else 0
                    row = ModelRow(name, version, entry.state.value, depths, in_flight)
                    if model is not None and model.drift is not None:
                        scores = model.drift.scores()
                        row = dataclasses.replace(
                            row,
                            drift_scores=tuple((s.feature, s.psi, s.ks) for s in scores),
                            drift_alert=model.drift.alert(scores),
                            drift_window_rows=model.drift.window_rows,
                        )
                    rows.append(row)
        except RuntimeError:  # a dict changed size mid-read: report what was read
            log.debug("model registry changed during a metrics scrape")
        return rows

    def _models_to_load_at_start(self) -> list[str]:
        on_disk = self.models.model_names_on_disk()
        settings = self.settings
        if not on_disk:
            log.warning(
                "the model repository %s holds no model directory (<model>/<version>/"
                "model.onnx): nothing to serve",
                settings.model_repository,
            )
        if settings.model_control_mode != "explicit":
            if settings.load_models:
                log.warning(
                    "--load-model is ignored in model control mode '%s': every model in the "
                    "repository loads; use --model-control-mode explicit to choose",
                    settings.model_control_mode,
                )
            return on_disk
        if "*" in settings.load_models:
            return on_disk
        missing = sorted(set(settings.load_models) - set(on_disk))
        if missing:
            log.error("--load-model names models not in the repository: %s", ", ".join(missing))
        return [name for name in on_disk if name in settings.load_models]


def _model_source(settings: ServerSettings) -> ModelRepository:
    """Where models come from: an MLflow registry when one is named, else the repository."""
    if not settings.mlflow_tracking_uri:
        return ModelRepository(settings.model_repository, settings.model_name)
    cache_dir = settings.mlflow_cache_dir
    if settings.worker_index is not None:  # a cache is one process's: each worker has its own
        cache_dir = cache_dir / f"worker-{settings.worker_index}"
    return MlflowRepository(
        MlflowOptions(
            tracking_uri=settings.mlflow_tracking_uri,
            cache_dir=cache_dir,
            models=settings.mlflow_models,
            alias=settings.mlflow_alias,
            second_alias=settings.mlflow_second_alias,
            cache_max_bytes=settings.mlflow_cache_max_bytes,
        )
    )
