"""benchmarks/locustfile.py: a short headless Locust run over gRPC against the real server.

Runs in its own pytest process (scripts/test.sh): the locustfile imports tensorgate's generated
stubs, and so does this test to read the server's own request count.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import grpc

from server._proto import grpc_service_pb2 as pb
from server._proto import grpc_service_pb2_grpc as pb_grpc
from tests.support.server_process import REPO_ROOT, ServerProcess

LOCUSTFILE = REPO_ROOT / "benchmarks" / "locustfile.py"
MODEL = "tabular_classifier"


def _inference_count(url: str) -> int:
    with grpc.insecure_channel(url) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        stats = stub.ModelStatistics(pb.ModelStatisticsRequest(name=MODEL), timeout=10)
    return sum(s.inference_count for s in stats.model_stats)


def test_headless_locust_run_reports_grpc_requests_without_failures(tmp_path: Path) -> None:
    locust = Path(sys.executable).with_name("locust")
    assert locust.is_file(), "locust is missing: pip install -e '.[test]'"
    with ServerProcess() as server:
        with grpc.insecure_channel(server.url) as channel:
            grpc.channel_ready_future(channel).result(timeout=30)
        before = _inference_count(server.url)
        proc = subprocess.run(
            [
                str(locust),
                "-f",
                str(LOCUSTFILE),
                "--headless",
                "--users",
                "4",
                "--spawn-rate",
                "4",
                "--run-time",
                "5s",
                "--stop-timeout",
                "5",
                "--host",
                server.url,
                "--model",
                MODEL,
                "--csv",
                str(tmp_path / "run"),
                "--json-file",
                str(tmp_path / "run"),
                "--only-summary",
            ],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
        )
        served = _inference_count(server.url) - before
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output

    # The final statistics, as Locust reports any user's requests.
    (entry,) = json.loads((tmp_path / "run.json").read_text())
    assert entry["method"] == "grpc"
    assert entry["name"] == f"ModelInfer {MODEL}"
    assert entry["num_requests"] > 0, output
    assert entry["num_failures"] == 0, output
    assert entry["total_content_length"] > 0
    # Every request Locust counted reached the server and ran the model.
    assert served >= entry["num_requests"]

    # The CSV report has the same request type and no failures.
    with (tmp_path / "run_stats.csv").open() as f:
        rows = {row["Name"]: row for row in csv.DictReader(f)}
    assert rows[f"ModelInfer {MODEL}"]["Type"] == "grpc"
    assert int(rows["Aggregated"]["Request Count"]) > 0
    assert int(rows["Aggregated"]["Failure Count"]) == 0
    with (tmp_path / "run_failures.csv").open() as f:
        assert list(csv.DictReader(f)) == []
