"""The gRPC front end: grpc's synchronous server with the inference service, grpc.health.v1 and
reflection, on the data plane.

Why grpc's synchronous server and not grpc.aio: a bare handler answers about 1.2-1.5x as many
calls a second from a pool of two threads as from grpc.aio on this machine
(benchmarks/transports.py), and a call that waits for its batch blocks a thread without the GIL,
costing nothing. The pool's run slots (grpc_api/threads.py) keep the fast small-pool behaviour
while any number of calls wait.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from server._proto import grpc_service_pb2 as pb
from server.dataplane.inference import RequestLimits
from server.dataplane.plane import DataPlane
from server.grpc_api.auth import AuthInterceptor
from server.grpc_api.registration import add_inference_service
from server.grpc_api.servicer import InferenceServicer
from server.grpc_api.threads import SlotPool
from server.grpc_api.tls import CertificateFiles
from server.security.audit import AuditLog
from server.security.tokens import TokenStore
from server.settings import ServerSettings

log = logging.getLogger(__name__)

INFERENCE_SERVICE = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
MAX_HEALTH_WATCHES = 64  # grpc.health.v1 Watch streams open at once (more wait for a place)
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def grpc_options(settings: ServerSettings) -> list[tuple[str, int]]:
    """Channel arguments for the server: message limits, keepalive, connection age, port use."""
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
        # Sockets that never finish a handshake, idle connections, and a cap on connections:
        # a flood of sockets is shed while real clients keep being served.
        ("grpc.server_handshake_timeout_ms", int(settings.handshake_timeout_s * 1000)),
        ("grpc.max_allowed_incoming_connections", settings.max_connections),
    ]
    if settings.max_connection_idle_s > 0:
        options.append(("grpc.max_connection_idle_ms", int(settings.max_connection_idle_s * 1000)))
    if settings.max_connection_age_s > 0:
        options += [
            ("grpc.max_connection_age_ms", int(settings.max_connection_age_s * 1000)),
            ("grpc.max_connection_age_grace_ms", int(settings.max_connection_age_grace_s * 1000)),
        ]
    return options


class GrpcFrontEnd:
    """Bound at construction (a port in use fails before any model loads); serves after start."""

    def __init__(
        self,
        settings: ServerSettings,
        plane: DataPlane,
        pool: SlotPool,
        *,
        limits: RequestLimits,
        record_call: Callable[[str, str], None] | None,
        tokens: TokenStore | None,
        audit: AuditLog,
        trace_headers: bool,
    ) -> None:
        self.settings = settings
        self._state = plane.state
        # Watch streams block a thread each, from a pool of their own: grpc_health's non-blocking
        # Watch sends updates while holding its lock, and its close callback (on grpc's polling
        # thread) takes that lock; with the synchronous server the two deadlock whenever a
        # watcher goes away during an update (every server call then hangs).
        self._watch_threads = ThreadPoolExecutor(MAX_HEALTH_WATCHES, "health-watch")
        self.health = health.HealthServicer(
            experimental_non_blocking=False, experimental_thread_pool=self._watch_threads
        )
        self.pool = pool
        interceptors = [AuthInterceptor(tokens, audit)] if tokens is not None else []
        server = grpc.server(
            self.pool,  # an executor as far as grpc is concerned: it only calls submit
            options=grpc_options(settings),
            interceptors=interceptors,
            # Beyond this many calls at once, RESOURCE_EXHAUSTED at once: no unbounded queue.
            maximum_concurrent_rpcs=settings.max_concurrent_calls,
        )
        servicer = InferenceServicer(
            plane,
            self.pool,
            record_call=record_call,
            audit=audit,
            tokens=tokens,
            limits=limits,
            max_concurrent_streams=settings.max_concurrent_streams,
            trace_headers=trace_headers,
            max_message_bytes=settings.max_message_bytes,
        )
        add_inference_service(servicer, server)
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
        self._server = server
        self._health_server: grpc.Server | None = None
        if settings.grpc_health_port:
            self._health_server = grpc.server(SlotPool(1, 16, "health"))
            health_pb2_grpc.add_HealthServicer_to_server(self.health, self._health_server)
            self._health_server.add_insecure_port(
                f"{settings.grpc_host}:{settings.grpc_health_port}"
            )

    def _bind(self, server: grpc.Server) -> int:
        settings = self.settings
        address = f"{settings.grpc_host}:{settings.grpc_port}"
        try:
            port: int
            if settings.tls_cert_file is not None and settings.tls_key_file is not None:
                certificates = CertificateFiles(
                    settings.tls_cert_file, settings.tls_key_file, settings.tls_client_ca_file
                )
                port = server.add_secure_port(address, certificates.credentials())
                mutual = " with client certificates required" if settings.tls_client_ca_file else ""
                log.info("TLS on%s", mutual)
                return port
            port = server.add_insecure_port(address)
            return port
        except RuntimeError as error:  # grpc says only "Failed to bind to address"
            raise OSError(
                f"cannot listen for gRPC on {address}: the port is in use (another server?) or "
                "the address is not one of this machine's; choose another --grpc-port"
            ) from error

    def start(self) -> None:
        self._server.start()
        if self._health_server is not None:
            self._health_server.start()
            log.info("health checks also on plaintext port %d", self.settings.grpc_health_port)
        self.health.set("", SERVING)
        self.health.set(INFERENCE_SERVICE, SERVING)

    def model_readiness(self, model: str, ready: bool) -> None:
        """The model manager's readiness listener: a model's own grpc.health.v1 status."""
        self.health.set(model, SERVING if ready else NOT_SERVING)

    def stopping(self) -> None:
        """Health turns NOT_SERVING everywhere; calls are still served."""
        self.health.enter_graceful_shutdown()

    def stop(self, grace_s: float) -> None:
        """Stop taking calls; wait up to grace_s for those under way (every inference the
        server accepted has been answered already: only refusals remain)."""
        event = self._server.stop(grace_s)
        self._state.transport_stopping.set()  # held refusals go out now (ServerState)
        event.wait(grace_s + 1)
        if self._health_server is not None:
            self._health_server.stop(0)
        self._watch_threads.shutdown(wait=False)
