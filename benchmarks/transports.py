"""Which gRPC transport answers fastest from Python: grpc.aio or grpc's synchronous server with
a pool of N handler threads, each serving the same fixed answer (benchmarks/bare_server.py).

    .venv/bin/python -m benchmarks.transports [--threads 1 2 3 4 8 16] [--concurrency 1 8 32]
        [--rounds 2] [--window-ms 1000] [--handler-work-us 0 150]

Every server runs side by side for the whole run, and the measurements are interleaved (each
round visits every concurrency and every server in turn), so a busy moment on a shared machine
falls on all of them. perf_analyzer (gRPC, async) loads the tabular model with realistic input.
Writes benchmarks/results/transports-<timestamp>.json and .md.
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

from benchmarks.compare import RESULTS, Process
from benchmarks.workloads import WORKLOADS
from tests.support.perf_analyzer import PerfAnalyzerError, run_perf_analyzer

MODEL = "tabular_classifier"


def server_commands(threads: list[int], work_us: list[float]) -> dict[str, list[str]]:
    """Every transport, once per amount of Python work in the handler (bare_server.py)."""
    commands = {}
    for work in work_us:
        base = [sys.executable, "-m", "benchmarks.bare_server", "serve"]
        base += ["--handler-work-us", str(work)]
        suffix = f", {work:g} us work" if len(work_us) > 1 or work else ""
        commands[f"grpc.aio{suffix}"] = [*base, "--transport", "aio"]
        for count in threads:
            commands[f"sync, {count} threads{suffix}"] = [
                *base,
                "--transport",
                "sync",
                "--threads",
                str(count),
            ]
    return commands


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2, 3, 4, 8, 16])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--window-ms", type=int, default=1000)
    parser.add_argument(
        "--handler-work-us",
        type=float,
        nargs="+",
        default=[0.0],
        help="Python work per call in the handler (each value runs its own servers)",
    )
    args = parser.parse_args()

    stamp = datetime.datetime.now(datetime.timezone.utc)
    results: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory() as scratch:
        data = WORKLOADS[MODEL].write_input_data(Path(scratch) / "input.json")
        servers = {
            name: Process(command, (), startup_timeout_s=60)
            for name, command in server_commands(args.threads, args.handler_work_us).items()
        }
        try:
            for round_index in range(args.rounds):
                for concurrency in args.concurrency:
                    for name, server in servers.items():
                        try:
                            result = run_perf_analyzer(
                                MODEL,
                                server.url,
                                concurrency=concurrency,
                                measurement_ms=args.window_ms,
                                timeout_s=60,
                                input_data=str(data),
                            )
                        except PerfAnalyzerError as error:
                            print(f"{name} c={concurrency}: {error.reason}", flush=True)
                            continue
                        row = {
                            "round": round_index,
                            "server": name,
                            "concurrency": concurrency,
                            "infer_per_s": result.throughput_infer_per_sec,
                            "p50_us": result.p50_latency_us,
                            "p99_us": result.p99_latency_us,
                            "load_1m": os.getloadavg()[0],
                        }
                        results.append(row)
                        print(
                            f"round {round_index} c={concurrency:<3} {name:<18} "
                            f"{row['infer_per_s']:>8,.0f}/s p50 {row['p50_us']} us "
                            f"p99 {row['p99_us']} us",
                            flush=True,
                        )
        finally:
            for server in servers.values():
                server.stop()
    write_results(stamp, results)


def write_results(stamp: datetime.datetime, results: list[dict[str, object]]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = f"transports-{stamp:%Y%m%d-%H%M%S}"
    machine = f"{os.cpu_count()} CPUs, {platform.machine()}, Python {platform.python_version()}"
    (RESULTS / f"{name}.json").write_text(
        json.dumps({"date": stamp.isoformat(), "machine": machine, "results": results}, indent=1)
    )
    lines = [
        f"# Bare transports, {stamp:%Y-%m-%d %H:%M} UTC, {machine}",
        "",
        "| server | concurrency | infer/s (each round) | p50 us | p99 us |",
        "|---|---:|---|---:|---:|",
    ]
    keys = sorted({(r["server"], r["concurrency"]) for r in results}, key=lambda k: (k[1], k[0]))
    for server, concurrency in keys:
        rows = [r for r in results if r["server"] == server and r["concurrency"] == concurrency]
        rates = " · ".join(f"{r['infer_per_s']:,.0f}" for r in rows)
        lines.append(
            f"| {server} | {concurrency} | {rates} | {rows[-1]['p50_us']} | {rows[-1]['p99_us']} |"
        )
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
