"""A real MLflow tracking server (SQLite backend, artifact serving) on loopback, for tests.

It runs from its own environment (scripts/install_mlflow.sh puts MLflow there: the server's
dependencies do not belong in tensorgate's), on a free port; `stop` ends its whole process
group (gunicorn or uvicorn workers included).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
MLFLOW = Path(os.environ.get("MLFLOW_SERVER", REPO_ROOT / ".tools" / "mlflow" / "bin" / "mlflow"))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class MlflowServer:
    def __init__(self, directory: Path, port: int | None = None) -> None:
        """State lives in `directory` (database and artifacts), so a server started again on
        the same directory and port is the same registry."""
        if not MLFLOW.is_file():
            raise FileNotFoundError(f"no MLflow server at {MLFLOW}: run scripts/install_mlflow.sh")
        self.directory = directory
        self.port = port or free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 90.0) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        command = [
            str(MLFLOW),
            "server",
            "--backend-store-uri",
            f"sqlite:///{self.directory / 'mlflow.db'}",
            "--artifacts-destination",
            str(self.directory / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            "1",
        ]
        log = (self.directory / "server.log").open("ab")
        self.process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mlflow server exited:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)  # polling a process we cannot be notified by, under a deadline
        self.stop()
        raise TimeoutError(f"mlflow server not up in {timeout_s}s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def log_tail(self) -> str:
        path = self.directory / "server.log"
        return path.read_text(errors="replace")[-4000:] if path.is_file() else ""
