"""Start the real `tensorgate serve` in a subprocess on an ephemeral port.

Readiness comes from the server's own "listening for gRPC on HOST:PORT" log line, read from its
output by a thread (no sleeps, no fixed ports); the caller then waits with channel_ready.
A subprocess also keeps our generated stubs out of the test process, where tritonclient's
stubs register the same protobuf symbols.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

_LISTENING = re.compile(r"listening for gRPC on (\S+):(\d+)")
REPO_ROOT = Path(__file__).resolve().parents[2]


class ServerProcess:
    """A running server. `url` is host:port for clients; `log_lines` is its output so far."""

    def __init__(
        self,
        model_repository: Path | None = None,
        extra_args: Sequence[str] = (),
        env: dict[str, str] | None = None,
        startup_timeout_s: float = 60.0,
        module: str = "server",
    ) -> None:
        """`module` is run as `python -m module serve ...`; another module that prints the same
        listening line (the benchmarks' bare server) can stand in for tensorgate."""
        command = [sys.executable, "-m", module, "serve", "--grpc-host", "127.0.0.1"]
        command += ["--grpc-port", "0"]
        if model_repository is not None:
            command += ["--model-repository", str(model_repository)]
        command += list(extra_args)
        self.log_lines: list[str] = []
        self._listening = threading.Event()
        self.port = 0
        self.process = subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            env={**os.environ, **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._reader = threading.Thread(target=self._read_output, daemon=True)
        self._reader.start()
        if not self._listening.wait(startup_timeout_s) or not self.port:
            self.stop()
            raise RuntimeError("server did not start:\n" + self.log_text)

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_text(self) -> str:
        return "".join(self.log_lines)

    def _read_output(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.log_lines.append(line)
            match = _LISTENING.search(line)
            if match and not self._listening.is_set():
                self.port = int(match.group(2))
                self._listening.set()
        self._listening.set()  # the process ended: wake a waiting constructor

    def terminate(self) -> None:
        """Ask for a graceful shutdown (SIGTERM), as Kubernetes does."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def stop(self, timeout_s: float = 30.0) -> int:
        self.terminate()
        try:
            code = self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        self._reader.join(timeout_s)
        return code

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
