"""Run Triton's ``perf_analyzer`` against a KServe v2 gRPC endpoint and parse its report.

The binary is installed by ``scripts/install_perf_analyzer.sh`` and run through the
``scripts/perf_analyzer`` wrapper, which sets up its shared libraries. This module has
no pytest dependency; tests can skip with ``perf_analyzer_available()``.

Behaviour of the pinned perf_analyzer (2.51.0) that shapes this helper:

* Any failed inference request aborts the run with exit status 99 and lines like
  ``Thread [0] had error: <message>`` on stderr; there is no error count in a
  successful report. :class:`PerfAnalyzerError` carries those lines in ``errors``.
* If the measurement does not stabilise within ``--max-trials`` windows it exits 2
  ("Failed to obtain stable measurement") and writes no CSV.
* An unreachable server or unknown model fails at once, exit status 99
  ("error: failed to get model metadata: ...").
* Server-side columns (queue, compute) appear in the CSV only when the server lists
  the ``statistics`` extension in its ServerMetadata; parsing is by header name.
"""

from __future__ import annotations

import csv
import os
import re
import shlex
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "PerfAnalyzerError",
    "PerfResult",
    "build_perf_analyzer_command",
    "parse_perf_analyzer_csv",
    "perf_analyzer_available",
    "perf_analyzer_path",
    "run_perf_analyzer",
]

_REPO_ROOT = Path(__file__).resolve().parents[2]
_ENV_OVERRIDE = "TENSORGATE_PERF_ANALYZER"
_CSV_NAME = "perf_analyzer.csv"
_TAIL_CHARS = 4000
_THREAD_ERROR_RE = re.compile(r"^Thread \[\d+\] had error: .*$", re.MULTILINE)
_REQUEST_COUNT_RE = re.compile(r"^\s*Request count: (\d+)\s*$", re.MULTILINE)

# Exit statuses worth explaining in error messages.
_EXIT_HINTS = {
    2: "measurement did not stabilise; raise measurement_ms, max_trials or stability_percentage",
    99: "perf_analyzer reported an error (bad flags, server unreachable, or a failed request)",
    127: "perf_analyzer is not installed; run: bash scripts/install_perf_analyzer.sh",
}


def perf_analyzer_path() -> Path:
    """Path of the ``scripts/perf_analyzer`` wrapper (or ``$TENSORGATE_PERF_ANALYZER``)."""
    override = os.environ.get(_ENV_OVERRIDE)
    if override:
        return Path(override)
    return _REPO_ROOT / "scripts" / "perf_analyzer"


def perf_analyzer_available(timeout_s: float = 10.0) -> bool:
    """True when the wrapper exists and ``perf_analyzer --version`` succeeds."""
    path = perf_analyzer_path()
    if not path.is_file():
        return False
    try:
        proc = subprocess.run(
            [str(path), "--version"],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    # It prints its version on stderr.
    return proc.returncode == 0 and "Perf Analyzer" in proc.stdout + proc.stderr


@dataclass(frozen=True)
class PerfResult:
    """One concurrency level's results; latencies are client-side, in microseconds."""

    concurrency: int
    throughput_infer_per_sec: float
    p50_latency_us: int
    p90_latency_us: int | None
    p95_latency_us: int | None
    p99_latency_us: int
    avg_latency_us: int | None
    request_count: int | None
    errors: int
    csv_row: Mapping[str, str] = field(repr=False)
    command: tuple[str, ...] = field(repr=False)
    stdout: str = field(repr=False)
    stderr: str = field(repr=False)


class PerfAnalyzerError(RuntimeError):
    """perf_analyzer failed, timed out, or produced no parsable report."""

    def __init__(
        self,
        reason: str,
        *,
        command: Sequence[str],
        returncode: int | None,
        stdout: str,
        stderr: str,
    ) -> None:
        self.reason = reason
        self.command = tuple(command)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        self.errors: tuple[str, ...] = tuple(_thread_errors(stdout + "\n" + stderr))
        hint = _EXIT_HINTS.get(returncode) if returncode is not None else None
        parts = [
            f"perf_analyzer {reason}",
            f"exit status: {returncode}" + (f" ({hint})" if hint else ""),
            f"command: {_quote(self.command)}",
        ]
        if self.errors:
            parts.append(f"request errors ({len(self.errors)}): " + "; ".join(self.errors[:5]))
        parts.append("--- stdout (tail) ---\n" + _tail(stdout))
        parts.append("--- stderr (tail) ---\n" + _tail(stderr))
        super().__init__("\n".join(parts))


def build_perf_analyzer_command(
    model: str,
    url: str,
    *,
    concurrency: int,
    measurement_ms: int,
    csv_path: str,
    batch_size: int = 1,
    shapes: Mapping[str, Sequence[int]] | None = None,
    stability_percentage: float = 999.0,
    max_trials: int = 5,
    extra_args: Sequence[str] = (),
    input_data: str = "zero",
    protocol: str = "grpc",
) -> list[str]:
    """The argument list :func:`run_perf_analyzer` runs (useful for logging)."""
    if not model:
        raise ValueError("model must be non-empty")
    if "://" in url:
        raise ValueError(f"url must be host:port without a scheme, got {url!r}")
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    if measurement_ms < 1:
        raise ValueError(f"measurement_ms must be >= 1, got {measurement_ms}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if max_trials < 3:
        # perf_analyzer needs 3 windows before it can call a measurement stable.
        raise ValueError(f"max_trials must be >= 3, got {max_trials}")
    cmd = [
        str(perf_analyzer_path()),
        "-m",
        model,
        "-u",
        url,
        "-i",
        protocol,
        "--async",
        "--concurrency-range",
        str(concurrency),
        "-b",
        str(batch_size),
        "--measurement-mode",
        "time_windows",
        "--measurement-interval",
        str(measurement_ms),
        "--stability-percentage",
        _format_number(stability_percentage),
        "--max-trials",
        str(max_trials),
        "--input-data",
        input_data,
        "-f",
        csv_path,
        "--verbose-csv",
    ]
    for name, dims in (shapes or {}).items():
        cmd += ["--shape", f"{name}:{','.join(str(int(d)) for d in dims)}"]
    cmd += list(extra_args)
    return cmd


def run_perf_analyzer(
    model: str,
    url: str,
    *,
    concurrency: int,
    measurement_ms: int,
    extra_args: Sequence[str] = (),
    timeout_s: float,
    batch_size: int = 1,
    shapes: Mapping[str, Sequence[int]] | None = None,
    stability_percentage: float = 999.0,
    max_trials: int = 5,
    input_data: str = "zero",
    protocol: str = "grpc",
) -> PerfResult:
    """Load ``model`` at ``url`` (``host:port``) with a fixed concurrency, over gRPC or, with
    ``protocol="http"``, the v2 REST protocol.

    Sends zero-filled inputs asynchronously, keeping ``concurrency`` requests in
    flight, and measures in time windows of ``measurement_ms``. perf_analyzer needs at
    least 3 windows; with the default ``stability_percentage`` of 999 any 3 windows
    count as stable, so a run takes about ``3 * measurement_ms`` plus start-up, and at
    most ``max_trials * measurement_ms`` if you tighten it. The reported numbers are
    averaged over the last 3 windows.

    ``shapes`` gives dims for inputs with variable dims (without the batch dim for
    models with ``max_batch_size > 0``). ``extra_args`` are appended last.
    Raises :class:`PerfAnalyzerError` on a non-zero exit, a timeout, or a missing or
    unparsable CSV report.
    """
    with tempfile.TemporaryDirectory(prefix="perf_analyzer_") as workdir:
        # Relative -f path: perf_analyzer prefixes it for per-composing-model reports.
        cmd = build_perf_analyzer_command(
            model,
            url,
            concurrency=concurrency,
            measurement_ms=measurement_ms,
            csv_path=_CSV_NAME,
            batch_size=batch_size,
            shapes=shapes,
            stability_percentage=stability_percentage,
            max_trials=max_trials,
            extra_args=extra_args,
            input_data=input_data,
            protocol=protocol,
        )
        if not Path(cmd[0]).is_file():
            raise PerfAnalyzerError(
                f"wrapper not found at {cmd[0]}",
                command=cmd,
                returncode=127,
                stdout="",
                stderr="",
            )
        try:
            proc = subprocess.run(
                cmd,
                cwd=workdir,
                capture_output=True,
                text=True,
                timeout=timeout_s,
                check=False,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired as exc:
            raise PerfAnalyzerError(
                f"timed out after {timeout_s:g}s (killed)",
                command=cmd,
                returncode=None,
                stdout=_text(exc.stdout),
                stderr=_text(exc.stderr),
            ) from None
        except OSError as exc:
            raise PerfAnalyzerError(
                f"could not be started: {exc}",
                command=cmd,
                returncode=None,
                stdout="",
                stderr="",
            ) from exc

        if proc.returncode != 0:
            raise PerfAnalyzerError(
                "failed",
                command=cmd,
                returncode=proc.returncode,
                stdout=proc.stdout,
                stderr=proc.stderr,
            )
        csv_file = Path(workdir) / _CSV_NAME
        try:
            csv_text = csv_file.read_text()
        except OSError:
            raise PerfAnalyzerError(
                "exited 0 but wrote no CSV report",
                command=cmd,
                returncode=proc.returncode,
                stdout=proc.stdout,
                stderr=proc.stderr,
            ) from None

    try:
        rows = parse_perf_analyzer_csv(csv_text)
        row = _row_for_concurrency(rows, concurrency)
        return _result_from_row(row, cmd, proc.stdout, proc.stderr)
    except (KeyError, ValueError) as exc:
        raise PerfAnalyzerError(
            f"report could not be parsed: {exc}\n--- CSV ---\n{_tail(csv_text)}",
            command=cmd,
            returncode=proc.returncode,
            stdout=proc.stdout,
            stderr=proc.stderr,
        ) from exc


def parse_perf_analyzer_csv(text: str) -> list[dict[str, str]]:
    """Rows of a perf_analyzer ``-f`` report, keyed by header (stripped)."""
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    if len(lines) < 2:
        raise ValueError("CSV report has no data rows")
    reader = csv.DictReader(lines)
    rows = [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in reader]
    if not rows or "Inferences/Second" not in rows[0]:
        raise ValueError(f"unexpected CSV header: {lines[0]!r}")
    return rows


def _row_for_concurrency(rows: Sequence[Mapping[str, str]], concurrency: int) -> Mapping[str, str]:
    for row in rows:
        if row.get("Concurrency") == str(concurrency):
            return row
    if len(rows) == 1:
        return rows[0]
    raise ValueError(f"no row for concurrency {concurrency} among {len(rows)} rows")


def _result_from_row(
    row: Mapping[str, str], cmd: Sequence[str], stdout: str, stderr: str
) -> PerfResult:
    counts = _REQUEST_COUNT_RE.findall(stdout)
    return PerfResult(
        concurrency=int(row.get("Concurrency") or 0),
        throughput_infer_per_sec=float(row["Inferences/Second"]),
        p50_latency_us=int(row["p50 latency"]),
        p90_latency_us=_optional_int(row.get("p90 latency")),
        p95_latency_us=_optional_int(row.get("p95 latency")),
        p99_latency_us=int(row["p99 latency"]),
        avg_latency_us=_optional_int(row.get("Avg latency")),
        request_count=int(counts[-1]) if counts else None,
        errors=len(_thread_errors(stdout + "\n" + stderr)),
        csv_row=dict(row),
        command=tuple(cmd),
        stdout=stdout,
        stderr=stderr,
    )


def _optional_int(value: str | None) -> int | None:
    return int(value) if value else None


def _thread_errors(output: str) -> list[str]:
    return _THREAD_ERROR_RE.findall(output)


def _format_number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _text(data: str | bytes | None) -> str:
    if data is None:
        return ""
    if isinstance(data, bytes):
        return data.decode("utf-8", errors="replace")
    return data


def _tail(text: str) -> str:
    text = text.rstrip()
    if len(text) <= _TAIL_CHARS:
        return text or "(empty)"
    return "..." + text[-_TAIL_CHARS:]


def _quote(cmd: Sequence[str]) -> str:
    return shlex.join(cmd)
