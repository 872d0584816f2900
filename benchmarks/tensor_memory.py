"""Peak server memory for one big tensor, per transport and model shape.

    .venv/bin/python -m benchmarks.tensor_memory [--sizes-mib 16 64 200] [--concurrent 4x96]

For each request size, tensorgate (one process, a temporary repository) answers one request of
that many bytes, sent by tritonclient from another process, for two models: `reduce` (answers
a few bytes: the cost of receiving) and `identity` (answers the tensor back: receiving plus
sending). Before each request the server's peak-RSS counter is reset (`5` written to
/proc/PID/clear_refs), so VmHWM afterwards is the peak of that request alone; the table gives it
above the RSS just before the request, as a multiple of the tensor size (issue 21's bound is 3x).
`--concurrent NxMIB` adds N requests of MIB at once. Writes
benchmarks/results/tensor-memory-<timestamp>.json and .md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.compare import RESULTS
from tests.support.big_tensor_models import write_big_tensor_models
from tests.support.server_process import ServerProcess

MIB = 1 << 20
CLIENT = """
import sys, threading
import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
protocol, url, model, size, count = sys.argv[1:6]
size, count = int(size), int(count)
errors = []
def one():
    data = np.ones(size // 4, np.float32)
    if protocol == "grpc":
        client = grpcclient.InferenceServerClient(url)
        tensor = grpcclient.InferInput("x", [data.size], "FP32")
    else:
        client = httpclient.InferenceServerClient(url, network_timeout=600, connection_timeout=600)
        tensor = httpclient.InferInput("x", [data.size], "FP32")
    tensor.set_data_from_numpy(data, **({} if protocol == "grpc" else {"binary_data": True}))
    try:
        result = client.infer(model, [tensor])
        assert result.as_numpy("y") is not None
    except Exception as error:
        errors.append(repr(error)[:300])
threads = [threading.Thread(target=one) for _ in range(count)]
[t.start() for t in threads]
[t.join() for t in threads]
print("errors:", errors)
sys.exit(1 if errors else 0)
"""


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def measure(
    server: ServerProcess, protocol: str, model: str, size: int, count: int
) -> dict[str, Any]:
    """Peak and settled RSS of the server (MiB, above the RSS before) around `count` requests."""
    pid = server.process.pid
    before = _status_kib(pid, "VmRSS")
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := current RSS
    url = server.url if protocol == "grpc" else server.http_url
    client = subprocess.run(
        [sys.executable, "-c", CLIENT, protocol, url, model, str(size), str(count)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    peak = _status_kib(pid, "VmHWM")
    after = _status_kib(pid, "VmRSS")
    row: dict[str, Any] = {
        "protocol": protocol,
        "model": model,
        "tensor_mib": size / MIB,
        "requests": count,
        "idle_rss_mib": round(before / 1024, 1),
        "peak_above_mib": round((peak - before) / 1024, 1),
        "settled_above_mib": round((after - before) / 1024, 1),
    }
    row["peak_per_tensor"] = round(row["peak_above_mib"] / (row["tensor_mib"] * count), 2)
    if client.returncode != 0:
        row["error"] = (client.stdout + client.stderr).strip()[-300:]
    print(row, flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sizes-mib", type=int, nargs="+", default=[16, 64, 200])
    parser.add_argument("--concurrent", default="4x96", help="N requests of MIB at once, NxMIB")
    parser.add_argument("--protocols", nargs="+", default=["grpc", "http"])
    parser.add_argument("--extra-args", nargs=argparse.REMAINDER, default=[])
    args = parser.parse_args()
    stamp = datetime.datetime.now(datetime.timezone.utc)
    count, concurrent_mib = (int(part) for part in args.concurrent.split("x"))
    rows = []
    with tempfile.TemporaryDirectory(prefix="tensor-memory-") as scratch:
        repository = Path(scratch) / "models"
        write_big_tensor_models(repository)
        extra = ["--max-message-bytes", str(1 << 30), "--max-tensor-bytes", str(1 << 30)]
        cases = [(size_mib, 1) for size_mib in args.sizes_mib] + [(concurrent_mib, count)]
        for protocol in args.protocols:
            for model in ("reduce", "identity"):
                for size_mib, requests in cases:
                    # A fresh server per case: memory freed by one case would hide the next one's.
                    with ServerProcess(repository, [*extra, *args.extra_args]) as server:
                        rows.append(measure(server, protocol, model, size_mib * MIB, requests))
    write_results(stamp, rows)


def write_results(stamp: datetime.datetime, rows: list[dict[str, Any]]) -> None:
    machine = f"{os.cpu_count()} CPUs, {platform.machine()}, Python {platform.python_version()}"
    lines = [
        f"# Peak server memory per big request, {stamp:%Y-%m-%d %H:%M} UTC, {machine}",
        "",
        "| transport | model | requests x MiB | peak above idle MiB | x tensor | settled MiB |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['protocol']} | {row['model']} | {row['requests']} x {row['tensor_mib']:.0f} "
            f"| {row['peak_above_mib']:.0f} | {row['peak_per_tensor']:.2f} "
            f"| {row['settled_above_mib']:.0f} |"
            + (f" error: {row['error']}" if "error" in row else "")
        )
    RESULTS.mkdir(exist_ok=True)
    name = f"tensor-memory-{stamp:%Y%m%d-%H%M%S}"
    (RESULTS / f"{name}.json").write_text(json.dumps(rows, indent=2))
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
