"""Triton's perf_analyzer drives every bundled model without a single failed request.

perf_analyzer is the strictest client we have: it needs ModelMetadata and ModelConfig in Triton's
exact shape, sends asynchronous concurrent requests and reads ModelStatistics for its server-side
columns. Any failed request makes it exit non-zero, which run_perf_analyzer raises.
"""

from __future__ import annotations

import shlex
import subprocess

import pytest
import tritonclient.grpc as triton

from tests.support.perf_analyzer import perf_analyzer_available, run_perf_analyzer
from tests.support.server_process import REPO_ROOT, ServerProcess

pytestmark = pytest.mark.skipif(
    not perf_analyzer_available(),
    reason="perf_analyzer is not installed; run: bash scripts/install_perf_analyzer.sh",
)

CONCURRENCY = 4
MEASUREMENT_MS = 800  # three windows: about 2.5 s per model
SERVER_COLUMNS = (
    "Server Queue",
    "Server Compute Input",
    "Server Compute Infer",
    "Server Compute Output",
)
# Dims without the batch dimension, for inputs whose dims are variable.
SHAPES = {
    "tabular_classifier": None,
    "image_classifier": None,
    "text_encoder": {"input_ids": [16], "attention_mask": [16]},
}


def _counts(client: triton.InferenceServerClient, model: str) -> tuple[int, int, int]:
    (stats,) = client.get_inference_statistics(model).model_stats
    return (
        stats.inference_count,
        stats.inference_stats.success.count,
        stats.inference_stats.fail.count,
    )


@pytest.mark.parametrize("protocol", ["grpc", "http"])
@pytest.mark.parametrize("model", sorted(SHAPES))
def test_perf_analyzer_runs_without_errors(
    bundled_server: ServerProcess, model: str, protocol: str
):
    with triton.InferenceServerClient(bundled_server.url) as client:
        inferences_before, successes_before, failures_before = _counts(client, model)

        result = run_perf_analyzer(
            model,
            bundled_server.http_url if protocol == "http" else bundled_server.url,
            concurrency=CONCURRENCY,
            measurement_ms=MEASUREMENT_MS,
            shapes=SHAPES[model],
            timeout_s=60,
            protocol=protocol,
        )

        inferences, successes, failures = _counts(client, model)

    assert result.errors == 0, result.stderr
    assert result.concurrency == CONCURRENCY
    assert result.throughput_infer_per_sec > 0
    assert result.request_count is not None
    assert result.request_count > 0
    assert 0 < result.p50_latency_us <= result.p99_latency_us

    # The server lists the "statistics" extension, so perf_analyzer read ModelStatistics and
    # reported server-side times.
    missing = [column for column in SERVER_COLUMNS if column not in result.csv_row]
    assert not missing, f"server-side columns missing: {missing}; row: {result.csv_row}"
    assert int(result.csv_row["Server Compute Infer"]) > 0

    # The server agrees: everything perf_analyzer measured succeeded, nothing failed.
    assert failures == failures_before
    assert successes - successes_before >= result.request_count
    assert inferences - inferences_before >= result.request_count


MODES = {
    "streaming": ("--streaming",),
    "system-shared-memory": ("--shared-memory", "system"),
    "streaming-and-shared-memory": ("--streaming", "--shared-memory", "system"),
}


@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize("model", sorted(SHAPES))
def test_perf_analyzer_streaming_and_shared_memory(
    bundled_server: ServerProcess, model: str, mode: str
):
    """--streaming drives ModelStreamInfer; --shared-memory system registers regions, sends
    inputs and receives outputs through them, and unregisters them at the end."""
    with triton.InferenceServerClient(bundled_server.url) as client:
        _, successes_before, failures_before = _counts(client, model)

        result = run_perf_analyzer(
            model,
            bundled_server.url,
            concurrency=CONCURRENCY,
            measurement_ms=MEASUREMENT_MS,
            shapes=SHAPES[model],
            extra_args=MODES[mode],
            timeout_s=60,
        )

        _, successes, failures = _counts(client, model)
        regions_left = client.get_system_shared_memory_status().regions

    assert result.errors == 0, result.stderr
    assert result.request_count is not None
    assert result.request_count > 0
    assert failures == failures_before
    assert successes - successes_before >= result.request_count
    assert not regions_left


def _readme_command(prefix: str) -> list[str]:
    """The README's shell command that starts with `prefix`, continuation lines joined."""
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("\n" + prefix) + 1
    end = text.index("\n```", start)
    return shlex.split(text[start:end].replace("\\\n", " "))


def test_the_readme_perf_analyzer_command_completes(bundled_server: ServerProcess) -> None:
    """The command a new user copies from README.md, as written, but for the server's port."""
    command = _readme_command("scripts/perf_analyzer ")
    command[command.index("localhost:8001")] = bundled_server.url
    finished = subprocess.run(
        command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert finished.returncode == 0, finished.stdout[-3000:] + finished.stderr[-3000:]
    assert "Concurrency: 8, throughput:" in finished.stdout, finished.stdout[-3000:]
