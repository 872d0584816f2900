"""A 4 MiB image tensor over gRPC and over HTTP with Triton's binary tensor extension.

    .venv/bin/python -m benchmarks.big_tensor [--concurrency 1 4] [--rounds 3] [--window-ms 1000]

The model takes one FP32 image of 3x592x592 (4.0 MiB) and answers its per-channel mean (12
bytes), so the run measures moving a large input through each front end (receive, decode, hand
to onnxruntime), not the model. tensorgate serves it from a temporary repository; perf_analyzer
loads it over gRPC, over HTTP with binary tensors (what tritonclient.http sends with
`binary_data=True`) and, for scale, over HTTP with JSON tensors, interleaved in rounds. Writes
benchmarks/results/big-tensor-<timestamp>.json and .md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper

from benchmarks.compare import RESULTS, Process
from tests.support.perf_analyzer import PerfAnalyzerError, run_perf_analyzer

MODEL = "big_image"
SIDE = 592  # 3 x 592 x 592 x 4 bytes = 4,205,568 bytes, 4.0 MiB
MODES = {
    "gRPC": ("grpc", ()),
    "HTTP, binary tensors": ("http", ("--input-tensor-format", "binary")),
    "HTTP, JSON tensors": ("http", ("--input-tensor-format", "json")),
}


def write_repository(root: Path) -> None:
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, SIDE, SIDE])
    mean = helper.make_tensor_value_info("mean", TensorProto.FLOAT, ["N", 3])
    axes = helper.make_tensor("axes", TensorProto.INT64, [2], [2, 3])
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["image", "axes"], ["mean"], keepdims=0)],
        MODEL,
        [image],
        [mean],
        [axes],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    (root / MODEL / "1").mkdir(parents=True)
    onnx.save(model, root / MODEL / "1" / "model.onnx")
    (root / MODEL / "config.pbtxt").write_text(
        f'name: "{MODEL}"\nplatform: "onnxruntime_onnx"\nmax_batch_size: 4\n'
        f'input [{{ name: "image" data_type: TYPE_FP32 dims: [3, {SIDE}, {SIDE}] }}]\n'
        'output [{ name: "mean" data_type: TYPE_FP32 dims: [3] }]\n'
    )


def write_input_data(path: Path) -> Path:
    """One image of normally distributed pixels (perf_analyzer's "random" data is random bits,
    NaNs among them, which no JSON parser takes)."""
    pixels = np.random.default_rng(0).standard_normal(3 * SIDE * SIDE).astype(np.float32)
    image = {"content": pixels.tolist(), "shape": [3, SIDE, SIDE]}
    path.write_text(json.dumps({"data": [{"image": image}]}))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--window-ms", type=int, default=1000)
    args = parser.parse_args()
    stamp = datetime.datetime.now(datetime.timezone.utc)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="big-tensor-") as scratch:
        repository = Path(scratch) / "models"
        write_repository(repository)
        command = [sys.executable, "-m", "server", "serve", "--model-repository", str(repository)]
        command += ["--grpc-host", "127.0.0.1", "--grpc-port", "0", "--http-port", "0"]
        command += ["--metrics-port", "0"]
        data = write_input_data(Path(scratch) / "input.json")
        server = Process(command, [MODEL], startup_timeout_s=60)
        try:
            for round_index in range(args.rounds):
                for concurrency in args.concurrency:
                    for mode, (protocol, extra) in MODES.items():
                        row: dict[str, Any] = {
                            "mode": mode,
                            "concurrency": concurrency,
                            "round": round_index,
                        }
                        try:
                            result = run_perf_analyzer(
                                MODEL,
                                server.url_for(protocol),
                                concurrency=concurrency,
                                measurement_ms=args.window_ms,
                                timeout_s=120,
                                input_data=str(data),
                                protocol=protocol,
                                extra_args=extra,
                            )
                        except PerfAnalyzerError as error:
                            detail = "; ".join(error.errors[:1]) or error.stderr.strip()[-200:]
                            row["error"] = f"{error.reason}: {detail}"
                        else:
                            row["throughput"] = result.throughput_infer_per_sec
                            row["p50_us"] = result.p50_latency_us
                            row["p99_us"] = result.p99_latency_us
                        print(row, flush=True)
                        rows.append(row)
        finally:
            server.stop()
    write_results(stamp, rows)


def write_results(stamp: datetime.datetime, rows: list[dict[str, Any]]) -> None:
    best: dict[tuple[str, int], dict[str, Any]] = {}
    for row in rows:
        key = (row["mode"], row["concurrency"])
        if row.get("throughput", -1) > best.get(key, {}).get("throughput", -1):
            best[key] = row
    machine = f"{os.cpu_count()} CPUs, {platform.machine()}, Python {platform.python_version()}"
    lines = [
        f"# A 4 MiB image tensor, {stamp:%Y-%m-%d %H:%M} UTC, {machine}",
        "",
        f"Best of {max(r['round'] for r in rows) + 1} interleaved rounds; perf_analyzer, async.",
        "",
        "| transport | concurrency | infer/s | MiB/s in | p50 ms | p99 ms | vs gRPC |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    size_mib = 3 * SIDE * SIDE * 4 / 2**20
    for mode, concurrency in sorted(best, key=lambda k: (k[1], list(MODES).index(k[0]))):
        row = best[(mode, concurrency)]
        grpc_rate = best.get(("gRPC", concurrency), {}).get("throughput")
        ratio = f"{row['throughput'] / grpc_rate:.2f}" if grpc_rate else ""
        lines.append(
            f"| {mode} | {concurrency} | {row['throughput']:,.0f} | "
            f"{row['throughput'] * size_mib:,.0f} | {row['p50_us'] / 1000:.2f} | "
            f"{row['p99_us'] / 1000:.2f} | {ratio} |"
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = RESULTS / f"big-tensor-{stamp:%Y%m%d-%H%M%S}"
    stem.with_suffix(".json").write_text(
        json.dumps({"date": stamp.isoformat(), "machine": machine, "rows": rows}, indent=1)
    )
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
