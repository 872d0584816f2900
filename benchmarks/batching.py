"""Dynamic batching on vs off, per bundled model, against the in-process onnxruntime ceiling.

    .venv/bin/python -m benchmarks.batching [--concurrency 1 8 32 64] [--window-ms 1000]

Starts tensorgate twice (the bundled configs; then the same models with dynamic batching
removed), drives each model with perf_analyzer (gRPC, async, realistic input data) at each
concurrency, reads the server's average batch size from ModelStatistics, and measures the
in-process ceiling at the same batch sizes. Writes JSON and a Markdown table to
benchmarks/results/. Everything runs on loopback and ends by itself.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import grpc
import onnxruntime
from google.protobuf import text_format

from benchmarks.workloads import WORKLOADS, in_process_rows_per_s
from server._proto import grpc_service_pb2 as pb
from server._proto import grpc_service_pb2_grpc as pb_grpc
from server._proto import model_config_pb2 as mc
from server.settings import BUNDLED_MODELS
from tests.support.perf_analyzer import run_perf_analyzer
from tests.support.server_process import ServerProcess

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class Row:
    model: str
    batching: str
    concurrency: int
    throughput: float
    p50_us: int
    p99_us: int
    avg_batch: float
    ceiling_at_batch: float


def without_dynamic_batching(target: Path) -> Path:
    """A copy of the bundled repository whose configs run every request as its own batch."""
    for source in BUNDLED_MODELS.iterdir():
        shutil.copytree(source, target / source.name)
        config_path = target / source.name / "config.pbtxt"
        config = mc.ModelConfig()
        if config_path.exists():
            text_format.Parse(config_path.read_text(), config)
        config.max_batch_size = config.max_batch_size or WORKLOADS[source.name].max_batch_size
        config.ClearField("dynamic_batching")
        config_path.write_text(text_format.MessageToString(config))
    return target


def statistics(url: str, model: str) -> tuple[int, int]:
    with grpc.insecure_channel(url) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        stats = stub.ModelStatistics(pb.ModelStatisticsRequest(name=model)).model_stats[0]
    return stats.inference_count, stats.execution_count


def sweep(
    label: str,
    repository: Path | None,
    concurrencies: list[int],
    window_ms: int,
    data_dir: Path,
    ceilings: dict[tuple[str, int], float],
    module: str = "server",
    models: tuple[str, ...] = tuple(WORKLOADS),
) -> list[Row]:
    rows = []
    with ServerProcess(repository, module=module) as server:
        for workload in (WORKLOADS[model] for model in models):
            data = workload.write_input_data(data_dir / f"{workload.model}.json")
            for concurrency in concurrencies:
                before = statistics(server.url, workload.model) if module == "server" else (0, 0)
                result = run_perf_analyzer(
                    workload.model,
                    server.url,
                    concurrency=concurrency,
                    measurement_ms=window_ms,
                    timeout_s=60,
                    shapes=workload.shapes,
                    input_data=str(data),
                )
                after = statistics(server.url, workload.model) if module == "server" else (1, 1)
                executions = after[1] - before[1]
                avg_batch = (after[0] - before[0]) / executions if executions else 0.0
                batch = max(1, round(avg_batch))
                key = (workload.model, batch)
                if key not in ceilings:
                    ceilings[key] = in_process_rows_per_s(workload, batch)
                rows.append(
                    Row(
                        workload.model,
                        label,
                        concurrency,
                        result.throughput_infer_per_sec,
                        result.p50_latency_us,
                        result.p99_latency_us,
                        avg_batch,
                        ceilings[key],
                    )
                )
                print(rows[-1], flush=True)
    return rows


def markdown(rows: list[Row], header: str) -> str:
    lines = [
        header,
        "",
        "| model | batching | concurrency | infer/s | p50 ms | p99 ms | avg batch | "
        "in-process ceiling at that batch (rows/s) | % of ceiling |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.model} | {r.batching} | {r.concurrency} | {r.throughput:,.0f} | "
            f"{r.p50_us / 1000:.2f} | {r.p99_us / 1000:.2f} | {r.avg_batch:.1f} | "
            f"{r.ceiling_at_batch:,.0f} | {100 * r.throughput / r.ceiling_at_batch:.0f}% |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 64])
    parser.add_argument("--window-ms", type=int, default=1000)
    args = parser.parse_args()

    ceilings: dict[tuple[str, int], float] = {}
    with tempfile.TemporaryDirectory() as scratch:
        scratch_dir = Path(scratch)
        rows = sweep("on", None, args.concurrency, args.window_ms, scratch_dir, ceilings)
        off_repo = without_dynamic_batching(scratch_dir / "repo_off")
        rows += sweep("off", off_repo, args.concurrency, args.window_ms, scratch_dir, ceilings)
        # The Python front-end ceiling: grpc.aio answering a fixed tensor, no model at all.
        rows += sweep(
            "bare grpc.aio",
            None,
            args.concurrency,
            args.window_ms,
            scratch_dir,
            ceilings,
            module="benchmarks.bare_server",
            models=("tabular_classifier",),
        )

    order = {"on": 0, "off": 1, "bare grpc.aio": 2}
    rows.sort(key=lambda r: (r.model, order[r.batching], r.concurrency))
    now = datetime.datetime.now(datetime.timezone.utc)
    machine = (
        f"{platform.node()} ({platform.machine()}, {os.cpu_count()} CPUs), "
        f"Python {platform.python_version()}, onnxruntime {onnxruntime.__version__}"
    )
    header = (
        f"Batching benchmark, {now:%Y-%m-%d %H:%M} UTC, {machine}; perf_analyzer on the same "
        f"cores, {args.window_ms} ms windows"
    )
    RESULTS.mkdir(exist_ok=True)
    stem = RESULTS / f"batching-{now:%Y%m%d-%H%M}"
    stem.with_suffix(".json").write_text(
        json.dumps({"header": header, "rows": [asdict(r) for r in rows]}, indent=2)
    )
    table = markdown(rows, header)
    stem.with_suffix(".md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
