"""Latency-SLO batching against the plain batcher: goodput and latency against offered load.

    .venv/bin/python -m benchmarks.slo [--clients 1 4 16 32 64] [--seconds 3]

Serves the bundled image_classifier twice from a temporary repository: "plain" (its bundled
dynamic batching) and "slo" (the same with `latency_target_p99_us` = 15000). For each number of
closed-loop tritonclient gRPC clients, with and without a 20 ms pause after a refusal, it loads
each model for `--seconds` and records goodput (answered requests a second), refusals a second,
the p99 of the answered requests' latency as the clients saw it, and the server-side p99 (the
bucket of tensorgate_request_duration_seconds that holds it, over every answer, refusals
included). The clients run on the same cores as the server. Writes
benchmarks/results/slo-<stamp>.json, .md and .png (the plot needs the plot venv:
benchmarks/peers/setup.sh plot).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
TARGET_US = 15_000
LOAD = [sys.executable, "-m", "benchmarks.slo", "--load"]
MODEL = "image_classifier"


def write_repository(root: Path) -> None:
    for name in ("plain", "slo"):
        shutil.copytree(REPO_ROOT / "server/example_models" / MODEL, root / name)
        config = root / name / "config.pbtxt"
        text = config.read_text().replace(f'name: "{MODEL}"', f'name: "{name}"')
        if name == "slo":
            text += (
                'parameters { key: "latency_target_p99_us" '
                f'value: {{ string_value: "{TARGET_US}" }} }}\n'
            )
        config.write_text(text)


def _metrics_url(server: Any) -> str:
    for line in server.log_lines:
        found = re.search(r"metrics on (http://\S+/metrics)", line)
        if found:
            return found.group(1).replace("0.0.0.0", "127.0.0.1")
    raise RuntimeError("the server did not say where its metrics are")


def histogram(metrics_url: str, model: str) -> dict[float, float]:
    with urllib.request.urlopen(metrics_url, timeout=10) as response:
        text = response.read().decode()
    found: dict[float, float] = {}
    for line in text.splitlines():
        if line.startswith("tensorgate_request_duration_seconds_bucket") and (
            f'model="{model}"' in line
        ):
            bound = re.search(r'le="([^"]+)"', line)
            if bound and bound.group(1) != "+Inf":
                found[float(bound.group(1))] = float(line.rsplit(" ", 1)[1])
    return found


def p99_bucket(before: dict[float, float], after: dict[float, float]) -> float | None:
    delta = {bound: after[bound] - before.get(bound, 0.0) for bound in after}
    total = max(delta.values(), default=0.0)
    if total <= 0:
        return None
    return min(bound for bound, count in delta.items() if count >= 0.99 * total)


def load(url: str, model: str, clients: int, seconds: float, backoff_s: float) -> dict[str, Any]:
    import numpy as np
    import tritonclient.grpc as triton
    from tritonclient.utils import InferenceServerException

    latencies: list[float] = []
    counts = {"refused": 0, "errors": 0}
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds
    image = np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32)

    def client() -> None:
        with triton.InferenceServerClient(url) as own:
            tensor = triton.InferInput("image", [1, 3, 64, 64], "FP32")
            tensor.set_data_from_numpy(image)
            while time.monotonic() < stop_at:
                started = time.monotonic()
                try:
                    own.infer(model, [tensor])
                except InferenceServerException as error:
                    refused = error.status() == "StatusCode.RESOURCE_EXHAUSTED"
                    with lock:
                        counts["refused" if refused else "errors"] += 1
                    if backoff_s:
                        time.sleep(backoff_s)
                else:
                    with lock:
                        latencies.append(time.monotonic() - started)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))] if latencies else None
    return {
        "goodput": len(latencies) / seconds,
        "refused_per_s": counts["refused"] / seconds,
        "errors": counts["errors"],
        "client_p99_ms": p99 * 1000 if p99 is not None else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16, 32, 64])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--plot", type=Path, help=argparse.SUPPRESS)  # re-run in the plot venv
    # One load phase, in a process of its own: tritonclient's protobuf stubs and the server's
    # (which benchmarks.compare imports) cannot live in one process.
    parser.add_argument("--load", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.plot:
        plot(args.plot)
        return
    if args.load:
        url, model, clients, seconds, backoff = args.load
        print(json.dumps(load(url, model, int(clients), float(seconds), float(backoff))))
        return
    from benchmarks.compare import PEERS_DIR, RESULTS, Process

    stamp = datetime.datetime.now(datetime.timezone.utc)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="slo-") as scratch:
        repository = Path(scratch) / "models"
        write_repository(repository)
        command = [sys.executable, "-m", "server", "serve", "--model-repository", str(repository)]
        command += ["--grpc-host", "127.0.0.1", "--grpc-port", "0", "--http-port", "-1"]
        command += ["--max-concurrent-calls", "256"]
        server = Process([*command, "--metrics-port", "0"], ["plain", "slo"], 60)
        metrics_url = _metrics_url(server)
        try:
            for backoff_s in (0.02, 0.0):
                for clients in args.clients:
                    for model in ("plain", "slo"):
                        before = histogram(metrics_url, model)
                        phase = [str(v) for v in (clients, args.seconds, backoff_s)]
                        done = subprocess.run(
                            [*LOAD, server.url, model, *phase],
                            cwd=REPO_ROOT,
                            capture_output=True,
                            text=True,
                            check=True,
                        )
                        row = json.loads(done.stdout.strip().splitlines()[-1])
                        row.update(
                            model=model,
                            clients=clients,
                            backoff_ms=backoff_s * 1000,
                            server_p99_bucket_ms=(
                                bucket * 1000
                                if (bucket := p99_bucket(before, histogram(metrics_url, model)))
                                else None
                            ),
                        )
                        print(row, flush=True)
                        rows.append(row)
        finally:
            server.stop()
    machine = f"{os.cpu_count()} CPUs, {platform.machine()}, Python {platform.python_version()}"
    stem = RESULTS / f"slo-{stamp:%Y%m%d-%H%M%S}"
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(
        json.dumps({"date": stamp.isoformat(), "machine": machine, "rows": rows}, indent=1)
    )
    lines = [
        f"# Latency-SLO ({TARGET_US} us) against the plain batcher, {MODEL}, "
        f"{stamp:%Y-%m-%d %H:%M} UTC, {machine}",
        "",
        "| backoff ms | clients | model | goodput/s | refused/s | client p99 ms "
        "| server p99 bucket ms |",
        "|---:|---:|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        client_p99 = f"{row['client_p99_ms']:.1f}" if row["client_p99_ms"] else ""
        lines.append(
            f"| {row['backoff_ms']:.0f} | {row['clients']} | {row['model']} | "
            f"{row['goodput']:,.0f} | {row['refused_per_s']:,.0f} | {client_p99} | "
            f"{row['server_p99_bucket_ms'] or ''} |"
        )
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    plot_python = PEERS_DIR / "plot" / "bin" / "python"
    if plot_python.exists():
        subprocess.run(
            [str(plot_python), "-m", "benchmarks.slo", "--plot", str(stem.with_suffix(".json"))],
            cwd=REPO_ROOT,
            check=False,
        )


def plot(result: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = json.loads(result.read_text())["rows"]
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for backoff in sorted({r["backoff_ms"] for r in rows}, reverse=True):
        for model in ("plain", "slo"):
            mine = [r for r in rows if r["model"] == model and r["backoff_ms"] == backoff]
            label = f"{model}, {'20 ms backoff' if backoff else 'no backoff'}"
            style = "-" if backoff else "--"
            clients = [r["clients"] for r in mine]
            left.plot(clients, [r["goodput"] for r in mine], style, marker="o", label=label)
            right.plot(
                clients,
                [r["server_p99_bucket_ms"] or float("nan") for r in mine],
                style,
                marker="o",
                label=label,
            )
    right.axhline(TARGET_US / 1000, color="grey", linewidth=1, label="target")
    left.set(xscale="log", xlabel="clients", ylabel="answered requests/s", title="goodput")
    right.set(
        xscale="log", yscale="log", xlabel="clients", ylabel="ms", title="server p99 (bucket)"
    )
    left.legend(fontsize=8)
    right.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(result.with_suffix(".png"), dpi=110)


if __name__ == "__main__":
    main()
