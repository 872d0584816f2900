"""Closed-loop v2 REST load with wrk, for servers that perf_analyzer cannot drive over HTTP.

perf_analyzer 2.51's HTTP client reads `binary_data_size` from every output that carries a
`parameters` object, so it fails on KServe's answers (`"parameters": null`) and MLServer's
(`{"content_type": "np"}`), which are valid v2 JSON. wrk (C, epoll; `apt-get install wrk`) sends
the same JSON request body over `concurrency` keep-alive connections, one request in flight on
each, as perf_analyzer's concurrency mode does, and reports throughput and latency percentiles.
The body is one realistic row of the workload (batch 1), JSON tensors both ways.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from benchmarks.workloads import Workload
from runtimes.datatypes import from_numpy

_SCRIPT = """\
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local file = io.open(os.getenv("WRK_BODY"), "rb")
wrk.body = file:read("*a")
file:close()
"""
_UNITS = {"us": 1.0, "ms": 1e3, "s": 1e6, "m": 60e6}


@dataclass
class WrkResult:
    throughput: float  # requests a second
    p50_us: float
    p90_us: float
    p99_us: float


class WrkError(RuntimeError):
    pass


def available() -> bool:
    return shutil.which("wrk") is not None


def write_request(workload: Workload, directory: Path) -> Path:
    """The JSON request body (one row) and the Lua script that posts it; returns the script."""
    row = workload.batch(1)
    body = {
        "inputs": [
            {
                "name": name,
                "datatype": from_numpy(value.dtype).name,
                "shape": list(value.shape),
                "data": value.ravel().tolist(),
            }
            for name, value in row.items()
        ]
    }
    (directory / f"{workload.model}.body.json").write_text(json.dumps(body))
    script = directory / "post.lua"
    script.write_text(_SCRIPT)
    return script


def run_wrk(
    url: str, model: str, script: Path, *, concurrency: int, duration_s: float, timeout_s: float
) -> WrkResult:
    """Load POST http://URL/v2/models/MODEL/infer for `duration_s` with `concurrency`
    connections; raises WrkError on a failed run, socket errors or any non-2xx answer."""
    body = script.parent / f"{model}.body.json"
    command = [
        "wrk",
        "--latency",
        "-t1",
        f"-c{concurrency}",
        f"-d{max(1, round(duration_s))}s",
        f"--timeout={max(1, round(timeout_s))}s",
        "-s",
        str(script),
        f"http://{url}/v2/models/{model}/infer",
    ]
    try:
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=duration_s + timeout_s + 10,
            env={"WRK_BODY": str(body), "PATH": "/usr/bin:/bin"},
            check=False,
        )
    except subprocess.TimeoutExpired as error:
        raise WrkError("wrk did not finish in time") from error
    out = done.stdout
    if done.returncode != 0:
        raise WrkError(f"wrk exit {done.returncode}: {(done.stderr or out).strip()[-300:]}")
    for problem in ("Non-2xx or 3xx responses", "Socket errors"):
        if problem in out:
            line = next(x for x in out.splitlines() if problem in x)
            raise WrkError(line.strip())
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if rate is None:
        raise WrkError(f"no Requests/sec in wrk's output: {out.strip()[-300:]}")
    return WrkResult(
        throughput=float(rate.group(1)),
        p50_us=_percentile(out, 50),
        p90_us=_percentile(out, 90),
        p99_us=_percentile(out, 99),
    )


def _percentile(out: str, percent: int) -> float:
    found = re.search(rf"^\s+{percent}%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.MULTILINE)
    if found is None:
        raise WrkError(f"no {percent}% latency in wrk's output")
    return float(found.group(1)) * _UNITS[found.group(2)]
