"""The composition root: settings -> repository -> registry -> schedulers -> servicer -> grpc.aio.

start() loads every model, then binds and starts serving; stop() turns health NOT_SERVING,
stops accepting, lets in-flight calls finish within the grace period, then unloads the models.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection
from opentelemetry.sdk.trace import SpanProcessor

from runtimes.errors import TensorgateError
from server._proto import grpc_service_pb2 as pb
from server.dataplane.shared_memory import SharedMemoryRegistry
from server.grpc_api.codec import RequestLimits
from server.grpc_api.registration import add_inference_service
from server.grpc_api.servicer import InferenceServicer, ServerState
from server.models.loader import LoadOptions
from server.models.manager import ModelManager
from server.models.registry import ModelRegistry
from server.models.watcher import RepositoryWatcher
from server.observability.metrics import ModelRow, ModelStateCollector, ServerMetrics
from server.observability.tracing import Tracing
from server.security.audit import AuditLog
from server.security.tokens import AuthInterceptor, CertificateFiles, TokenStore
from server.settings import ServerSettings

log = logging.getLogger(__name__)

# After draining, the listener closes once no call has come for this long (see wait_quiet).
QUIET_BEFORE_CLOSE_S = 0.2
INFERENCE_SERVICE = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name


def grpc_options(settings: ServerSettings) -> list[tuple[str, int]]:
    """Channel arguments for the server: message limits, keepalive, connection age."""
    options = [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.keepalive_time_ms", int(settings.keepalive_time_s * 1000)),
        ("grpc.keepalive_timeout_ms", int(settings.keepalive_timeout_s * 1000)),
        # Clients may ping every 10 s even without calls (tritonclient's keepalive default).
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        # gRPC sets SO_REUSEPORT by default on Linux, so a second server on a used port would
        # bind silently and take half the connections; only --workers' children share a port.
        ("grpc.so_reuseport", 1 if settings.worker_index is not None else 0),
    ]
    if settings.max_connection_age_s > 0:
        options += [
            ("grpc.max_connection_age_ms", int(settings.max_connection_age_s * 1000)),
            ("grpc.max_connection_age_grace_ms", int(settings.max_connection_age_grace_s * 1000)),
        ]
    return options


class TensorgateServer:
    def __init__(
        self, settings: ServerSettings, span_processors: Sequence[SpanProcessor] = ()
    ) -> None:
        """span_processors receive every span in addition to the configured exporter (tests
        pass an in-memory exporter here)."""
        self.settings = settings
        self.registry = ModelRegistry()
        self.shared_memory = SharedMemoryRegistry()
        self.state = ServerState()
        self.health = HealthServicer()
        self.metrics = ServerMetrics() if settings.metrics_enabled else None
        self.audit = AuditLog(settings.audit_log)
        self.tokens = TokenStore.load(settings.auth_tokens_file, settings.auth_tokens)
        self.tracing = Tracing(
            settings.trace_exporter, settings.trace_sample_ratio, processors=span_processors
        )
        self.models = ModelManager(
            self.registry,
            self.health,
            LoadOptions(
                default_max_batch_size=settings.default_max_batch_size,
                metrics=self.metrics,
                tracing=self.tracing,
            ),
            settings.model_repository,
        )
        self.watcher = (
            RepositoryWatcher(settings.model_repository, self.models, settings.repository_poll_s)
            if settings.model_control_mode == "poll"
            else None
        )
        self._server: grpc.aio.Server | None = None
        self._health_server: grpc.aio.Server | None = None
        self.port: int = 0
        self.metrics_port: int = 0

    async def start(self) -> None:
        settings = self.settings
        log.info(
            "model repository: %s (model control mode %s)",
            settings.model_repository,
            settings.model_control_mode,
        )
        if self.metrics is not None:
            self.metrics.add_collector(ModelStateCollector(self._model_rows))
            self.metrics_port = self.metrics.serve(settings.grpc_host, settings.metrics_port)
            log.info("metrics on http://%s:%d/metrics", settings.grpc_host, self.metrics_port)
        if self.watcher is not None:
            self.watcher.mark_applied()
        for name in self._models_to_load_at_start():
            try:
                await self.models.load(name)
            except TensorgateError as error:
                log.error("model '%s' is not serving: %s", name, error)
        if self.watcher is not None:
            self.watcher.start()

        interceptors = []
        if self.tokens is not None:
            interceptors.append(AuthInterceptor(self.tokens, self.audit))
            log.info("authentication on: %d token(s)", len(self.tokens))
        else:
            log.warning(
                "AUTHENTICATION IS OFF: anyone who can reach the gRPC port can run inference "
                "and control models; give --auth-tokens-file (or TENSORGATE_AUTH_TOKENS) to "
                "require bearer tokens"
            )
        server = grpc.aio.server(options=grpc_options(settings), interceptors=interceptors)
        add_inference_service(
            InferenceServicer(
                self.registry,
                self.state,
                self.models,
                explicit_control=settings.model_control_mode == "explicit",
                tracing=self.tracing,
                metrics=self.metrics,
                shared_memory=self.shared_memory,
                audit=self.audit,
                tokens=self.tokens,
                limits=RequestLimits(
                    max_inputs=settings.max_inputs,
                    max_tensor_elements=settings.max_tensor_elements,
                    max_tensor_bytes=settings.max_tensor_bytes,
                    max_bytes_element=settings.max_bytes_element,
                ),
                max_concurrent_streams=settings.max_concurrent_streams,
            ),
            server,
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(
            (
                INFERENCE_SERVICE,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ),
            server,
        )
        self.port = self._bind(server)
        await server.start()
        self._server = server
        if settings.grpc_health_port:
            self._health_server = grpc.aio.server()
            health_pb2_grpc.add_HealthServicer_to_server(self.health, self._health_server)
            self._health_server.add_insecure_port(
                f"{settings.grpc_host}:{settings.grpc_health_port}"
            )
            await self._health_server.start()
            log.info("health checks also on plaintext port %d", settings.grpc_health_port)
        self.state.accepting = True
        await self.health.set("", health_pb2.HealthCheckResponse.SERVING)
        await self.health.set(INFERENCE_SERVICE, health_pb2.HealthCheckResponse.SERVING)
        log.info("listening for gRPC on %s:%d", settings.grpc_host, self.port)

    def _bind(self, server: grpc.aio.Server) -> int:
        settings = self.settings
        address = f"{settings.grpc_host}:{settings.grpc_port}"
        try:
            if settings.tls_cert_file is not None and settings.tls_key_file is not None:
                certificates = CertificateFiles(
                    settings.tls_cert_file, settings.tls_key_file, settings.tls_client_ca_file
                )
                port = server.add_secure_port(address, certificates.credentials())
                mutual = " with client certificates required" if settings.tls_client_ca_file else ""
                log.info("TLS on%s", mutual)
                return port
            return server.add_insecure_port(address)
        except RuntimeError as error:  # grpc says only "Failed to bind to address"
            raise OSError(
                f"cannot listen for gRPC on {address}: the port is in use (another server?) or "
                "the address is not one of this machine's; choose another --grpc-port"
            ) from error

    async def stop(self, grace_s: float | None = None) -> bool:
        """Drain and stop; False when work was still running at the end of the grace period
        (its threads cannot be stopped: the caller should exit the process without them).

        The listener stays open while requests drain, so late calls get a clear UNAVAILABLE
        ("server is shutting down") that clients retry elsewhere, instead of being cut off.
        """
        grace_s = self.settings.grace_period_s if grace_s is None else grace_s
        deadline = time.monotonic() + grace_s
        log.info("shutting down (grace period %.1fs)", grace_s)
        await self.health.enter_graceful_shutdown()
        delay_s = min(self.settings.shutdown_delay_s, grace_s)
        if delay_s > 0:  # still serving: health-checking clients and load balancers move away
            log.info("health is NOT_SERVING; still serving for %.1fs", delay_s)
            await asyncio.sleep(delay_s)
        self.state.accepting = False
        if self.watcher is not None:
            await self.watcher.stop()
        drained = await self.state.wait_idle(max(0.0, deadline - time.monotonic()))
        await self.state.wait_quiet(QUIET_BEFORE_CLOSE_S, deadline)
        if self._server is not None:
            await self._server.stop(max(0.0, deadline - time.monotonic()))
        if self._health_server is not None:
            await self._health_server.stop(0)
        try:
            await asyncio.wait_for(
                self.models.unload_all(), timeout=max(0.1, deadline - time.monotonic())
            )
        except asyncio.TimeoutError:
            drained = False
        if not drained:
            log.error("the grace period ended with work still running; it is abandoned")
        self.shared_memory.close()
        self.tracing.shutdown()
        self.audit.close()
        if self.metrics is not None:
            self.metrics.close()
        log.info("stopped")
        return drained

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

    async def wait_for_termination(self) -> None:
        if self._server is not None:
            await self._server.wait_for_termination()
