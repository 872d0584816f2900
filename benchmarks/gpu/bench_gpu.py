"""GPU figures for the bundled image model: CPU vs CUDA vs TensorRT, in-process and served.

In-process: tensorgate's own onnxruntime runtime (runtimes.onnx.create, as the server builds it)
timed at batch 1/8/32 for each configuration: CPU; CUDA through session.run; CUDA with IO binding
(the GPU default); CUDA with IO binding and CUDA graphs; TensorRT FP16. Served (--server): a
generated model repository per configuration (KIND_CPU, KIND_GPU, KIND_GPU + tensorrt), the real
server in a subprocess, driven by perf_analyzer (gRPC, async) with requests of each batch size.

A configuration whose provider is unavailable (no GPU, no CUDA/TensorRT libraries) is reported
with the reason, not crashed on. Writes <out>/gpu-<stamp>.json and .md.

    python -m benchmarks.gpu.bench_gpu --server               # everything available
    python -m benchmarks.gpu.bench_gpu --configs cpu --duration 0.5 --server  # CPU dry run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort

from runtimes.base import RuntimeSpec
from runtimes.errors import TensorgateError
from runtimes.onnx import create

REPO_ROOT = Path(__file__).resolve().parents[2]
MODEL_DIR = REPO_ROOT / "server" / "example_models" / "image_classifier"
DEFAULT_OUT = REPO_ROOT / "benchmarks" / "gpu" / "results"


@dataclass(frozen=True)
class Config:
    """One way of running the model: its RuntimeSpec fields and its config.pbtxt lines."""

    name: str
    device: str = "cpu"
    parameters: dict[str, str] = field(default_factory=dict)
    tensorrt: bool = False

    def spec(self, cache_dir: Path) -> RuntimeSpec:
        accelerator = {"precision_mode": "FP16", "trt_engine_cache_path": str(cache_dir)}
        return RuntimeSpec(
            "image_classifier",
            MODEL_DIR / "1",
            parameters=self.parameters,
            max_batch_size=32,
            device=self.device,
            accelerator="tensorrt" if self.tensorrt else "",
            accelerator_parameters=accelerator if self.tensorrt else {},
        )

    def config_pbtxt(self, name: str, cache_dir: Path) -> str:
        kind = "KIND_GPU" if self.device == "gpu" else "KIND_CPU"
        lines = [
            f'name: "{name}"',
            'platform: "onnxruntime_onnx"',
            "max_batch_size: 32",
            'input [ { name: "image" data_type: TYPE_FP32 dims: [ 3, 64, 64 ] } ]',
            'output [ { name: "logits" data_type: TYPE_FP32 dims: [ 10 ] } ]',
            "dynamic_batching { max_queue_delay_microseconds: 500 }",
            f"instance_group [ {{ kind: {kind} count: 1 }} ]",
        ]
        for key, value in self.parameters.items():
            lines.append(f'parameters {{ key: "{key}" value: {{ string_value: "{value}" }} }}')
        if self.tensorrt:
            lines.append(
                "optimization { execution_accelerators { gpu_execution_accelerator [ { "
                'name: "tensorrt" parameters { key: "precision_mode" value: "FP16" } '
                f'parameters {{ key: "trt_engine_cache_path" value: "{cache_dir}" }} }} ] }} }}'
            )
        return "\n".join(lines) + "\n"


CONFIGS = {
    c.name: c
    for c in (
        Config("cpu"),
        Config("cuda-run", "gpu", {"io_binding": "false"}),
        Config("cuda-iobinding", "gpu"),
        Config("cuda-graph", "gpu", {"cuda_graph": "true"}),
        Config("tensorrt-fp16", "gpu", tensorrt=True),
    )
}
# Served: one per provider; CUDA as the server runs it by default (IO binding) plus graphs.
SERVED = ("cpu", "cuda-iobinding", "cuda-graph", "tensorrt-fp16")


def images(rows: int) -> np.ndarray:
    return np.random.default_rng(rows).random((rows, 3, 64, 64), dtype=np.float32)


def time_calls(call: Callable[[], object], duration_s: float, min_calls: int = 5) -> list[float]:
    """Seconds per call, calling for `duration_s` (and at least `min_calls` times)."""
    times: list[float] = []
    deadline = time.perf_counter() + duration_s
    while len(times) < min_calls or time.perf_counter() < deadline:
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return times


def in_process(config: Config, batches: Sequence[int], duration_s: float, cache_dir: Path) -> dict:
    """Latency and throughput per batch size, or why the configuration is unavailable."""
    try:
        runtime = create(config.spec(cache_dir))
    except TensorgateError as exc:
        return {"status": "unavailable", "reason": _reason(exc)}
    result: dict = {"status": "ok", "device": runtime.metadata().device, "batches": {}}
    try:
        for rows in batches:
            batch = {"image": images(rows)}
            started = time.perf_counter()
            runtime.infer(batch, ["logits"])  # first call: TensorRT builds, CUDA graph captures
            first_s = time.perf_counter() - started
            for _ in range(3):
                runtime.infer(batch, ["logits"])
            times = time_calls(lambda b=batch: runtime.infer(b, ["logits"]), duration_s)
            p50 = statistics.median(times)
            result["batches"][str(rows)] = {
                "p50_ms": round(p50 * 1e3, 3),
                "p90_ms": round(float(np.percentile(times, 90)) * 1e3, 3),
                "images_per_s": round(rows / p50, 1),
                "calls": len(times),
                "first_call_ms": round(first_s * 1e3, 1),
            }
            print(f"  {config.name} batch {rows}: {result['batches'][str(rows)]}", flush=True)
    except TensorgateError as exc:
        result = {"status": "failed", "reason": _reason(exc)}
    finally:
        runtime.close()
    return result


def _reason(exc: Exception) -> str:
    """The first sentence of a load error: what is missing, without the remedy."""
    return str(exc).splitlines()[0].split("; set the model parameter")[0]


def served(
    config: Config,
    batches: Sequence[int],
    measurement_ms: int,
    concurrency: int,
    work_dir: Path,
) -> dict:
    """perf_analyzer against the real server on a one-model repository for `config`."""
    from tests.support.perf_analyzer import (
        PerfAnalyzerError,
        perf_analyzer_available,
        run_perf_analyzer,
    )
    from tests.support.server_process import ServerProcess

    if not perf_analyzer_available():
        return {"status": "unavailable", "reason": "perf_analyzer not installed"}
    name = config.name.replace("-", "_")
    repository = work_dir / f"repo_{name}"
    (repository / name / "1").mkdir(parents=True, exist_ok=True)
    shutil.copy(MODEL_DIR / "1" / "model.onnx", repository / name / "1" / "model.onnx")
    cache = work_dir / f"trt_cache_{name}"
    cache.mkdir(exist_ok=True)
    (repository / name / "config.pbtxt").write_text(config.config_pbtxt(name, cache))
    result: dict = {"status": "ok", "batches": {}}
    try:
        server = ServerProcess(repository, startup_timeout_s=300)
    except RuntimeError as exc:
        return {"status": "failed", "reason": str(exc)[-500:]}
    with server:
        pattern = rf"loaded model '{name}' version \d+ on ([^:]+)|model '{name}'.* failed to load"
        loaded = server.wait_for_log(pattern, timeout_s=300)[0]
        if loaded.group(1) is None:
            return {"status": "failed", "reason": loaded.string.strip()[-500:]}
        result["device"] = loaded.group(1)
        for rows in batches:
            try:
                run = run_perf_analyzer(
                    name,
                    server.url,
                    concurrency=concurrency,
                    measurement_ms=measurement_ms,
                    batch_size=rows,
                    timeout_s=max(60.0, measurement_ms * 12 / 1000),
                )
            except PerfAnalyzerError as exc:
                result["batches"][str(rows)] = {"error": f"exit {exc.returncode}: {exc.reason}"}
                continue
            result["batches"][str(rows)] = {
                "images_per_s": round(run.throughput_infer_per_sec, 1),
                "p50_ms": round(run.p50_latency_us / 1e3, 3),
                "p99_ms": round(run.p99_latency_us / 1e3, 3),
            }
            print(f"  served {config.name} batch {rows}: {result['batches'][str(rows)]}")
    return result


def machine() -> dict:
    gpus = ""
    if shutil.which("nvidia-smi"):
        query = ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv"]
        gpus = subprocess.run(query, capture_output=True, text=True, check=False).stdout.strip()
    return {
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "onnxruntime": ort.__version__,
        "available_providers": ort.get_available_providers(),
        "gpus": gpus or "none (nvidia-smi absent)",
    }


def _cell(entry: dict, rows: int) -> str:
    point = entry.get("batches", {}).get(str(rows))
    if entry.get("status") != "ok":
        return "-"
    if point is None:
        return ""
    if "error" in point:
        return "error"
    return f"{point['p50_ms']:.2f} ms / {point['images_per_s']:.0f} img/s"


def markdown(report: dict) -> str:
    batches = report["settings"]["batches"]
    header = "| configuration | " + " | ".join(f"batch {b}" for b in batches) + " | note |"
    rule = "|---|" + "---|" * (len(batches) + 1)
    parts = [
        "# GPU figures: bundled image_classifier (FP32 [N, 3, 64, 64] -> [N, 10])",
        "",
        f"{report['started']}; {report['machine']['gpus']}; onnxruntime "
        f"{report['machine']['onnxruntime']}; {report['machine']['cpus']} CPUs.",
        "",
    ]
    for title, section in (
        ("In-process (p50 latency / throughput)", "in_process"),
        ("Served through gRPC by perf_analyzer", "served"),
    ):
        if not report.get(section):
            continue
        parts += [f"## {title}", "", header, rule]
        for name, entry in report[section].items():
            note = entry.get("device", "") if entry.get("status") == "ok" else entry.get("reason")
            cells = " | ".join(_cell(entry, b) for b in batches)
            parts.append(f"| {name} | {cells} | {str(note or '').replace('|', '/')[:160]} |")
        parts.append("")
    return "\n".join(parts)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated subset")
    parser.add_argument("--batches", default="1,8,32")
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per batch size")
    parser.add_argument("--server", action="store_true", help="also measure through the server")
    parser.add_argument("--measurement-ms", type=int, default=2000, help="perf_analyzer window")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    names = [n for n in args.configs.split(",") if n]
    unknown = sorted(set(names) - set(CONFIGS))
    if unknown:
        parser.error(f"unknown configs {unknown}; known: {', '.join(CONFIGS)}")
    batches = [int(b) for b in args.batches.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    report: dict = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": machine(),
        "settings": {**vars(args), "out": str(args.out), "batches": batches},
        "in_process": {},
        "served": {},
    }
    with tempfile.TemporaryDirectory(prefix="tensorgate-gpu-bench-") as work:
        work_dir = Path(work)
        for name in names:
            print(f"in-process: {name}", flush=True)
            report["in_process"][name] = in_process(
                CONFIGS[name], batches, args.duration, work_dir / f"trt_{name}"
            )
        for name in (n for n in SERVED if n in names and args.server):
            if report["in_process"][name]["status"] != "ok":
                report["served"][name] = {
                    "status": "unavailable",
                    "reason": report["in_process"][name].get("reason", "unavailable in-process"),
                }
                continue
            print(f"served: {name}", flush=True)
            report["served"][name] = served(
                CONFIGS[name], batches, args.measurement_ms, args.concurrency, work_dir
            )
    json_path = args.out / f"gpu-{stamp}.json"
    json_path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    md_path = json_path.with_suffix(".md")
    md_path.write_text(markdown(report))
    print(md_path.read_text())
    print(f"wrote {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
