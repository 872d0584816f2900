"""The GRPCInferenceService servicer: decode, call the data plane, encode.

Every method converts protobuf to domain objects, calls one data plane function and converts
back; errors leave through grpc_api/status.py. Handlers run on grpc's synchronous server, one
call per thread (grpc_api/threads.py): a call that waits for its batch blocks its thread and lends
its run slot to the next call.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, NoReturn, cast

import grpc

from batching.scheduler import Lead
from batching.waiter import Waiter
from server import __version__
from server._proto import grpc_service_pb2 as pb
from server._proto import grpc_service_pb2_grpc as pb_grpc
from server.dataplane.errors import UnsupportedError
from server.dataplane.inference import DEFAULT_LIMITS, Call, RequestLimits
from server.dataplane.load_parameters import FILE_PREFIX
from server.dataplane.plane import DataPlane, ModelMetadata, TensorMetadata, Ticket
from server.grpc_api import codec, status, streaming, wire
from server.grpc_api.threads import SlotPool
from server.models.served import ServedModel
from server.observability.stats import Duration, ModelStats
from server.security.audit import AuditLog
from server.security.tokens import TokenStore

SERVER_NAME = "tensorgate"
# Protocol extensions tensorgate implements (perf_analyzer reads "statistics" from here).
EXTENSIONS = (
    "classification",
    "model_configuration",
    "model_repository",
    "statistics",
    "schedule_policy",
    "system_shared_memory",
)
# The stream header with which a client asks for errors as a gRPC status that ends the stream
# (Triton's); without it, an error is that request's error_message and the stream goes on.
GRPC_ERROR_HEADER = "triton_grpc_error"
# grpc's time_remaining() for a call without a deadline is about 2**63 seconds.
_NO_DEADLINE_S = 1e12
# A refusal held during shutdown is answered this long before the call's deadline at the latest,
# and never held longer than the second figure (the transport's stop ends every hold sooner).
_REFUSAL_MARGIN_S = 0.05
_MAX_REFUSAL_HOLD_S = 60.0


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(
        self,
        plane: DataPlane,
        pool: SlotPool | None = None,
        *,
        record_call: status.CallRecorder | None = None,
        stream_max_in_flight: int = streaming.DEFAULT_MAX_IN_FLIGHT,
        audit: AuditLog | None = None,
        tokens: TokenStore | None = None,
        limits: RequestLimits = DEFAULT_LIMITS,
        max_concurrent_streams: int = 256,
        trace_headers: bool = False,
        max_message_bytes: int | None = None,
    ) -> None:
        """trace_headers: pass each call's metadata to the data plane for its traceparent."""
        self._plane = plane
        self._pool = pool
        self._shared_memory = plane.shared_memory
        self._cuda_shared_memory = plane.cuda_shared_memory
        self._stream_max_in_flight = stream_max_in_flight
        self.record_call = record_call or _ignore_call
        self._audit = audit or AuditLog(None)
        self._tokens = tokens
        self._limits = limits
        self._trace_headers = trace_headers
        self._max_streams = max_concurrent_streams
        self._active_streams = 0
        self._streams_lock = threading.Lock()
        self._encode = functools.partial(
            codec.encode_infer_response,
            shared_memory=self._shared_memory,
            max_message_bytes=max_message_bytes,
        )
        # A unary answer is serialised by wire.serialize_infer_response, which takes a big one
        # as a SplitResponse; a stream's is nested in another message and stays protobuf's.
        self._encode_unary = functools.partial(self._encode, split_from_bytes=wire.SPLIT_FROM_BYTES)

    # health and metadata -----------------------------------------------------------------------

    @status.unary
    def ServerLive(self, request: pb.ServerLiveRequest, context: object) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    @status.unary
    def ServerReady(
        self, request: pb.ServerReadyRequest, context: object
    ) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self._plane.ready())

    @status.unary
    def ModelReady(self, request: pb.ModelReadyRequest, context: object) -> pb.ModelReadyResponse:
        return pb.ModelReadyResponse(ready=self._plane.model_ready(request.name, request.version))

    @status.unary
    def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: object
    ) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(
            name=SERVER_NAME, version=__version__, extensions=EXTENSIONS
        )

    @status.unary
    def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: object
    ) -> pb.ModelMetadataResponse:
        return _metadata_response(self._plane.model_metadata(request.name, request.version))

    @status.unary
    def ModelConfig(
        self, request: pb.ModelConfigRequest, context: object
    ) -> pb.ModelConfigResponse:
        return pb.ModelConfigResponse(
            config=self._plane.model_config(request.name, request.version)
        )

    @status.unary
    def ModelStatistics(
        self, request: pb.ModelStatisticsRequest, context: object
    ) -> pb.ModelStatisticsResponse:
        models = self._plane.statistics(request.name, request.version)
        return pb.ModelStatisticsResponse(model_stats=[_statistics(m) for m in models])

    # inference ---------------------------------------------------------------------------------

    @status.unary
    def ModelInfer(
        self, request: pb.ModelInferRequest | wire.SplitRequest, context: grpc.ServicerContext
    ) -> pb.ModelInferResponse | wire.SplitResponse:
        if not self._plane.state.accepting:
            self._hold_refusal(context)
        raw = None
        if isinstance(request, wire.SplitRequest):  # a big one (grpc_api/wire.py)
            size = request.byte_size
            raw = request.take_raw_inputs()
            message = request.message
        else:
            size = request.ByteSize()
            message = request
        inflight = self._plane.inflight
        inflight.take(size)
        try:
            return self._plane.infer(
                message.model_name,
                message.model_version,
                message.id,
                lambda: codec.decode_infer_request(message, self._shared_memory, self._limits, raw),
                self._encode_unary,
                self._call(context),
            )
        finally:
            inflight.give_back(size)

    def ModelStreamInfer(
        self, request_iterator: Iterator[object], context: grpc.ServicerContext
    ) -> Iterator[pb.ModelStreamInferResponse]:
        """Refuse a stream beyond --max-concurrent-streams; count the open ones; answer every
        request (grpc_api/streaming.py). Counted once in the call metrics by how it ends."""
        name = "ModelStreamInfer"
        grpc_errors = _wants_grpc_errors(context.invocation_metadata())
        with self._streams_lock:
            admitted = self._active_streams < self._max_streams
            if admitted:
                self._active_streams += 1
        if not admitted:
            self.record_call(name, "RESOURCE_EXHAUSTED")
            status.fail(
                context,
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"the server has {self._max_streams} streams open, its limit "
                "(--max-concurrent-streams); retry later",
            )

        def on_error(request: object, error: Exception) -> pb.ModelStreamInferResponse:
            if grpc_errors:
                raise error
            return pb.ModelStreamInferResponse(
                error_message=status.failure(name, error)[1],
                infer_response=pb.ModelInferResponse(
                    model_name=getattr(request, "model_name", ""),  # "" for an undecodable one
                    model_version=getattr(request, "model_version", ""),
                    id=getattr(request, "id", ""),
                ),
            )

        answers = streaming.serve_stream(
            request_iterator,
            _StreamRequests(self, context),
            on_error,
            max_in_flight=self._stream_max_in_flight,
            hooks=self._pool,
            on_end=context.add_callback,
            name=name,
        )
        code, message = grpc.StatusCode.OK, ""
        try:
            yield from answers
        except GeneratorExit:
            code = grpc.StatusCode.CANCELLED
            raise
        except streaming.ClientGone:
            code = grpc.StatusCode.CANCELLED
            return
        except Exception as error:
            code, message = status.failure(name, error)
        finally:
            with self._streams_lock:
                self._active_streams -= 1
            self.record_call(name, code.name)
        if code is not grpc.StatusCode.OK:
            status.fail(context, code, message)

    def _hold_refusal(self, context: grpc.ServicerContext) -> None:
        """A call that comes as the server stops may wait for its listener to close before it
        is refused (ServerState.hold_refusal), within its deadline; its run slot is lent."""
        limit_s = min(context.time_remaining() - _REFUSAL_MARGIN_S, _MAX_REFUSAL_HOLD_S)
        pool = self._pool
        if pool is None:
            self._plane.state.hold_refusal(limit_s)
            return
        pool.blocking()
        try:
            self._plane.state.hold_refusal(limit_s)
        finally:
            pool.resumed()

    def _call(self, context: grpc.ServicerContext) -> Call:
        """The data plane's view of a gRPC call: its deadline, the waiter of its thread (which
        cancels the request if the client goes away while it waits), its trace context."""
        remaining = context.time_remaining()
        deadline_s = time.monotonic() + remaining if remaining < _NO_DEADLINE_S else None
        waiter = _CallWaiter(self._pool, context)
        headers = context.invocation_metadata() if self._trace_headers else None
        return Call(deadline_s, waiter, headers)

    # repository control ------------------------------------------------------------------------

    @status.unary
    def RepositoryIndex(
        self, request: pb.RepositoryIndexRequest, context: object
    ) -> pb.RepositoryIndexResponse:
        return pb.RepositoryIndexResponse(
            models=[
                pb.RepositoryIndexResponse.ModelIndex(
                    name=entry.name, version=entry.version, state=entry.state, reason=entry.reason
                )
                for entry in self._plane.repository_index(ready_only=request.ready)
            ]
        )

    @status.unary
    def RepositoryModelLoad(
        self, request: pb.RepositoryModelLoadRequest, context: grpc.ServicerContext
    ) -> pb.RepositoryModelLoadResponse:
        parameters = _load_parameters(request.parameters)
        files = sum(1 for key in parameters if key.startswith(FILE_PREFIX))
        override = "config" in parameters
        with self._audited(context, "RepositoryModelLoad", request.model_name, override, files):
            self._plane.load_model(request.model_name, parameters, base64_files=False)
        return pb.RepositoryModelLoadResponse()

    @status.unary
    def RepositoryModelUnload(
        self, request: pb.RepositoryModelUnloadRequest, context: grpc.ServicerContext
    ) -> pb.RepositoryModelUnloadResponse:
        with self._audited(context, "RepositoryModelUnload", request.model_name):
            self._plane.unload_model(request.model_name)
        return pb.RepositoryModelUnloadResponse()

    def _audited(
        self,
        context: grpc.ServicerContext,
        action: str,
        model: str = "",
        override: bool = False,
        files: int = 0,
        region: str = "",
    ) -> AbstractContextManager[None]:
        """Audit-log a control action with who asked for it and how it ended."""
        identity = self._tokens.identify(context.invocation_metadata()) if self._tokens else None
        extra: dict[str, object] = {"config_override": True} if override else {}
        if files:
            extra["model_files"] = files
        if region:
            extra["region"] = region
        name = identity.name if identity else "anonymous"
        return self._audit.action(context.peer(), name, action, model=model, **extra)

    # system shared memory ------------------------------------------------------------------------

    @status.unary
    def SystemSharedMemoryStatus(
        self, request: pb.SystemSharedMemoryStatusRequest, context: object
    ) -> pb.SystemSharedMemoryStatusResponse:
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
    def SystemSharedMemoryRegister(
        self, request: pb.SystemSharedMemoryRegisterRequest, context: grpc.ServicerContext
    ) -> pb.SystemSharedMemoryRegisterResponse:
        with self._audited(context, "SystemSharedMemoryRegister", region=request.name):
            self._shared_memory.register(
                request.name, request.key, request.offset, request.byte_size
            )
        return pb.SystemSharedMemoryRegisterResponse()

    @status.unary
    def SystemSharedMemoryUnregister(
        self, request: pb.SystemSharedMemoryUnregisterRequest, context: grpc.ServicerContext
    ) -> pb.SystemSharedMemoryUnregisterResponse:
        with self._audited(context, "SystemSharedMemoryUnregister", region=request.name):
            self._shared_memory.unregister(request.name)
        return pb.SystemSharedMemoryUnregisterResponse()

    @status.unary
    def CudaSharedMemoryStatus(
        self, request: pb.CudaSharedMemoryStatusRequest, context: grpc.ServicerContext
    ) -> pb.CudaSharedMemoryStatusResponse:
        self._cuda_shared_memory.status(request.name)  # none registered: empty, or NOT_FOUND
        return pb.CudaSharedMemoryStatusResponse()

    @status.unary
    def CudaSharedMemoryRegister(
        self, request: pb.CudaSharedMemoryRegisterRequest, context: grpc.ServicerContext
    ) -> NoReturn:
        with self._audited(context, "CudaSharedMemoryRegister", region=request.name):
            self._cuda_shared_memory.register(request.name)
        raise AssertionError("register always refuses")  # pragma: no cover

    @status.unary
    def CudaSharedMemoryUnregister(
        self, request: pb.CudaSharedMemoryUnregisterRequest, context: grpc.ServicerContext
    ) -> pb.CudaSharedMemoryUnregisterResponse:
        self._cuda_shared_memory.unregister(request.name)
        return pb.CudaSharedMemoryUnregisterResponse()

    # extensions not implemented -------------------------------------------------------------------

    @status.unary
    def TraceSetting(self, request: object, context: object) -> NoReturn:
        raise UnsupportedError("trace settings are not supported yet")

    @status.unary
    def LogSettings(self, request: object, context: object) -> NoReturn:
        raise UnsupportedError("log settings are not supported yet")


class _CallWaiter(Waiter):
    """A unary call's waiter: lends the thread's run slot while it blocks, and on its first
    block asks grpc to tell it if the client goes away.

    Nothing the waiter holds holds it back (its hooks are the pool): a waiter and per-call hooks
    that referred to each other made every call a reference cycle, which kept the call's grpc
    state alive until the cyclic garbage collector came (about 50 collections a second at 2,000
    calls a second, each ~0.5 ms, and a full one of ~30 ms every second or two; none without
    the cycle). grpc drops the callback registered here when the call ends.
    """

    __slots__ = ("_context", "_watching")

    def __init__(self, pool: SlotPool | None, context: grpc.ServicerContext) -> None:
        # The run slots are lent the same way while it waits as while it computes.
        super().__init__(hooks=pool, compute_hooks=pool)
        self._context = context
        self._watching = False

    def blocking(self) -> None:
        if not self._watching:
            self._watching = True
            self._context.add_callback(self._terminated)
        super().blocking()

    def _terminated(self) -> None:
        """The call ended (answered, or the client went away); harmless once answered."""
        self.cancelled = True
        self.notify()


class _StreamRequests:
    """The data plane calls behind one stream (grpc_api/streaming.py's StreamHandler)."""

    def __init__(self, servicer: InferenceServicer, context: grpc.ServicerContext) -> None:
        self._servicer = servicer
        self._plane = servicer._plane
        remaining = context.time_remaining()
        self._deadline_s = time.monotonic() + remaining if remaining < _NO_DEADLINE_S else None
        self._headers = context.invocation_metadata() if servicer._trace_headers else None
        # Bytes each submitted request holds in the server-wide budget (--max-inflight-bytes),
        # given back when its ticket is finished or discarded: every ticket ends in one of them.
        self._held: dict[int, int] = {}

    def start(self, request: Any, waiter: Waiter) -> tuple[Ticket, Lead | None]:
        status.check_decoded(request)
        servicer = self._servicer
        size = request.ByteSize()
        inflight = self._plane.inflight
        inflight.take(size)
        try:
            ticket, lead = self._plane.submit(
                request.model_name,
                request.model_version,
                request.id,
                lambda: codec.decode_infer_request(
                    request, servicer._shared_memory, servicer._limits
                ),
                Call(self._deadline_s, waiter, self._headers),
            )
        except BaseException:
            inflight.give_back(size)
            raise
        self._held[id(ticket)] = size
        return ticket, lead

    def finish(self, ticket: Ticket) -> pb.ModelStreamInferResponse:
        try:
            response = self._plane.complete(ticket, self._servicer._encode)  # never split
        finally:
            self._give_back(ticket)
        return pb.ModelStreamInferResponse(infer_response=cast(pb.ModelInferResponse, response))

    def cancel(self, ticket: Ticket) -> None:
        ticket.model.scheduler.cancel(ticket.pending)

    def discard(self, ticket: Ticket) -> None:
        try:
            with contextlib.suppress(Exception):  # its outcome is counted; nobody is there to tell
                self._plane.complete(ticket, _nothing)
        finally:
            self._give_back(ticket)

    def _give_back(self, ticket: Ticket) -> None:
        size = self._held.pop(id(ticket), 0)  # dict.pop is atomic: finish and discard race
        if size:
            self._plane.inflight.give_back(size)


def _nothing(result: object) -> None:
    return None


def _ignore_call(method: str, code: str) -> None:
    pass


def _wants_grpc_errors(metadata: Sequence[tuple[str, Any]] | None) -> bool:
    return any(
        key == GRPC_ERROR_HEADER and str(value).strip().lower() == "true"
        for key, value in metadata or ()
    )


def _load_parameters(parameters: Mapping[str, pb.ModelRepositoryParameter]) -> dict[str, object]:
    """Each load parameter's value, whichever of the oneof fields holds it."""
    values: dict[str, object] = {}
    for key, parameter in parameters.items():
        field = parameter.WhichOneof("parameter_choice")
        values[key] = getattr(parameter, field) if field else None
    return values


def _metadata_response(metadata: ModelMetadata) -> pb.ModelMetadataResponse:
    def tensors(items: Sequence[TensorMetadata]) -> list[pb.ModelMetadataResponse.TensorMetadata]:
        return [
            pb.ModelMetadataResponse.TensorMetadata(
                name=tensor.name, datatype=tensor.datatype, shape=tensor.shape
            )
            for tensor in items
        ]

    return pb.ModelMetadataResponse(
        name=metadata.name,
        versions=metadata.versions,
        platform=metadata.platform,
        inputs=tensors(metadata.inputs),
        outputs=tensors(metadata.outputs),
    )


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
