"""IO binding for onnxruntime sessions on a GPU.

Without it, `session.run` copies numpy inputs to the device from pageable memory and allocates
fresh host outputs on every call. With it, each batch's inputs are staged into host buffers that
are reused across batches (page-locked on a GPU, so the host-to-device copy is one DMA), each
input crosses to the device once, and each output comes back once. CUDA graphs (the CUDA
provider's `enable_cuda_graph`) need IO binding with device buffers whose addresses never change:
one graph is captured per distinct set of input shapes, each with its own fixed buffers.

The same code runs on the CPU provider (device "cpu"), which is how its buffer handling is tested
without a GPU; there it only adds a copy, so OnnxRuntime uses it on the CPU only when asked.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from runtimes import datatypes
from runtimes.base import TensorSpec
from runtimes.errors import InvalidInputError

log = logging.getLogger(__name__)

# The run option onnxruntime reads to pick the CUDA graph a run captures or replays; -1 runs
# without capturing. Ids must be positive (0 is onnxruntime's own default graph).
GRAPH_ID_KEY = "gpu_graph_id"
NO_GRAPH = "-1"
DEFAULT_MAX_GRAPHS = 32  # one per distinct batch shape: max_batch_size 32 needs at most 32
_CUDA_HOST_REGISTER_PORTABLE = 1  # page-locked for every CUDA context (instances on other GPUs)

# What a captured graph is for: each input's (name, shape, dtype string), and the output names.
_GraphKey = tuple[tuple[tuple[str, tuple[int, ...], str], ...], tuple[str, ...]]


class CudaHostPinner:
    """Page-locks numpy buffers with cudaHostRegister, through the CUDA runtime onnxruntime's
    CUDA provider has already loaded (so no CUDA Python package is needed)."""

    def __init__(self, cudart: ctypes.CDLL) -> None:
        self._register = cudart.cudaHostRegister
        self._register.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint]
        self._register.restype = ctypes.c_int
        self._unregister = cudart.cudaHostUnregister
        self._unregister.argtypes = [ctypes.c_void_p]
        self._unregister.restype = ctypes.c_int

    @classmethod
    def load(cls) -> CudaHostPinner | None:
        """The pinner, or None (buffers stay pageable) when no CUDA runtime is loaded."""
        for name in (*_loaded_libraries("libcudart.so"), "libcudart.so.13", "libcudart.so.12"):
            try:
                return cls(ctypes.CDLL(name))
            except (OSError, AttributeError):
                continue
        return None

    def pin(self, buffer: np.ndarray) -> bool:
        status: int = self._register(
            buffer.ctypes.data, buffer.nbytes, _CUDA_HOST_REGISTER_PORTABLE
        )
        return status == 0

    def unpin(self, buffer: np.ndarray) -> None:
        self._unregister(buffer.ctypes.data)


def _loaded_libraries(prefix: str) -> list[str]:
    """Paths of shared libraries named prefix* mapped into this process (Linux)."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return []
    paths = {line.split()[-1] for line in maps.splitlines() if f"/{prefix}" in line}
    return sorted(paths)


class HostBuffers:
    """One staging buffer per input name, reused across batches and regrown (to a power of two
    bytes) only when a batch needs more; page-locked when a pinner is given."""

    def __init__(self, pinner: CudaHostPinner | None = None) -> None:
        self._pinner = pinner
        self._buffers: dict[str, tuple[np.ndarray, bool]] = {}
        self.allocations = 0  # buffers allocated so far: reuse keeps this flat

    def stage(self, name: str, array: np.ndarray) -> np.ndarray:
        """`array` copied into the buffer of `name`; valid until the next stage of `name`."""
        buffer = self._buffer(name, array.nbytes)
        view = buffer[: array.nbytes].view(array.dtype).reshape(array.shape)
        np.copyto(view, array, casting="no")
        return view

    @property
    def pinned(self) -> bool:
        return any(pinned for _, pinned in self._buffers.values())

    def _buffer(self, name: str, nbytes: int) -> np.ndarray:
        held = self._buffers.get(name)
        if held is not None and held[0].nbytes >= nbytes:
            return held[0]
        self._release(name)
        buffer = np.empty(1 << max(nbytes - 1, 63).bit_length(), np.uint8)  # >= 64 bytes
        pinned = self._pinner.pin(buffer) if self._pinner else False
        self._buffers[name] = (buffer, pinned)
        self.allocations += 1
        return buffer

    def _release(self, name: str) -> None:
        held = self._buffers.pop(name, None)
        if held is not None and held[1] and self._pinner:
            self._pinner.unpin(held[0])

    def close(self) -> None:
        for name in list(self._buffers):
            self._release(name)


@dataclass
class _Graph:
    """The fixed device buffers, binding and run options of one captured CUDA graph."""

    binding: ort.IOBinding
    inputs: dict[str, ort.OrtValue]
    outputs: dict[str, ort.OrtValue]
    run_options: ort.RunOptions
    ran: bool = False


class IoBindingRunner:
    """Runs one session through IO binding. `device` is "cuda" or "cpu" (onnxruntime's names);
    with cuda_graph, each new input shape gets fixed device buffers and a graph id of its own,
    up to max_graphs; later shapes run without a graph rather than fail."""

    def __init__(
        self,
        session: ort.InferenceSession,
        outputs: Sequence[TensorSpec],
        *,
        device: str,
        device_id: int = 0,
        batches: bool,
        cuda_graph: bool = False,
        max_graphs: int = DEFAULT_MAX_GRAPHS,
        pinner: CudaHostPinner | None = None,
    ) -> None:
        self._session = session
        self._output_specs = {spec.name: spec for spec in outputs}
        self._device, self._device_id = device, device_id
        self._batches = batches
        self._cuda_graph, self._max_graphs = cuda_graph, max_graphs
        self._host = HostBuffers(pinner)
        self._input_shapes = {arg.name: arg.shape for arg in session.get_inputs()}
        self._binding = session.io_binding()
        self._graphs: dict[_GraphKey, _Graph] = {}
        self._last_graph_id = 0  # never reused, even for a graph dropped before it captured
        self._plain_options = ort.RunOptions()
        if cuda_graph:
            self._plain_options.add_run_config_entry(GRAPH_ID_KEY, NO_GRAPH)
            unknown = [s for s in outputs if any(d < 0 for d in s.shape[1 if batches else 0 :])]
            if unknown:
                raise ValueError(
                    f"CUDA graphs need output shapes known from the batch size; output "
                    f"'{unknown[0].name}' has shape {list(unknown[0].shape)}"
                )
        self._lock = threading.Lock()  # the buffers and bindings serve one batch at a time

    @property
    def host_buffers(self) -> HostBuffers:
        return self._host

    @property
    def graph_count(self) -> int:
        return len(self._graphs)

    def run(self, feeds: Mapping[str, np.ndarray], output_names: Sequence[str]) -> list[np.ndarray]:
        """The outputs named, as fresh host arrays (never views of a reused buffer, so a batch's
        results stay valid while the next batch runs)."""
        self._check(feeds, output_names)
        with self._lock:
            shapes = tuple((name, v.shape, v.dtype.str) for name, v in sorted(feeds.items()))
            key: _GraphKey = (shapes, tuple(output_names))
            graph = self._graph_for(key, feeds, output_names) if self._cuda_graph else None
            if graph is None:
                return self._run_plain(feeds, output_names)
            try:
                for name, value in feeds.items():
                    graph.inputs[name].update_inplace(self._host.stage(name, value))
                self._session.run_with_iobinding(graph.binding, graph.run_options)
            except Exception:
                if not graph.ran:  # never captured: free its buffers and its graph id
                    del self._graphs[key]
                raise
            graph.ran = True
            results: list[np.ndarray] = graph.binding.copy_outputs_to_cpu()
            return results

    def _check(self, feeds: Mapping[str, np.ndarray], output_names: Sequence[str]) -> None:
        """Names and fixed dimensions, checked here: a wrong shape must not get a graph of its
        own, and onnxruntime reports binding errors as plain RuntimeErrors."""
        for name in output_names:
            if name not in self._output_specs:
                raise InvalidInputError(f"the model has no output '{name}'")
        for name, value in feeds.items():
            expected = self._input_shapes.get(name)
            if expected is None:
                raise InvalidInputError(f"the model has no input '{name}'")
            fits = len(expected) == value.ndim and all(
                not isinstance(want, int) or want < 0 or want == got
                for want, got in zip(expected, value.shape, strict=True)
            )
            if not fits:
                raise InvalidInputError(
                    f"input '{name}' has shape {list(value.shape)}, the model takes "
                    f"{[d if isinstance(d, int) else -1 for d in expected]}"
                )

    def _run_plain(
        self, feeds: Mapping[str, np.ndarray], output_names: Sequence[str]
    ) -> list[np.ndarray]:
        # Inputs bound as host memory: onnxruntime copies each to the device once, in the run.
        # Outputs are rebound every run: a bound output keeps the buffer onnxruntime allocated
        # last time, whose shape is wrong for a batch of another size.
        binding = self._binding
        binding.clear_binding_inputs()
        binding.clear_binding_outputs()
        for name, value in feeds.items():
            staged = self._host.stage(name, value)
            binding.bind_input(name, "cpu", 0, staged.dtype, staged.shape, staged.ctypes.data)
        for name in output_names:
            binding.bind_output(name, self._device, self._device_id)
        self._session.run_with_iobinding(binding, self._plain_options)
        results: list[np.ndarray] = binding.copy_outputs_to_cpu()
        return results

    def _graph_for(
        self, key: _GraphKey, feeds: Mapping[str, np.ndarray], output_names: Sequence[str]
    ) -> _Graph | None:
        graph = self._graphs.get(key)
        if graph is not None or len(self._graphs) >= self._max_graphs:
            return graph
        rows = next(iter(feeds.values())).shape[0] if self._batches and feeds else 0
        outputs = {}
        for name in output_names:
            spec = self._output_specs[name]
            shape = (rows, *spec.shape[1:]) if self._batches else spec.shape
            outputs[name] = self._allocate(shape, datatypes.BY_NAME[spec.datatype].numpy)
        inputs = {name: self._allocate(value.shape, value.dtype) for name, value in feeds.items()}
        binding = self._session.io_binding()
        for name, value in inputs.items():
            binding.bind_ortvalue_input(name, value)
        for name, value in outputs.items():
            binding.bind_ortvalue_output(name, value)
        self._last_graph_id += 1
        run_options = ort.RunOptions()
        run_options.add_run_config_entry(GRAPH_ID_KEY, str(self._last_graph_id))
        graph = self._graphs[key] = _Graph(binding, inputs, outputs, run_options)
        if len(self._graphs) == self._max_graphs:
            log.warning("%d CUDA graphs captured; new shapes run without one", self._max_graphs)
        return graph

    def _allocate(self, shape: Sequence[int], dtype: np.dtype | None) -> ort.OrtValue:
        return ort.OrtValue.ortvalue_from_shape_and_type(
            list(shape), dtype, self._device, self._device_id
        )

    def close(self) -> None:
        with self._lock:
            self._graphs.clear()
            self._host.close()
