"""The GRPCInferenceService servicer: thin by design.

Each RPC converts protobuf to domain objects, calls one core function and converts back; errors
leave through server/status.py. RPCs that are not implemented answer UNIMPLEMENTED saying so.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any

import grpc
from google.protobuf import json_format

from runtimes.errors import (
    CapacityError,
    InvalidInputError,
    ModelNotFoundError,
    NotAllowedError,
    ShuttingDownError,
    TensorgateError,
    UnsupportedError,
)
from server import __version__
from server._proto import grpc_service_pb2 as pb
from server._proto import grpc_service_pb2_grpc as pb_grpc
from server._proto import model_config_pb2 as mc
from server.dataplane.shared_memory import SharedMemoryRegistry
from server.grpc_api import codec, status, streaming
from server.models.manager import ModelManager
from server.models.registry import ModelRegistry
from server.models.served import ServedModel
from server.observability.metrics import ServerMetrics
from server.observability.stats import Duration, ModelStats
from server.observability.tracing import Tracing
from server.security.audit import AuditLog
from server.security.tokens import TokenStore

SERVER_NAME = "tensorgate"
# Protocol extensions tensorgate implements (perf_analyzer reads "statistics" from here).
EXTENSIONS = (
    "model_configuration",
    "model_repository",
    "statistics",
    "schedule_policy",
    "system_shared_memory",
)
# The stream header with which a client asks for errors as a gRPC status that ends the stream
# (Triton's); without it, an error is that request's error_message and the stream goes on.
GRPC_ERROR_HEADER = "triton_grpc_error"


class ServerState:
    """Whether the server takes new work (flipped once, at shutdown), and how many inference
    requests it is still answering, so that shutdown can wait for them."""

    def __init__(self) -> None:
        self.accepting = False
        self.in_flight = 0
        self.last_arrival_s = 0.0  # monotonic time of the last inference call, even refused
        self._idle = asyncio.Event()
        self._idle.set()

    def begin(self) -> None:
        """A request is being answered; end() must follow (a plain pair, not a context
        manager: this runs on every request)."""
        self.in_flight += 1
        self._idle.clear()

    def end(self) -> None:
        self.in_flight -= 1
        if not self.in_flight:
            self._idle.set()

    async def wait_quiet(self, quiet_s: float, deadline_s: float) -> None:
        """Wait until no inference call has arrived for quiet_s (or the deadline): gRPC cancels
        calls that arrive while its server stops, so the listener closes only once clients
        have taken their UNAVAILABLE answers and gone."""
        while (now := time.monotonic()) < deadline_s:
            remaining_quiet = quiet_s - (now - self.last_arrival_s)
            if remaining_quiet <= 0:
                return
            await asyncio.sleep(min(remaining_quiet, deadline_s - now))

    async def wait_idle(self, timeout_s: float) -> bool:
        """Wait until no inference request is in flight; False if the time ran out first."""
        if self._idle.is_set():
            return True
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except asyncio.TimeoutError:
            return False
        return True


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(
        self,
        registry: ModelRegistry,
        state: ServerState,
        models: ModelManager,
        *,
        explicit_control: bool,
        tracing: Tracing | None = None,
        metrics: ServerMetrics | None = None,
        shared_memory: SharedMemoryRegistry | None = None,
        stream_max_in_flight: int = streaming.DEFAULT_MAX_IN_FLIGHT,
        audit: AuditLog | None = None,
        tokens: TokenStore | None = None,
        limits: codec.RequestLimits = codec.DEFAULT_LIMITS,
        max_concurrent_streams: int = 256,
    ) -> None:
        self._registry = registry
        self._state = state
        self._models = models
        self._explicit_control = explicit_control
        self._tracing = tracing or Tracing()
        self._shared_memory = shared_memory or SharedMemoryRegistry()
        self._stream_max_in_flight = stream_max_in_flight
        self.record_call = metrics.grpc_call if metrics else _ignore_call
        self._audit = audit or AuditLog(None)
        self._tokens = tokens
        self._limits = limits
        self._max_streams = max_concurrent_streams
        self._active_streams = 0

    # health and metadata -----------------------------------------------------------------------

    @status.unary
    async def ServerLive(self, request: pb.ServerLiveRequest, context: object):
        return pb.ServerLiveResponse(live=True)

    @status.unary
    async def ServerReady(self, request: pb.ServerReadyRequest, context: object):
        ready = self._state.accepting and all(
            self._registry.is_ready(name) or self._registry.is_unloaded(name)
            for name in self._registry.names()
        )
        return pb.ServerReadyResponse(ready=ready)

    @status.unary
    async def ModelReady(self, request: pb.ModelReadyRequest, context: object):
        try:
            self._registry.resolve(request.name, request.version)
        except TensorgateError:
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=True)

    @status.unary
    async def ServerMetadata(self, request: pb.ServerMetadataRequest, context: object):
        return pb.ServerMetadataResponse(
            name=SERVER_NAME, version=__version__, extensions=EXTENSIONS
        )

    @status.unary
    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context: object):
        model = self._registry.resolve(request.name, request.version)
        signature = model.signature

        def tensors(specs: object) -> list[pb.ModelMetadataResponse.TensorMetadata]:
            return [
                pb.ModelMetadataResponse.TensorMetadata(
                    name=spec.name, datatype=spec.datatype, shape=signature.full_shape(spec)
                )
                for spec in specs
            ]

        versions = [str(v) for v, e in self._registry.entries(model.name).items() if e.model]
        return pb.ModelMetadataResponse(
            name=model.name,
            versions=versions,
            platform=model.config.platform,
            inputs=tensors(signature.inputs),
            outputs=tensors(signature.outputs),
        )

    @status.unary
    async def ModelConfig(self, request: pb.ModelConfigRequest, context: object):
        model = self._registry.resolve(request.name, request.version)
        return pb.ModelConfigResponse(config=model.config)

    @status.unary
    async def ModelStatistics(self, request: pb.ModelStatisticsRequest, context: object):
        if request.name:
            if request.version:
                models = [self._registry.resolve(request.name, request.version)]
            else:
                self._registry.resolve(request.name)
                models = [m for m in self._registry.ready_models() if m.name == request.name]
        elif request.version:
            raise ModelNotFoundError("a version needs a model name in ModelStatistics")
        else:
            models = list(self._registry.ready_models())
        return pb.ModelStatisticsResponse(model_stats=[_statistics(m) for m in models])

    # inference ---------------------------------------------------------------------------------

    @status.unary
    async def ModelInfer(self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext):
        return await self._infer(request, context)

    @status.bidi_streaming
    def ModelStreamInfer(
        self, request_iterator: AsyncIterator[pb.ModelInferRequest], context: Any
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        grpc_errors = _wants_grpc_errors(context.invocation_metadata())

        async def handle(request: pb.ModelInferRequest) -> pb.ModelStreamInferResponse:
            return pb.ModelStreamInferResponse(infer_response=await self._infer(request, context))

        def on_error(
            request: pb.ModelInferRequest, error: Exception
        ) -> pb.ModelStreamInferResponse:
            if grpc_errors:
                raise error
            return pb.ModelStreamInferResponse(
                error_message=status.error_message("ModelStreamInfer", error),
                infer_response=pb.ModelInferResponse(
                    model_name=getattr(request, "model_name", ""),  # "" for an undecodable one
                    model_version=getattr(request, "model_version", ""),
                    id=getattr(request, "id", ""),
                ),
            )

        return self._counted_stream(
            streaming.serve_stream(
                request_iterator,
                handle,
                on_error,
                max_in_flight=self._stream_max_in_flight,
                name="ModelStreamInfer",
            )
        )

    async def _counted_stream(
        self, stream: AsyncIterator[pb.ModelStreamInferResponse]
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        """Refuse a stream beyond --max-concurrent-streams; count the open ones."""
        if self._active_streams >= self._max_streams:
            await stream.aclose()
            raise CapacityError(
                f"the server has {self._active_streams} streams open, its limit "
                "(--max-concurrent-streams); retry later"
            )
        self._active_streams += 1
        try:
            async with contextlib.aclosing(stream):
                async for response in stream:
                    yield response
        finally:
            self._active_streams -= 1

    async def _infer(
        self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelInferResponse:
        """The core of ModelInfer and of each request of a ModelStreamInfer stream (one frame:
        this runs on every request)."""
        status.check_decoded(request)
        state = self._state
        arrived_s = state.last_arrival_s = time.monotonic()
        if not state.accepting:
            raise ShuttingDownError("server is shutting down")
        remaining_s = context.time_remaining()
        deadline_s = arrived_s + remaining_s if remaining_s is not None else None
        model = self._registry.resolve(request.model_name, request.model_version)
        state.begin()
        model.request_started()
        tracing = self._tracing
        try:
            with tracing.request(context, model.name, model.version, request.id) as span:
                with tracing.span("decode"):
                    inference = codec.decode_infer_request(
                        request, self._shared_memory, self._limits
                    )
                outputs = await model.infer(inference, deadline_s, span)
                with tracing.span("encode"):
                    response = codec.encode_infer_response(
                        model.name,
                        str(model.version),
                        request.id,
                        outputs,
                        inference.shared_memory_outputs,
                        self._shared_memory,
                    )
        except BaseException as error:
            model.request_finished(arrived_s, error)
            raise
        finally:
            state.end()
        model.request_finished(arrived_s, None)
        return response

    # extensions not implemented yet --------------------------------------------------------------

    # repository control -------------------------------------------------------------------------

    @status.unary
    async def RepositoryIndex(self, request: pb.RepositoryIndexRequest, context: object):
        return pb.RepositoryIndexResponse(
            models=[
                pb.RepositoryIndexResponse.ModelIndex(
                    name=entry.name, version=entry.version, state=entry.state, reason=entry.reason
                )
                for entry in self._models.index(ready_only=request.ready)
            ]
        )

    @status.unary
    async def RepositoryModelLoad(self, request: pb.RepositoryModelLoadRequest, context: object):
        override = "config" in request.parameters
        with self._audited(context, "RepositoryModelLoad", request.model_name, override):
            self._require_explicit_control("RepositoryModelLoad")
            await self._models.load(request.model_name, _config_override(request.parameters))
        return pb.RepositoryModelLoadResponse()

    @status.unary
    async def RepositoryModelUnload(
        self, request: pb.RepositoryModelUnloadRequest, context: object
    ):
        with self._audited(context, "RepositoryModelUnload", request.model_name):
            self._require_explicit_control("RepositoryModelUnload")
            await self._models.unload(request.model_name)
        return pb.RepositoryModelUnloadResponse()

    def _audited(
        self,
        context: grpc.aio.ServicerContext,
        action: str,
        model: str = "",
        override: bool = False,
        region: str = "",
    ) -> AbstractContextManager[None]:
        """Audit-log a control action with who asked for it and how it ended."""
        identity = self._tokens.identify(context.invocation_metadata()) if self._tokens else None
        extra: dict[str, object] = {"config_override": True} if override else {}
        if region:
            extra["region"] = region
        name = identity.name if identity else "anonymous"
        return self._audit.action(context.peer(), name, action, model=model, **extra)

    def _require_explicit_control(self, rpc: str) -> None:
        if not self._explicit_control:
            raise NotAllowedError(
                f"{rpc} needs --model-control-mode explicit; this server's models follow "
                "its start-up load or the repository on disk"
            )

    # system shared memory ------------------------------------------------------------------------

    @status.unary
    async def SystemSharedMemoryStatus(
        self, request: pb.SystemSharedMemoryStatusRequest, context: object
    ):
        Region = pb.SystemSharedMemoryStatusResponse.RegionStatus
        return pb.SystemSharedMemoryStatusResponse(
            regions={
                region.name: Region(
                    name=region.name,
                    key=region.key,
                    offset=region.offset,
                    byte_size=region.byte_size,
                )
                for region in self._shared_memory.status(request.name)
            }
        )

    @status.unary
    async def SystemSharedMemoryRegister(
        self, request: pb.SystemSharedMemoryRegisterRequest, context: grpc.aio.ServicerContext
    ):
        with self._audited(context, "SystemSharedMemoryRegister", region=request.name):
            self._shared_memory.register(
                request.name, request.key, request.offset, request.byte_size
            )
        return pb.SystemSharedMemoryRegisterResponse()

    @status.unary
    async def SystemSharedMemoryUnregister(
        self, request: pb.SystemSharedMemoryUnregisterRequest, context: grpc.aio.ServicerContext
    ):
        with self._audited(context, "SystemSharedMemoryUnregister", region=request.name):
            self._shared_memory.unregister(request.name)
        return pb.SystemSharedMemoryUnregisterResponse()

    # extensions not implemented -------------------------------------------------------------------

    @status.unary
    async def CudaSharedMemoryStatus(self, request: object, context: object):
        raise UnsupportedError(_NO_CUDA_SHARED_MEMORY)

    @status.unary
    async def CudaSharedMemoryRegister(self, request: object, context: object):
        raise UnsupportedError(_NO_CUDA_SHARED_MEMORY)

    @status.unary
    async def CudaSharedMemoryUnregister(self, request: object, context: object):
        raise UnsupportedError(_NO_CUDA_SHARED_MEMORY)

    @status.unary
    async def TraceSetting(self, request: object, context: object):
        raise UnsupportedError("trace settings are not supported yet")

    @status.unary
    async def LogSettings(self, request: object, context: object):
        raise UnsupportedError("log settings are not supported yet")


_NO_CUDA_SHARED_MEMORY = (
    "CUDA shared memory is not supported: this server cannot map a client's GPU memory (that "
    "needs CUDA IPC through a CUDA runtime, which it does not use); use system shared memory"
)


def _ignore_call(method: str, code: str) -> None:
    pass


def _wants_grpc_errors(metadata: Sequence[tuple[str, Any]] | None) -> bool:
    return any(
        key == GRPC_ERROR_HEADER and str(value).strip().lower() == "true"
        for key, value in metadata or ()
    )


def _config_override(
    parameters: Mapping[str, pb.ModelRepositoryParameter],
) -> mc.ModelConfig | None:
    """The optional "config" load parameter: a model config in JSON, as Triton accepts."""
    files = [key for key in parameters if key.startswith("file:")]
    if files:
        raise UnsupportedError(
            f"load parameter '{files[0]}': loading model files over gRPC is not supported; "
            "put them in the model repository"
        )
    if "config" not in parameters:
        return None
    text = parameters["config"].string_param
    try:
        return json_format.Parse(text, mc.ModelConfig())
    except json_format.ParseError as exc:
        raise InvalidInputError(
            f"load parameter 'config' is not a valid model config: {exc}"
        ) from exc


def _statistics(model: ServedModel) -> pb.ModelStatistics:
    stats: ModelStats = model.stats

    def duration(value: Duration) -> pb.StatisticDuration:
        return pb.StatisticDuration(count=value.count, ns=value.ns)

    return pb.ModelStatistics(
        name=model.name,
        version=str(model.version),
        last_inference=stats.last_inference_ms,
        inference_count=stats.inference_count,
        execution_count=stats.execution_count,
        inference_stats=pb.InferStatistics(
            success=duration(stats.success),
            fail=duration(stats.fail),
            queue=duration(stats.queue),
            compute_input=duration(stats.compute_input),
            compute_infer=duration(stats.compute_infer),
            compute_output=duration(stats.compute_output),
        ),
        batch_stats=[
            pb.InferBatchStatistics(
                batch_size=size,
                compute_input=duration(per_size.compute_input),
                compute_infer=duration(per_size.compute_infer),
                compute_output=duration(per_size.compute_output),
            )
            for size, per_size in sorted(stats.batch_stats.items())
        ],
    )
