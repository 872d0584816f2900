"""Memory over a long run: tensorgate under steady load, its RSS sampled every minute.

    .venv/bin/python -m benchmarks.soak [--minutes 10] [--concurrency 32] [--model NAME]

Writes benchmarks/results/soak-<timestamp>.{json,md}. Loopback only; ends by itself.
"""

from __future__ import annotations

import argparse
import datetime
import json
import time
from pathlib import Path

from benchmarks.workloads import WORKLOADS
from tests.support.perf_analyzer import run_perf_analyzer
from tests.support.server_process import ServerProcess

RESULTS = Path(__file__).resolve().parent / "results"


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--model", default="tabular_classifier")
    args = parser.parse_args()
    workload = WORKLOADS[args.model]
    samples = []
    with ServerProcess() as server:
        data = workload.write_input_data(RESULTS / f".soak-{args.model}.json")
        started = time.monotonic()
        while (elapsed := time.monotonic() - started) < args.minutes * 60:
            result = run_perf_analyzer(
                args.model,
                server.url,
                concurrency=args.concurrency,
                measurement_ms=20_000,
                timeout_s=300,
                shapes=workload.shapes,
                input_data=str(data),
            )
            samples.append(
                {
                    "minute": round(elapsed / 60, 2),
                    "rss_mib": round(rss_mib(server.process.pid), 1),
                    "throughput": result.throughput_infer_per_sec,
                    "p99_us": result.p99_latency_us,
                }
            )
            print(samples[-1], flush=True)
        data.unlink()
    now = datetime.datetime.now(datetime.timezone.utc)
    stem = RESULTS / f"soak-{now:%Y%m%d-%H%M}"
    stem.with_suffix(".json").write_text(json.dumps(samples, indent=2))
    lines = [
        f"Soak, {now:%Y-%m-%d %H:%M} UTC: {args.model}, concurrency {args.concurrency}, "
        f"{args.minutes:g} minutes",
        "",
        "| minute | RSS MiB | infer/s | p99 ms |",
        "|---:|---:|---:|---:|",
        *(
            f"| {s['minute']} | {s['rss_mib']} | {s['throughput']:,.0f} | "
            f"{s['p99_us'] / 1000:.1f} |"
            for s in samples
        ),
    ]
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
