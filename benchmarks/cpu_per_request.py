"""What one request costs a server in CPU time and context switches, under perf_analyzer load.

    .venv/bin/python -m benchmarks.cpu_per_request [--baseline CHECKOUT] [--rounds 2]
        [--concurrency 32] [--seconds 4]

Throughput on a shared 2-core machine moves with everything else running; CPU time per request
(user + system of the server's process tree, from /proc, divided by the requests answered) and
voluntary + involuntary context switches per request move much less, and say where a Python
server loses: a server that needs more than one Python thread per request pays GIL hand-offs,
which show as context switches. Servers run one at a time, alternating, on the tabular model:
tensorgate, tensorgate from `--baseline` (another checkout, e.g. a git worktree), tensorgate's
own front end with the bare handler in place of the data plane (benchmarks/front_end_floor.py,
with one and with two run slots), and the bare handlers (benchmarks/bare_server.py: grpc.aio,
and the synchronous server with 2 threads).

The CPU is also split by thread: grpc names the threads of its C core (event_engine, ...), while
threads that Python (and onnxruntime) start carry the process's own name. The first share runs
without the GIL; the second is where a Python server's per-request work, and its GIL hand-offs,
show.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.compare import REPO_ROOT, Process
from benchmarks.workloads import WORKLOADS
from tests.support.perf_analyzer import run_perf_analyzer

MODEL = "tabular_classifier"


def cpu_seconds(pid: int) -> tuple[float, float]:
    """User + system CPU of the process and its running children: (all of it, that of the
    threads named like their process, i.e. not grpc's C-core threads)."""
    total = own = 0
    for process in [pid, *_children(pid)]:
        total += _ticks(Path(f"/proc/{process}/stat"))
        name = Path(f"/proc/{process}/comm").read_text()
        for task in Path(f"/proc/{process}/task").iterdir():
            try:
                if (task / "comm").read_text() == name:
                    own += _ticks(task / "stat")
            except FileNotFoundError:  # the thread ended meanwhile
                continue
    return total / os.sysconf("SC_CLK_TCK"), own / os.sysconf("SC_CLK_TCK")


def _ticks(stat: Path) -> int:
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def context_switches(pid: int) -> int:
    total = 0
    for process in [pid, *_children(pid)]:
        for task in os.listdir(f"/proc/{process}/task"):
            for line in Path(f"/proc/{process}/task/{task}/status").read_text().splitlines():
                if "ctxt_switches" in line:
                    total += int(line.split()[1])
    return total


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(x) for x in path.read_text().split()] if path.exists() else []


def servers(baseline: Path | None) -> dict[str, tuple[list[str], Path, list[str]]]:
    python = sys.executable
    tensorgate = [python, "-m", "server", "serve", "--metrics-port", "0"]
    tensorgate += ["--grpc-host", "127.0.0.1", "--grpc-port", "0"]
    found = {"tensorgate": ([*tensorgate, "--http-port", "-1"], REPO_ROOT, [MODEL])}
    if baseline is not None:
        found["tensorgate before"] = (tensorgate, baseline.resolve(), [MODEL])
    # tensorgate's front end with the bare handler instead of the data plane (front_end_floor.py)
    floor = [python, "-m", "benchmarks.front_end_floor", *tensorgate[3:], "--http-port", "-1"]
    found["front end + bare handler"] = (floor, REPO_ROOT, [MODEL])
    found["front end + bare handler, 2 run slots"] = (
        [*floor, "--grpc-handler-threads", "2"],
        REPO_ROOT,
        [MODEL],
    )
    bare = [python, "-m", "benchmarks.bare_server", "serve"]
    found["bare sync grpc, 2 threads"] = ([*bare, "--transport", "sync"], REPO_ROOT, [])
    found["bare grpc.aio"] = (bare, REPO_ROOT, [])
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--baseline", type=Path, metavar="CHECKOUT")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=4.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        data = WORKLOADS[MODEL].write_input_data(Path(scratch) / "input.json")
        print(
            "| server | round | infer/s | CPU us/request | of which Python's threads | "
            "server CPU % | ctx switches/request |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|")
        for round_index in range(args.rounds):
            for name, (command, cwd, models) in servers(args.baseline).items():
                server = Process(command, models, startup_timeout_s=60, cwd=cwd)
                try:
                    pid = server.process.pid
                    (cpu0, own0), switches0 = cpu_seconds(pid), context_switches(pid)
                    t0 = time.monotonic()
                    result = run_perf_analyzer(
                        MODEL,
                        server.url,
                        concurrency=args.concurrency,
                        measurement_ms=int(args.seconds * 1000),
                        timeout_s=120,
                        input_data=str(data),
                    )
                    (cpu1, own1), switches1 = cpu_seconds(pid), context_switches(pid)
                    t1 = time.monotonic()
                finally:
                    server.stop()
                # perf_analyzer's rate over its windows, applied to the whole span measured here
                # (start-up and warm-up included), so the per-request figures are approximate.
                requests = result.throughput_infer_per_sec * (t1 - t0)
                print(
                    f"| {name} | {round_index + 1} | {result.throughput_infer_per_sec:,.0f} | "
                    f"{1e6 * (cpu1 - cpu0) / requests:,.0f} | "
                    f"{1e6 * (own1 - own0) / requests:,.0f} | "
                    f"{100 * (cpu1 - cpu0) / (t1 - t0):.0f} | "
                    f"{(switches1 - switches0) / requests:.1f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
