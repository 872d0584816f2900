"""tensorgate against the physical ceilings and the servers a user would pick instead, in one run.

    .venv/bin/python -m benchmarks.compare [--quick] [--servers NAME ...] [--models NAME ...]

On one machine, in one run, for each bundled model: perf_analyzer (gRPC, async, realistic input
data from benchmarks/workloads.py) at concurrency 1, 8, 32 and 64 against

- tensorgate with the bundled configs, alone and with `--workers 2`;
- the bare grpc.aio front end (benchmarks/bare_server.py for the tabular model, its extension
  benchmarks/bare_models.py for the others): no model, a fixed answer;
- the same bare front end calling onnxruntime once per request and nothing else
  (`bare_models.py --with-model`): the floor of any server that runs the model per request;
- tensorgate's own front end with that bare handler in place of its data plane
  (benchmarks/front_end_floor.py, one and two run slots): what tensorgate would answer if its
  data plane cost nothing;
- the peers, each from its own virtual environment (benchmarks/peers/setup.sh installs them):
  Seldon MLServer (adaptive batching on and off, parallel_workers 0 and 1), the KServe Python
  server, NVIDIA PyTriton with Triton's dynamic batcher;

and the in-process onnxruntime ceiling at batch 1 and at the best batch size, measured before
any server starts. All servers run side by side for the whole run and the measurements are
interleaved (for each model and concurrency, every server in turn), so a busy minute on a shared
machine falls on all of them. Every server except the fixed-answer bare one first answers one
request per model, checked against onnxruntime run here, so none is timed returning wrong
answers. Writes
benchmarks/results/compare-<timestamp>.json, .md (tables and the ratios against the targets) and
compare-<timestamp>-<model>.png (throughput against p99 latency, one line per server; drawn with
matplotlib from the plot venv of benchmarks/peers/setup.sh). Loopback only; every server and every
perf_analyzer run is bounded in time; a server that fails is reported and the rest go on.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import dataclasses
import datetime
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import grpc
import numpy as np
import onnxruntime

from benchmarks import wrk
from benchmarks.workloads import WORKLOADS, Workload, in_process_rows_per_s
from server._proto import grpc_service_pb2 as pb
from server._proto import grpc_service_pb2_grpc as pb_grpc
from tests.support.perf_analyzer import (
    PerfAnalyzerError,
    perf_analyzer_available,
    run_perf_analyzer,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS = REPO_ROOT / "benchmarks" / "results"
PEERS_DIR = REPO_ROOT / ".tools" / "peers"
SETUP = REPO_ROOT / "benchmarks" / "peers" / "setup.sh"
_LISTENING = r"listening for {protocol} on (\S+):(\d+)"
_V2_DTYPES = {"FP32": np.float32, "FP64": np.float64, "INT64": np.int64, "INT32": np.int32}
_TYPED_CONTENTS = {"FP32": "fp32_contents", "FP64": "fp64_contents", "INT64": "int64_contents"}

# perf_analyzer's exit statuses for "no stable measurement" (2) and "no request completed in a
# window" (3).
_TOO_SHORT = (2, 3)

TENSORGATE = "tensorgate"
TENSORGATE_WORKERS = "tensorgate --workers 2"
BASELINE = "tensorgate before"  # --baseline CHECKOUT: another checkout, side by side
BARE = "bare grpc.aio"
BARE_SYNC = "bare sync grpc, 2 threads"  # the fastest bare handler (benchmarks/transports.py)
BARE_MODEL = "bare grpc.aio + onnxruntime"
BARE_SYNC_MODEL = "bare sync grpc + onnxruntime, 2 threads"
# tensorgate's own front end with the bare handler in place of the data plane
# (benchmarks/front_end_floor.py): what tensorgate would answer if its data plane cost nothing.
FRONT_END = "tensorgate front end + bare handler"
FRONT_END_2 = "tensorgate front end + bare handler, 2 run slots"


# --- servers ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerSpec:
    """One server configuration of the comparison."""

    name: str  # as it appears in the tables and plots
    group: str  # what --servers selects: tensorgate, bare, mlserver, kserve, pytriton
    venv: str | None  # peer venv under .tools/peers; None: tensorgate's own interpreter
    args: tuple[str, ...]  # after the interpreter; "{spec}" is replaced by the spec path
    models: tuple[str, ...] = tuple(WORKLOADS)
    startup_timeout_s: float = 120.0
    # Average batch sizes from ModelStatistics; not for several processes behind one port, where
    # consecutive calls reach different processes.
    statistics: bool = True
    cwd: Path = REPO_ROOT  # where it runs from (another checkout, for --baseline)
    protocols: tuple[str, ...] = ("grpc", "http")  # what --protocol can measure it on

    @property
    def is_peer(self) -> bool:
        return self.venv is not None


_MLSERVER = ("-m", "benchmarks.peers.mlserver_server", "--spec", "{spec}")
SERVERS = (
    ServerSpec(
        TENSORGATE,
        "tensorgate",
        None,
        ("-m", "server", "serve", "--metrics-port", "0", "--http-port", "0"),
    ),
    ServerSpec(
        TENSORGATE_WORKERS,
        "tensorgate-workers",
        None,
        ("-m", "server", "serve", "--metrics-port", "0", "--http-port", "0", "--workers", "2"),
        statistics=False,
    ),
    ServerSpec(
        BARE,
        "bare",
        None,
        ("-m", "benchmarks.bare_server", "serve"),
        models=("tabular_classifier",),
        protocols=("grpc",),
    ),
    ServerSpec(
        BARE,
        "bare",
        None,
        ("-m", "benchmarks.bare_models", "serve", "--spec", "{spec}"),
        models=("image_classifier", "text_encoder"),
        protocols=("grpc",),
    ),
    ServerSpec(
        BARE_SYNC,
        "bare",
        None,
        ("-m", "benchmarks.bare_server", "serve", "--transport", "sync", "--threads", "2"),
        models=("tabular_classifier",),
        protocols=("grpc",),
    ),
    ServerSpec(
        BARE_MODEL,
        "bare",
        None,
        ("-m", "benchmarks.bare_models", "serve", "--spec", "{spec}", "--with-model"),
        protocols=("grpc",),
    ),
    ServerSpec(
        BARE_SYNC_MODEL,
        "bare",
        None,
        (
            *("-m", "benchmarks.bare_models", "serve", "--spec", "{spec}", "--with-model"),
            *("--transport", "sync", "--threads", "2"),
        ),
        protocols=("grpc",),
    ),
    *(
        ServerSpec(
            name,
            "bare",
            None,
            (
                *("-m", "benchmarks.front_end_floor", "serve", "--metrics-port", "0"),
                *("--http-port", "-1", *extra),
            ),
            models=("tabular_classifier", "image_classifier"),  # no BYTES tensors
            statistics=False,  # it keeps none
            protocols=("grpc",),
        )
        for name, extra in ((FRONT_END, ()), (FRONT_END_2, ("--grpc-handler-threads", "2")))
    ),
    ServerSpec(
        "MLServer, adaptive batching, 0 workers",
        "mlserver",
        "mlserver",
        (*_MLSERVER, "--parallel-workers", "0", "--adaptive-batching"),
    ),
    ServerSpec(
        "MLServer, no batching, 0 workers",
        "mlserver",
        "mlserver",
        (*_MLSERVER, "--parallel-workers", "0"),
    ),
    ServerSpec(
        "MLServer, adaptive batching, 1 worker",
        "mlserver",
        "mlserver",
        (*_MLSERVER, "--parallel-workers", "1", "--adaptive-batching"),
    ),
    ServerSpec(
        "MLServer, no batching, 1 worker",
        "mlserver",
        "mlserver",
        (*_MLSERVER, "--parallel-workers", "1"),
    ),
    ServerSpec(
        "KServe", "kserve", "kserve", ("-m", "benchmarks.peers.kserve_server", "--spec", "{spec}")
    ),
    ServerSpec(
        "PyTriton, dynamic batching",
        "pytriton",
        "pytriton",
        ("-m", "benchmarks.peers.pytriton_server", "--spec", "{spec}"),
    ),
)
GROUPS = ("tensorgate", "tensorgate-workers", "bare", "mlserver", "kserve", "pytriton")
# --baseline adds a server of group "baseline" (not selectable with --servers).
PEER_VERSIONS = {"mlserver": "mlserver", "kserve": "kserve", "pytriton": "nvidia-pytriton"}
LABELS = {"mlserver": "MLServer", "kserve": "KServe", "pytriton": "PyTriton"}


class Process:
    """A server in its own process group, ready once it prints its listening line and every
    model answers ModelReady. Stopping signals the whole group (peers start helpers: MLServer's
    workers, PyTriton's tritonserver and Python stubs)."""

    def __init__(
        self,
        command: Sequence[str],
        models: Sequence[str],
        startup_timeout_s: float,
        env: dict[str, str] | None = None,
        cwd: Path = REPO_ROOT,
        listening: str = "gRPC",
    ) -> None:
        """listening: the protocol whose listening line says the server is up (servers print
        "listening for gRPC on HOST:PORT"; those that also serve HTTP print the same line for
        HTTP, and `http_url` names that port)."""
        self.command = list(command)
        self._listening_line = re.compile(_LISTENING.format(protocol=listening))
        self._http_line = re.compile(_LISTENING.format(protocol="HTTP"))
        self.http_port = 0
        self.log_lines: list[str] = []
        self.port = 0
        self._listening = threading.Event()
        self.process = subprocess.Popen(
            self.command,
            cwd=cwd,
            env={**os.environ, **(env or {})},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read_output, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + startup_timeout_s
        try:
            if not self._listening.wait(startup_timeout_s) or not self.port:
                raise RuntimeError("did not print its listening line")
            if listening == "gRPC":
                wait_ready(self.url, models, deadline)
        except Exception as exc:
            self.stop()
            raise RuntimeError(f"server did not start ({exc}); its output:\n{self.tail()}") from exc

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    def url_for(self, protocol: str) -> str:
        return self.http_url if protocol == "http" else self.url

    def tail(self, lines: int = 30) -> str:
        return "".join(self.log_lines[-lines:])

    def _read_output(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.log_lines.append(line)
            http = self._http_line.search(line)
            if http:
                self.http_port = int(http.group(2))
            match = self._listening_line.search(line)
            if match and not self._listening.is_set():
                self.port = int(match.group(2))
                self._listening.set()
        self._listening.set()

    def _signal_group(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signum)  # the group this Popen started

    def stop(self, timeout_s: float = 20.0) -> None:
        self._signal_group(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout_s)
        # Helpers that outlive the server (or a server that ignored SIGTERM) go too.
        self._signal_group(signal.SIGKILL)
        self.process.wait()
        self._reader.join(5)

    def __enter__(self) -> Process:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wait_ready(url: str, models: Sequence[str], deadline: float) -> None:
    with grpc.insecure_channel(url) as channel:
        grpc.channel_ready_future(channel).result(timeout=max(1.0, deadline - time.monotonic()))
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        pending = list(models)
        while pending:
            try:
                if stub.ModelReady(pb.ModelReadyRequest(name=pending[0]), timeout=5).ready:
                    pending.pop(0)
                    continue
            except grpc.RpcError as exc:
                if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                    return  # benchmarks/bare_server.py: up once it listens

            if time.monotonic() > deadline:
                raise TimeoutError(f"model {pending[0]} not ready in time")
            time.sleep(0.2)


def wait_ready_http(process: Process, models: Sequence[str], deadline: float) -> None:
    """Every model answers GET /v2/models/NAME/ready with 200 on the server's HTTP port."""
    while not process.http_port:
        if time.monotonic() > deadline:
            raise TimeoutError("no 'listening for HTTP' line")
        time.sleep(0.2)
    pending = list(models)
    while pending:
        url = f"http://{process.http_url}/v2/models/{pending[0]}/ready"
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:
                if answer.status == 200:
                    pending.pop(0)
                    continue
        except (urllib.error.URLError, ConnectionError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"model {pending[0]} not ready over HTTP in time")
        time.sleep(0.2)


def interpreter(server: ServerSpec) -> Path:
    if server.venv is None:
        return Path(sys.executable)
    return PEERS_DIR / server.venv / "bin" / "python"


# --- the spec the peers serve ----------------------------------------------------------------


def write_spec(tensorgate: Process, path: Path) -> dict:
    """The bundled models as tensorgate describes them (ModelMetadata, ModelConfig over gRPC,
    and the config's JSON over HTTP), for the peers and the bare server to describe them the
    same way."""
    models = {}
    with grpc.insecure_channel(tensorgate.url) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        for name, workload in WORKLOADS.items():
            metadata = stub.ModelMetadata(pb.ModelMetadataRequest(name=name), timeout=10)
            config = stub.ModelConfig(pb.ModelConfigRequest(name=name), timeout=10)
            batching = config.config.dynamic_batching

            def tensors(items) -> list[dict]:
                return [
                    {"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in items
                ]

            models[name] = {
                "onnx_path": str(workload.model_path),
                "inputs": tensors(metadata.inputs),
                "outputs": tensors(metadata.outputs),
                "max_batch_size": config.config.max_batch_size,
                "max_queue_delay_us": batching.max_queue_delay_microseconds,
                "preferred_batch_sizes": list(batching.preferred_batch_size),
                "model_config_response": base64.b64encode(config.SerializeToString()).decode(),
                "model_config_json": _http_config(tensorgate, name),
            }
    spec = {"models": models}
    path.write_text(json.dumps(spec, indent=1))
    return spec


def _http_config(tensorgate: Process, model: str) -> str:
    if not tensorgate.http_port:
        return ""
    url = f"http://{tensorgate.http_url}/v2/models/{model}/config"
    with urllib.request.urlopen(url, timeout=10) as answer:
        return answer.read().decode()


# --- correctness check -----------------------------------------------------------------------


def _output_arrays(response: pb.ModelInferResponse) -> dict[str, np.ndarray]:
    arrays = {}
    for index, output in enumerate(response.outputs):
        dtype = _V2_DTYPES[output.datatype]
        if index < len(response.raw_output_contents):
            flat = np.frombuffer(response.raw_output_contents[index], dtype)
        else:
            flat = np.asarray(getattr(output.contents, _TYPED_CONTENTS[output.datatype]), dtype)
        arrays[output.name] = flat
    return arrays


def check_answers(url: str, models: Sequence[str]) -> None:
    """One request per model, compared with onnxruntime's answer computed here."""
    with grpc.insecure_channel(url) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        for name in models:
            workload = WORKLOADS[name]
            feeds = workload.batch(1, seed=7)
            session = onnxruntime.InferenceSession(
                str(workload.model_path), providers=["CPUExecutionProvider"]
            )
            expected = dict(
                zip([o.name for o in session.get_outputs()], session.run(None, feeds), strict=True)
            )
            request = pb.ModelInferRequest(model_name=name)
            for input_name, value in feeds.items():
                datatype = "FP32" if value.dtype == np.float32 else "INT64"
                request.inputs.add(name=input_name, datatype=datatype, shape=list(value.shape))
                request.raw_input_contents.append(value.tobytes())
            got = _output_arrays(stub.ModelInfer(request, timeout=30))
            for output_name, want in expected.items():
                if output_name not in got:
                    raise AssertionError(f"{name}: output {output_name} missing")
                if not np.allclose(got[output_name], want.ravel(), rtol=1e-4, atol=1e-5):
                    raise AssertionError(f"{name}: output {output_name} differs from onnxruntime")


# --- measurements ----------------------------------------------------------------------------


@dataclass
class Point:
    server: str
    model: str
    concurrency: int
    throughput: float | None = None
    p50_us: int | None = None
    p90_us: int | None = None
    p99_us: int | None = None
    avg_batch: float | None = None  # from ModelStatistics, where the server has it
    load_1m: float | None = None  # the machine's 1-minute load average when it started
    error: str | None = None


@dataclass
class Ceiling:
    model: str
    batch1_rows_per_s: float
    batch1_us: float  # one batch-1 run, mean
    best_batch: int
    best_rows_per_s: float
    rows_per_s_by_batch: dict[int, float] = field(default_factory=dict)


@dataclass
class Settings:
    concurrencies: list[int]
    rounds: int  # each point is measured this many times (interleaved); the best one counts
    window_ms: int
    ceiling_s: float
    perf_timeout_s: float
    protocol: str = "grpc"  # what perf_analyzer speaks: grpc, or http (v2 REST)
    tensor_format: str = "json"  # over HTTP: JSON tensors, or the binary tensor extension
    load_generator: str = "perf_analyzer"  # or, over HTTP with JSON tensors, benchmarks/wrk.py

    def perf_args(self) -> tuple[str, ...]:
        if self.protocol != "http":
            return ()
        fmt = self.tensor_format
        return ("--input-tensor-format", fmt, "--output-tensor-format", fmt)


def measure_ceiling(workload: Workload, duration_s: float) -> Ceiling:
    by_batch = {}
    size = 1
    while size <= workload.max_batch_size:
        by_batch[size] = in_process_rows_per_s(workload, size, duration_s)
        size *= 2
    best = max(by_batch, key=by_batch.__getitem__)
    return Ceiling(workload.model, by_batch[1], 1e6 / by_batch[1], best, by_batch[best], by_batch)


def _statistics(url: str, model: str) -> tuple[int, int] | None:
    try:
        with grpc.insecure_channel(url) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            stats = stub.ModelStatistics(pb.ModelStatisticsRequest(name=model), timeout=5)
    except grpc.RpcError:
        return None
    if not stats.model_stats:
        return None
    return stats.model_stats[0].inference_count, stats.model_stats[0].execution_count


def measure(
    server: ServerSpec,
    process: Process,
    model: str,
    concurrency: int,
    data: Path,
    settings: Settings,
) -> Point:
    workload = WORKLOADS[model]
    point = Point(server.name, model, concurrency, load_1m=os.getloadavg()[0])
    url = process.url_for(settings.protocol)
    before = _statistics(process.url, model) if server.statistics else None
    if settings.load_generator == "wrk":
        try:
            loaded = wrk.run_wrk(
                url,
                model,
                data,
                concurrency=concurrency,
                duration_s=3 * settings.window_ms / 1000,
                timeout_s=settings.perf_timeout_s,
            )
        except wrk.WrkError as exc:
            point.error = f"wrk: {exc}"
        else:
            point.throughput = loaded.throughput
            point.p50_us, point.p90_us, point.p99_us = loaded.p50_us, loaded.p90_us, loaded.p99_us
            _batch_size(point, process, before)
        print(f"  {_describe(point)}", flush=True)
        return point
    try:
        try:
            result = run_perf_analyzer(
                model,
                url,
                concurrency=concurrency,
                measurement_ms=settings.window_ms,
                timeout_s=settings.perf_timeout_s,
                shapes=workload.shapes,
                input_data=str(data),
                protocol=settings.protocol,
                extra_args=settings.perf_args(),
            )
        except PerfAnalyzerError as exc:
            if exc.returncode not in _TOO_SHORT:
                raise
            # Too few answers in a window (a slow server, or a busy machine): once more, longer.
            result = run_perf_analyzer(
                model,
                url,
                concurrency=concurrency,
                measurement_ms=3 * settings.window_ms,
                timeout_s=settings.perf_timeout_s,
                shapes=workload.shapes,
                input_data=str(data),
                protocol=settings.protocol,
                extra_args=settings.perf_args(),
            )
    except PerfAnalyzerError as exc:
        point.error = _short_error(exc)
    else:
        point.throughput = result.throughput_infer_per_sec
        point.p50_us = result.p50_latency_us
        point.p90_us = result.p90_latency_us
        point.p99_us = result.p99_latency_us
        _batch_size(point, process, before)
    print(f"  {_describe(point)}", flush=True)
    return point


def _batch_size(point: Point, process: Process, before: tuple[int, int] | None) -> None:
    """The average batch the server formed while the point was measured (ModelStatistics)."""
    after = _statistics(process.url, point.model) if before else None
    if before and after and after[1] > before[1]:
        point.avg_batch = (after[0] - before[0]) / (after[1] - before[1])


def wait_for_quiet(limit_s: float, threshold: float = 1.0) -> None:
    """On a shared machine: wait (bounded) until nothing else keeps the CPUs busy."""
    deadline = time.monotonic() + limit_s
    while (load := os.getloadavg()[0]) >= threshold:
        if time.monotonic() >= deadline:
            if limit_s:
                print(f"still busy (load average {load:.1f}); measuring anyway", flush=True)
            return
        print(f"waiting for a quiet machine (load average {load:.1f})", flush=True)
        time.sleep(min(15.0, max(0.0, deadline - time.monotonic())))


def best_of_rounds(measured: list[Point]) -> list[Point]:
    """Each point's best round (highest throughput; its own latencies): on a shared machine,
    other work only ever slows a measurement down. A point fails only if every round failed."""
    best: dict[tuple[str, str, int], Point] = {}
    for p in measured:
        key = (p.server, p.model, p.concurrency)
        held = best.get(key)
        if held is None or (
            not p.error and (held.error or (p.throughput or 0) > (held.throughput or 0))
        ):
            best[key] = p
    return list(best.values())


def _short_error(exc: PerfAnalyzerError) -> str:
    detail = "; ".join(exc.errors[:2]) or (exc.stderr.strip() or exc.stdout.strip())[-300:]
    return f"perf_analyzer {exc.reason} (exit {exc.returncode}): {detail}"


def _describe(p: Point) -> str:
    where = f"{p.server} / {p.model} / c={p.concurrency}"
    if p.error:
        return f"{where}: ERROR {p.error}"
    batch = f", avg batch {p.avg_batch:.1f}" if p.avg_batch else ""
    return (
        f"{where}: {p.throughput:,.0f}/s, p50 {p.p50_us / 1000:.2f} ms, "
        f"p99 {p.p99_us / 1000:.2f} ms{batch}"
    )


def start_server(
    server: ServerSpec,
    spec_path: Path,
    on_up: Callable[[Process], object] | None = None,
    protocol: str = "grpc",
) -> Process:
    """A server that is up, ready and answers correctly; RuntimeError says why not. `on_up`
    gets its address before the answers are checked."""
    python = interpreter(server)
    if not python.exists():
        raise RuntimeError(
            f"not installed ({python} missing; see the output of benchmarks/peers/setup.sh)"
        )
    command = [str(python), *(a.replace("{spec}", str(spec_path)) for a in server.args)]
    if not server.is_peer:
        command += ["--grpc-host", "127.0.0.1", "--grpc-port", "0"]
    print(f"{server.name}: starting {' '.join(command[1:])}", flush=True)
    started = time.monotonic()
    process = Process(command, server.models, server.startup_timeout_s, cwd=server.cwd)
    print(f"{server.name}: ready in {time.monotonic() - started:.1f}s", flush=True)
    if protocol == "http":
        try:
            wait_ready_http(process, server.models, time.monotonic() + server.startup_timeout_s)
        except (TimeoutError, OSError) as exc:
            process.stop()
            raise RuntimeError(f"HTTP not ready: {exc}") from exc
    if on_up:
        on_up(process)
    if server.group != "bare" or server.name in (BARE_MODEL, BARE_SYNC_MODEL):
        try:
            check_answers(process.url, server.models)
        except (AssertionError, grpc.RpcError) as exc:
            process.stop()
            raise RuntimeError(f"wrong or failed answer: {_rpc_text(exc)}") from exc
    return process


def _rpc_text(exc: Exception) -> str:
    if isinstance(exc, grpc.RpcError):
        return f"{exc.code().name}: {exc.details()}"
    return str(exc)


def _failed(server: ServerSpec, settings: Settings, error: str) -> list[Point]:
    return [
        Point(server.name, model, c, error=error)
        for model in server.models
        for c in settings.concurrencies
    ]


# --- targets ---------------------------------------------------------------------------------


def _point(points: list[Point], server: str, model: str, concurrency: int) -> Point | None:
    for p in points:
        if (p.server, p.model, p.concurrency) == (server, model, concurrency) and not p.error:
            return p
    return None


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def targets(points: list[Point], ceilings: dict[str, Ceiling], peers: list[str]) -> list[dict]:
    """The issue's targets, each as ratios measured in this run."""
    rows: list[dict] = []
    tab, c32 = "tabular_classifier", 32

    def add(target: str, model: str, measured: str, ratio: float | None, note: str = "") -> None:
        rows.append(
            {"target": target, "model": model, "measured": measured, "ratio": ratio, "note": note}
        )

    tg = _point(points, TENSORGATE, tab, c32)
    peer_points = [p for name in peers if (p := _point(points, name, tab, c32))]
    best = max(peer_points, key=lambda p: p.throughput or 0, default=None)
    bare = _point(points, BARE, tab, c32)
    bare_sync = _point(points, BARE_SYNC, tab, c32)
    fastest_bare = max(
        (p for p in (bare, bare_sync) if p), key=lambda p: p.throughput or 0, default=None
    )
    floor = _point(points, BARE_MODEL, tab, c32)
    workers = _point(points, TENSORGATE_WORKERS, tab, c32)
    front_ends = [p for name in (FRONT_END, FRONT_END_2) if (p := _point(points, name, tab, c32))]
    front_end = max(front_ends, key=lambda p: p.throughput or 0, default=None)
    two = "tensorgate --workers 2 (two processes; the bare server is one)"
    for server, label, other, note in (
        (tg, "best peer", best, "target >= 1.5"),
        (tg, BARE, bare, "target >= 1.3"),
        (tg, "the fastest bare handler", fastest_bare, "target >= 0.85"),
        (tg, BARE_MODEL, floor, "what the model call leaves of the bare ceiling"),
        (tg, "its own front end with the bare handler", front_end, "what the data plane leaves"),
        (front_end, "best peer", best, "the front end's ceiling: a data plane costing nothing"),
        (workers, TENSORGATE, tg, "target >= 1.0 on 2 cores: " + two),
        (workers, "best peer", best, two),
    ):
        if server and other:
            add(
                f"throughput at c=32 vs {label}",
                tab,
                f"{server.throughput:,.0f}/s vs {other.throughput:,.0f}/s ({other.server})",
                _ratio(server.throughput, other.throughput),
                note,
            )
    image_now = _point(points, TENSORGATE, "image_classifier", c32)
    image_before = _point(points, BASELINE, "image_classifier", c32)
    if image_now and image_before:
        add(
            "image throughput at c=32 vs before",
            "image_classifier",
            f"{image_now.throughput:,.0f}/s (avg batch {image_now.avg_batch or 0:.1f}) vs "
            f"{image_before.throughput:,.0f}/s (avg batch {image_before.avg_batch or 0:.1f})",
            _ratio(image_now.throughput, image_before.throughput),
            "target >= 1.0, avg batch >= 4",
        )
    for model in ("image_classifier", "text_encoder"):
        ceiling = ceilings.get(model)
        sweep_points = [
            p for p in points if p.server == TENSORGATE and p.model == model and not p.error
        ]
        if ceiling and sweep_points:
            top = max(sweep_points, key=lambda p: p.throughput or 0)
            add(
                "best throughput vs in-process onnxruntime at its best batch",
                model,
                f"{top.throughput:,.0f}/s (c={top.concurrency}) vs {ceiling.best_rows_per_s:,.0f}"
                f" rows/s (batch {ceiling.best_batch})",
                _ratio(top.throughput, ceiling.best_rows_per_s),
                "compute-bound model" if model == "image_classifier" else "",
            )
    for model in WORKLOADS:
        one = _point(points, TENSORGATE, model, 1)
        bare_ones = [p for name in (BARE, BARE_SYNC) if (p := _point(points, name, model, 1))]
        bare_one = min(bare_ones, key=lambda p: p.p50_us or 0, default=None)
        ceiling = ceilings.get(model)
        if one and bare_one and ceiling:
            floor = bare_one.p50_us + ceiling.batch1_us
            add(
                "p50 at c=1 vs fastest bare p50 + in-process batch-1 time",
                model,
                f"{one.p50_us} us vs {bare_one.p50_us} + {ceiling.batch1_us:.0f} = {floor:.0f} us",
                _ratio(one.p50_us, floor),
                f"target: within 100 us ({one.p50_us - floor:+.0f} us)",
            )
        with_model = _point(points, BARE_MODEL, model, 1)
        if one and with_model:
            add(
                "p50 at c=1 vs bare grpc.aio + onnxruntime p50",
                model,
                f"{one.p50_us} us vs {with_model.p50_us} us",
                _ratio(one.p50_us, with_model.p50_us),
                "the model called from the handler, as a server calls it",
            )
    for model in WORKLOADS:
        tg = _point(points, TENSORGATE, model, c32)
        for name in peers:
            peer = _point(points, name, model, c32)
            if tg and peer:
                add(
                    "p99 at c=32 vs peer",
                    model,
                    f"{tg.p99_us / 1000:.2f} ms vs {peer.p99_us / 1000:.2f} ms ({name})",
                    _ratio(tg.p99_us, peer.p99_us),
                )
    return rows


# --- reports ---------------------------------------------------------------------------------


def markdown(
    header: str,
    points: list[Point],
    ceilings: dict[str, Ceiling],
    target_rows: list[dict],
    failures: dict[str, str],
) -> str:
    out = [header, ""]
    out += [
        "In-process onnxruntime ceiling (no server, no load generator, default session options):",
        "",
        "| model | batch-1 time us | batch-1 rows/s | best batch | rows/s at best batch |",
        "|---|---:|---:|---:|---:|",
    ]
    for c in ceilings.values():
        out.append(
            f"| {c.model} | {c.batch1_us:,.0f} | {c.batch1_rows_per_s:,.0f} | {c.best_batch} | "
            f"{c.best_rows_per_s:,.0f} |"
        )
    for model in WORKLOADS:
        order = {name: i for i, name in enumerate(dict.fromkeys(s.name for s in SERVERS))}
        rows = sorted(
            (p for p in points if p.model == model),
            key=lambda p: (order.get(p.server, len(order)), p.concurrency),
        )
        if not rows:
            continue
        out += [
            "",
            f"### {model}",
            "",
            "| server | concurrency | infer/s | p50 ms | p99 ms | avg batch "
            "| infer/s vs tensorgate | load |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for p in rows:
            if p.error:
                out.append(f"| {p.server} | {p.concurrency} | failed | | | | | |")
                continue
            tg = _point(points, TENSORGATE, model, p.concurrency)
            versus = f"{p.throughput / tg.throughput:.2f}x" if tg and tg.throughput else ""
            batch = f"{p.avg_batch:.1f}" if p.avg_batch else ""
            out.append(
                f"| {p.server} | {p.concurrency} | {p.throughput:,.0f} | {p.p50_us / 1000:.2f} | "
                f"{p.p99_us / 1000:.2f} | {batch} | {versus} | {p.load_1m or 0:.1f} |"
            )
    out += [
        "",
        "### Targets (ratios from this run; tensorgate first)",
        "",
        "| target | model | measured | ratio | |",
        "|---|---|---|---:|---|",
    ]
    for t in target_rows:
        ratio = f"{t['ratio']:.2f}" if t["ratio"] is not None else "n/a"
        out.append(f"| {t['target']} | {t['model']} | {t['measured']} | {ratio} | {t['note']} |")
    if failures:
        out += ["", "### Servers that failed", ""]
        for name, error in failures.items():
            first = error.strip().splitlines()[0] if error.strip() else "(no output)"
            out.append(f"- **{name}**: {first}")
    return "\n".join(out) + "\n"


def plot(result_json: Path) -> list[Path]:
    """PNGs with matplotlib: from this interpreter when it has it, else the plot venv."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        python = PEERS_DIR / "plot" / "bin" / "python"
    else:
        python = Path(sys.executable)
    if not python.exists():
        print(f"no plots: {python} missing (bash {SETUP.relative_to(REPO_ROOT)} plot)")
        return []
    proc = subprocess.run(
        [str(python), "-m", "benchmarks.plots", str(result_json)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if proc.returncode != 0:
        print(f"plotting failed:\n{proc.stdout}{proc.stderr}")
        return []
    return [Path(line) for line in proc.stdout.split()]


def peer_version(venv: str, distribution: str) -> str:
    python = PEERS_DIR / venv / "bin" / "python"
    if not python.exists():
        return "not installed"
    proc = subprocess.run(
        [str(python), "-c", f"import importlib.metadata as m; print(m.version({distribution!r}))"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return proc.stdout.strip() or "not installed"


def _git_commit() -> str:
    """The commit measured, and whether the server's code had uncommitted changes."""

    def git(*args: str) -> str:
        proc = subprocess.run(
            ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, check=False
        )
        return proc.stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    if git("status", "--porcelain", "--", "server", "batching", "runtimes"):
        commit += " with uncommitted changes in server/, batching/ or runtimes/"
    return commit


# --- main ------------------------------------------------------------------------------------


def _transport_words(settings: Settings) -> str:
    if settings.load_generator == "wrk":
        return "wrk (HTTP/REST, JSON tensors, a request in flight per connection)"
    if settings.protocol != "http":
        return "perf_analyzer (gRPC, async)"
    return f"perf_analyzer (HTTP/REST, {settings.tensor_format} tensors, async)"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: c=1 and 32, short windows")
    parser.add_argument("--servers", nargs="+", choices=GROUPS, default=list(GROUPS))
    parser.add_argument("--models", nargs="+", choices=list(WORKLOADS), default=list(WORKLOADS))
    parser.add_argument("--concurrency", type=int, nargs="+", help="default 1 8 32 64")
    parser.add_argument("--window-ms", type=int, help="perf_analyzer window (default 700)")
    parser.add_argument(
        "--rounds", type=int, help="measurements of each point, best counts (default 2)"
    )
    parser.add_argument("--skip-setup", action="store_true", help="do not run peers/setup.sh")
    parser.add_argument(
        "--protocol",
        choices=("grpc", "http"),
        default="grpc",
        help="what perf_analyzer speaks: gRPC, or the v2 REST protocol (servers without an HTTP "
        "port, the bare gRPC servers, are left out)",
    )
    parser.add_argument(
        "--tensor-format",
        choices=("json", "binary"),
        default="json",
        help="over HTTP, how tensors travel: JSON (what every v2 REST server takes; the default) "
        "or Triton's binary tensor extension (which the Python peers do not speak)",
    )
    parser.add_argument(
        "--load-generator",
        choices=("perf_analyzer", "wrk"),
        help="over HTTP: perf_analyzer, or wrk with JSON tensors, which every REST peer can "
        "answer (benchmarks/wrk.py says why; the default for --protocol http when wrk is "
        "installed)",
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        metavar="CHECKOUT",
        help="also run tensorgate from this checkout (e.g. a git worktree of the previous "
        "release), side by side, as 'tensorgate before'",
    )
    parser.add_argument(
        "--wait-for-quiet",
        type=float,
        default=0,
        metavar="MINUTES",
        help="first wait up to this long for the 1-minute load average to fall below 1",
    )
    parser.add_argument(
        "--from-json",
        type=Path,
        metavar="RESULT",
        help="measure nothing: write the .md and PNGs of a saved compare-*.json again",
    )
    args = parser.parse_args(argv)
    if args.from_json:
        return rerender(args.from_json)

    settings = Settings(
        concurrencies=args.concurrency or ([1, 32] if args.quick else [1, 8, 32, 64]),
        rounds=args.rounds or (1 if args.quick else 2),
        window_ms=args.window_ms or (500 if args.quick else 700),
        ceiling_s=0.4 if args.quick else 1.0,
        perf_timeout_s=60.0,
        protocol=args.protocol,
        tensor_format=args.tensor_format,
        load_generator=args.load_generator
        or ("wrk" if args.protocol == "http" and wrk.available() else "perf_analyzer"),
    )
    if settings.load_generator == "wrk" and (
        args.protocol != "http" or args.tensor_format != "json" or not wrk.available()
    ):
        print("wrk loads HTTP with JSON tensors only, and must be installed (apt-get install wrk)")
        return 2
    if not perf_analyzer_available():
        print("perf_analyzer is not installed: bash scripts/install_perf_analyzer.sh")
        return 2
    wait_for_quiet(args.wait_for_quiet * 60)
    run_started = time.monotonic()
    failures: dict[str, str] = {}
    peer_groups = [g for g in args.servers if g in PEER_VERSIONS]
    if not args.skip_setup:
        # Idempotent and quick when everything is installed; a peer that fails to install is
        # reported by its own server's failure below.
        subprocess.run(["bash", str(SETUP), *peer_groups, "plot"], cwd=REPO_ROOT, check=False)

    servers = [
        only_models(s, args.models)
        for s in SERVERS
        if s.group in args.servers
        and set(s.models) & set(args.models)
        and args.protocol in s.protocols
    ]
    if args.baseline and args.protocol == "grpc":  # a baseline from before HTTP has none
        tensorgate_spec = next(s for s in SERVERS if s.name == TENSORGATE)
        servers.append(
            only_models(
                dataclasses.replace(
                    tensorgate_spec,
                    name=BASELINE,
                    group="baseline",
                    cwd=args.baseline.resolve(),
                    # A baseline from before the HTTP front end knows no --http-port.
                    args=_without_option(tensorgate_spec.args, "--http-port"),
                ),
                args.models,
            )
        )

    print("in-process ceiling ...", flush=True)
    ceilings = {m: measure_ceiling(WORKLOADS[m], settings.ceiling_s) for m in args.models}
    for c in ceilings.values():
        print(
            f"  {c.model}: batch 1 {c.batch1_us:.0f} us ({c.batch1_rows_per_s:,.0f} rows/s); "
            f"best batch {c.best_batch}: {c.best_rows_per_s:,.0f} rows/s",
            flush=True,
        )

    points: list[Point] = []
    measured: list[Point] = []  # every round's points
    with tempfile.TemporaryDirectory(prefix="compare-") as scratch, contextlib.ExitStack() as stack:
        scratch_dir = Path(scratch)
        if settings.load_generator == "wrk":
            data = {m: wrk.write_request(WORKLOADS[m], scratch_dir) for m in args.models}
        else:
            data = {
                m: WORKLOADS[m].write_input_data(scratch_dir / f"{m}.json") for m in args.models
            }
        spec_path = scratch_dir / "spec.json"
        # Every server runs from start to end, and the points are interleaved (for each model and
        # concurrency, each server in turn), so a slow minute on a shared machine hits them all
        # alike. tensorgate starts first: the others describe the models as it does.
        tensorgate = only_models(next(s for s in SERVERS if s.group == "tensorgate"), WORKLOADS)
        try:
            process = start_server(
                tensorgate, spec_path, lambda up: write_spec(up, spec_path), args.protocol
            )
        except RuntimeError as exc:
            print(f"tensorgate did not start, so there is nothing to compare with:\n{exc}")
            return 1
        stack.callback(process.stop)
        running: list[tuple[ServerSpec, Process]] = []
        for server in servers:
            if server.group == "tensorgate":
                running.append((server, process))
                continue
            try:
                running.append((server, start_server(server, spec_path, None, args.protocol)))
            except RuntimeError as exc:
                print(f"{server.name}: FAILED: {exc}", flush=True)
                failures[server.name] = str(exc)
                points += _failed(server, settings, str(exc).splitlines()[0])
                continue
            stack.callback(running[-1][1].stop)
        print(f"all servers up; measuring (load average {os.getloadavg()[0]:.1f})", flush=True)
        turn = 0
        for round_number in range(1, settings.rounds + 1):
            print(f"round {round_number} of {settings.rounds}", flush=True)
            for model in args.models:
                for concurrency in settings.concurrencies:
                    serving = [(s, p) for s, p in running if model in s.models]
                    turn += 1
                    shift = turn % len(serving) if serving else 0
                    for server, server_process in serving[shift:] + serving[:shift]:
                        measured.append(
                            measure(
                                server,
                                server_process,
                                model,
                                concurrency,
                                data[model],
                                settings,
                            )
                        )
        print("stopping servers", flush=True)
    points += best_of_rounds(measured)

    peers = list(dict.fromkeys(s.name for s in servers if s.is_peer))
    target_rows = targets(points, ceilings, peers)
    now = datetime.datetime.now(datetime.timezone.utc)
    versions = ", ".join(
        f"{LABELS[group]} {peer_version(group, PEER_VERSIONS[group])}" for group in peer_groups
    )
    machine = (
        f"{platform.node()} ({platform.machine()}, {os.cpu_count()} CPUs), "
        f"Python {platform.python_version()}, onnxruntime {onnxruntime.__version__}"
    )
    loads = [p.load_1m for p in points if p.load_1m is not None]
    load_note = (
        f" 1-minute load average during the run {min(loads):.1f}-{max(loads):.1f} on "
        f"{os.cpu_count()} CPUs (column `load`: above the CPU count, other work was competing)."
        if loads
        else ""
    )
    header = (
        f"## Comparison, {now:%Y-%m-%d %H:%M} UTC\n\n"
        f"{machine}; tensorgate {_git_commit()}; {versions or 'no peers'}. "
        f"{_transport_words(settings)} on the same cores, "
        f"{settings.window_ms} ms windows, best of "
        f"{settings.rounds} interleaved round(s), concurrency "
        f"{', '.join(map(str, settings.concurrencies))}; run took "
        f"{(time.monotonic() - run_started) / 60:.1f} min.{load_note}"
    )
    RESULTS.mkdir(exist_ok=True)
    kind = (
        f"compare-http-{args.tensor_format}-{settings.load_generator.replace('_', '-')}"
        if args.protocol == "http"
        else "compare"
    )
    stem = RESULTS / f"{kind}-{now:%Y%m%d-%H%M%S}"
    result_json = stem.with_suffix(".json")
    result_json.write_text(
        json.dumps(
            {
                "header": header,
                "settings": asdict(settings),
                "ceilings": {m: asdict(c) for m, c in ceilings.items()},
                "points": [asdict(p) for p in points],
                "all_rounds": [asdict(p) for p in measured],
                "targets": target_rows,
                "failures": failures,
            },
            indent=2,
        )
    )
    table = markdown(header, points, ceilings, target_rows, failures)
    stem.with_suffix(".md").write_text(table)
    pngs = plot(result_json)
    print(table)
    print("wrote", result_json, stem.with_suffix(".md"), *pngs, sep="\n  ")
    return 0


def _without_option(args: Sequence[str], option: str) -> tuple[str, ...]:
    """args less `option VALUE`."""
    out: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg == option:
            skip = True
        else:
            out.append(arg)
    return tuple(out)


def rerender(result_json: Path) -> int:
    result = json.loads(result_json.read_text())
    points = [Point(**p) for p in result["points"]]
    ceilings = {
        model: Ceiling(
            **{
                **c,
                "rows_per_s_by_batch": {
                    int(k): v for k, v in c.get("rows_per_s_by_batch", {}).items()
                },
            }
        )
        for model, c in result["ceilings"].items()
    }
    table = markdown(
        result["header"], points, ceilings, result["targets"], result.get("failures", {})
    )
    result_json.with_suffix(".md").write_text(table)
    print("wrote", result_json.with_suffix(".md"), *plot(result_json), sep="\n  ")
    return 0


def only_models(server: ServerSpec, models: Sequence[str]) -> ServerSpec:
    return dataclasses.replace(server, models=tuple(m for m in server.models if m in models))


if __name__ == "__main__":
    sys.exit(main())
