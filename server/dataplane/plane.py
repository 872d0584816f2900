"""The data plane: what every front end (gRPC, HTTP) asks of the server, in one place.

It owns the server's state (live, ready, shutting down, requests in flight), resolves models and
versions, validates requests against the model, submits them to the model's batcher, accounts
for them (statistics, metrics, traces, drift) and answers the server-wide questions (metadata,
statistics, repository control, shared memory). It knows no transport: a front end hands it a
`decode` function (its message -> InferenceRequest) and an `encode` function (InferenceResult ->
its message), and gets back what `encode` made.

The hot path of one inference, from the RPC to the runtime and back, is listed step by step,
with file and line, in docs/architecture.md.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from batching.errors import SchedulerStoppedError
from batching.request import PendingRequest
from batching.scheduler import Lead
from batching.waiter import Waiter
from runtimes.base import TensorSpec
from runtimes.errors import TensorgateError
from server._proto import model_config_pb2 as mc
from server.dataplane.classification import classify
from server.dataplane.errors import ModelNotFoundError, NotAllowedError, ShuttingDownError
from server.dataplane.inference import Call, InferenceRequest, InferenceResult
from server.dataplane.inflight import InflightBytes
from server.dataplane.load_parameters import parse_load_parameters
from server.dataplane.shared_memory import CudaSharedMemory, SharedMemoryRegistry
from server.dataplane.state import ServerState
from server.dataplane.validation import validate_inputs, validate_requested_outputs
from server.models.manager import IndexEntry, ModelManager
from server.models.registry import ModelRegistry
from server.models.served import ServedModel
from server.observability.metrics import SUCCESS, outcome_of
from server.observability.tracing import RequestSpan, Tracing

log = logging.getLogger(__name__)

Message = TypeVar("Message")


@dataclass(slots=True)
class Ticket:
    """A request submitted to its model and not yet answered."""

    model: ServedModel
    request: InferenceRequest
    pending: PendingRequest
    output_names: tuple[str, ...]
    received_s: float
    span: RequestSpan | None


@dataclass(frozen=True)
class TensorMetadata:
    name: str
    datatype: str
    shape: tuple[int, ...]  # the full shape, -1 for a variable dimension (batch included)


@dataclass(frozen=True)
class ModelMetadata:
    name: str
    versions: tuple[str, ...]
    platform: str
    inputs: tuple[TensorMetadata, ...]
    outputs: tuple[TensorMetadata, ...]


class DataPlane:
    def __init__(
        self,
        registry: ModelRegistry,
        models: ModelManager,
        *,
        explicit_control: bool,
        tracing: Tracing | None = None,
        shared_memory: SharedMemoryRegistry | None = None,
        max_upload_bytes: int = 1 << 30,
        max_inflight_bytes: int = 0,
    ) -> None:
        """max_upload_bytes: the most model-file bytes one load request may carry (each front
        end's message limit applies first). max_inflight_bytes: the front ends' budget of
        request bytes in flight (dataplane/inflight.py); 0 for none."""
        self.state = ServerState()
        self.registry = registry
        self.models = models
        self.shared_memory = shared_memory or SharedMemoryRegistry()
        self.cuda_shared_memory = CudaSharedMemory()
        self._explicit_control = explicit_control
        self._max_upload_bytes = max_upload_bytes
        self._tracing = tracing or Tracing()
        self.inflight = InflightBytes(max_inflight_bytes)

    # health and metadata -----------------------------------------------------------------------

    def ready(self) -> bool:
        """Accepting requests, and every model that is meant to serve has a ready version."""
        registry = self.registry
        state = self.state
        return (
            state.accepting
            and not state.stopping
            and all(
                registry.is_ready(name) or registry.is_unloaded(name) for name in registry.names()
            )
        )

    def model_ready(self, name: str, version: str = "") -> bool:
        try:
            self.registry.resolve(name, version)
        except TensorgateError:  # unknown, not ready, or a malformed version
            return False
        return True

    def model(self, name: str, version: str = "") -> ServedModel:
        """The ready model version a call names (NOT_FOUND / UNAVAILABLE otherwise)."""
        return self.registry.resolve(name, version)

    def model_config(self, name: str, version: str = "") -> mc.ModelConfig:
        return self.registry.resolve(name, version).config

    def model_metadata(self, name: str, version: str = "") -> ModelMetadata:
        model = self.registry.resolve(name, version)
        signature = model.signature

        def tensors(specs: Sequence[TensorSpec]) -> tuple[TensorMetadata, ...]:
            return tuple(
                TensorMetadata(spec.name, spec.datatype, signature.full_shape(spec))
                for spec in specs
            )

        versions = [str(v) for v, e in self.registry.entries(model.name).items() if e.model]
        return ModelMetadata(
            name=model.name,
            versions=tuple(versions),
            platform=model.config.platform,
            inputs=tensors(signature.inputs),
            outputs=tensors(signature.outputs),
        )

    def statistics(self, name: str = "", version: str = "") -> list[ServedModel]:
        """The ready model versions whose statistics a call asks for: one version, every
        version of a model, or every model."""
        if name:
            if version:
                return [self.registry.resolve(name, version)]
            self.registry.resolve(name)
            return [m for m in self.registry.ready_models() if m.name == name]
        if version:
            raise ModelNotFoundError("a version needs a model name in ModelStatistics")
        return list(self.registry.ready_models())

    # inference ---------------------------------------------------------------------------------

    def infer(
        self,
        model_name: str,
        model_version: str,
        request_id: str,
        decode: Callable[[], InferenceRequest],
        encode: Callable[[InferenceResult], Message],
        call: Call,
    ) -> Message:
        """Answer one request on the calling thread: submit it, run or wait for its batch, and
        encode the answer. Raises a TensorgateError when the request fails."""
        if call.waiter is None:
            call.waiter = Waiter()
        ticket, lead = self.submit(model_name, model_version, request_id, decode, call)
        if lead is not None:
            lead.run(call.waiter.compute_hooks)
        ticket.model.scheduler.wait(ticket.pending)
        return self.complete(ticket, encode)

    def submit(
        self,
        model_name: str,
        model_version: str,
        request_id: str,
        decode: Callable[[], InferenceRequest],
        call: Call,
    ) -> tuple[Ticket, Lead | None]:
        """Resolve, decode, validate and queue a request without waiting for it. call.waiter
        hears of the answer; a returned Lead is a batch for the caller to run now."""
        state = self.state
        if not state.accepting:
            state.last_refused_s = time.monotonic()
            raise ShuttingDownError("server is shutting down")
        received_s = time.monotonic()
        # Resolved before decoding: a request for an unknown model costs no decoding.
        model = self.registry.resolve(model_name, model_version)
        span = (
            self._tracing.start_request(call.trace_headers, model.name, model.version, request_id)
            if self._tracing.enabled
            else None
        )
        state.begin()
        model.request_started()
        try:
            model.scheduler.precheck()  # a latency target refuses before decoding
            if span is None:
                request = decode()
            else:
                with self._tracing.child(span, "decode"):
                    request = decode()
            output_names = validate_requested_outputs(
                model.name, model.signature, request.requested_outputs
            )
            validate_inputs(model.name, model.signature, request.inputs)
            pending, lead, model = self._enqueue(model, request, output_names, call, span)
        except BaseException as error:
            self._account(model, received_s, span, outcome_of(error))
            raise
        ticket = Ticket(model, request, pending, output_names, received_s, span)
        return ticket, lead

    def complete(self, ticket: Ticket, encode: Callable[[InferenceResult], Message]) -> Message:
        """Encode the answer of an answered ticket; raises the error that failed it."""
        model, pending = ticket.model, ticket.pending
        try:
            if pending.error is not None:
                # Raised from no local: no frame holds the error its traceback holds.
                raise pending.take_error()
            assert pending.outputs is not None
            outputs = pending.outputs
            ordered = {name: outputs[name] for name in ticket.output_names}
            request = ticket.request
            if request.classifications:
                ordered = self._classified(model, request.classifications, ordered)
            result = InferenceResult(
                model.name, str(model.version), request.id, ordered, request.shared_memory_outputs
            )
            if ticket.span is None:
                message = encode(result)
            else:
                with self._tracing.child(ticket.span, "encode"):
                    message = encode(result)
        except BaseException as error:
            self._account(model, ticket.received_s, ticket.span, outcome_of(error))
            raise
        self._account(model, ticket.received_s, ticket.span, SUCCESS)
        if model.drift is not None:
            model.drift.offer(ticket.request.inputs, ordered)
        return message

    @staticmethod
    def _classified(
        model: ServedModel, classes: Mapping[str, int], outputs: dict[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        """Outputs requested with `classification: k` as their top-k classes."""
        batched = model.signature.max_batch_size > 0
        return {
            name: classify(
                values, classes[name], model.labels.get(name, ()), batched=batched, output=name
            )
            if name in classes
            else values
            for name, values in outputs.items()
        }

    def _enqueue(
        self,
        model: ServedModel,
        request: InferenceRequest,
        output_names: tuple[str, ...],
        call: Call,
        span: RequestSpan | None,
    ) -> tuple[PendingRequest, Lead | None, ServedModel]:
        """Submit to the model's batcher. A request that raced a reload (its version was
        retired between resolving and submitting) goes to the version now serving."""
        waiter = call.waiter if call.waiter is not None else Waiter()
        try:
            pending, lead = model.scheduler.submit(
                request.inputs,
                output_names,
                waiter=waiter,
                priority_level=request.priority,
                timeout_us=request.timeout_us,
                deadline_s=call.deadline_s,
                trace=span,
            )
            return pending, lead, model
        except SchedulerStoppedError:
            current = self.registry.resolve(request.model_name, request.model_version)
            if current is model:
                raise
        model.request_moved()
        current.request_started()
        return self._enqueue(current, request, output_names, call, span)

    def _account(
        self, model: ServedModel, received_s: float, span: RequestSpan | None, outcome: str
    ) -> None:
        self.state.end()
        model.request_finished(received_s, outcome)
        if span is not None:
            self._tracing.end_request(span, outcome)

    # repository control ------------------------------------------------------------------------

    def repository_index(self, ready_only: bool) -> list[IndexEntry]:
        return self.models.index(ready_only=ready_only)

    def load_model(
        self, name: str, parameters: Mapping[str, object] | None = None, *, base64_files: bool
    ) -> None:
        """Load or reload `name` (explicit control mode), from the repository or from model
        files in the request. A refusal's message starts with Triton's "failed to load
        '<name>'", which clients match on."""
        self._require_explicit_control("RepositoryModelLoad")
        try:
            request = parse_load_parameters(
                parameters or {}, base64_files=base64_files, max_file_bytes=self._max_upload_bytes
            )
            self.models.load(name, request.config, request.files or None)
        except TensorgateError as error:
            raise type(error)(f"failed to load '{name}': {error}") from None

    def unload_model(self, name: str) -> None:
        self._require_explicit_control("RepositoryModelUnload")
        self.models.unload(name)

    def _require_explicit_control(self, action: str) -> None:
        if not self._explicit_control:
            raise NotAllowedError(
                f"{action} needs --model-control-mode explicit; this server's models follow "
                "its start-up load or the repository on disk"
            )
