"""Start the real `tensorgate serve` in a subprocess on an ephemeral port.

Readiness comes from the server's own "listening for gRPC on HOST:PORT" log line, read from its
output by a thread (no sleeps, no fixed ports); the caller then waits with channel_ready. Tests
synchronise on later log lines the same way: `wait_for_log` blocks on a condition that the reader
thread notifies on every line.
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
from re import Match

_LISTENING = re.compile(r"listening for gRPC on (\S+):(\d+)")
_METRICS = re.compile(r"metrics on http://(\S+):(\d+)/metrics")
_HTTP = re.compile(r"listening for HTTP on (\S+):(\d+)")
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
        if module == "server":
            command += ["--metrics-port", "0", "--http-port", "0"]
        if model_repository is not None:
            command += ["--model-repository", str(model_repository)]
        command += list(extra_args)
        self.log_lines: list[str] = []
        self._listening = threading.Event()
        self._new_line = threading.Condition()  # notified on every line and when output ends
        self._output_ended = False
        self.port = 0
        self.metrics_port = 0
        self.http_port = 0
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
    def http_url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def log_text(self) -> str:
        return "".join(self.log_lines)

    def _read_output(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._new_line:
                self.log_lines.append(line)
                self._new_line.notify_all()
            metrics = _METRICS.search(line)
            if metrics:
                self.metrics_port = int(metrics.group(2))
            http = _HTTP.search(line)
            if http:
                self.http_port = int(http.group(2))
            match = _LISTENING.search(line)
            if match and not self._listening.is_set():
                self.port = int(match.group(2))
                self._listening.set()
        with self._new_line:
            self._output_ended = True
            self._new_line.notify_all()
        self._listening.set()  # the process ended: wake a waiting constructor

    def log_mark(self) -> int:
        """The number of lines read so far: pass it as `start` to look only at later lines."""
        with self._new_line:
            return len(self.log_lines)

    def log_matches(self, pattern: str, start: int = 0) -> list[Match[str]]:
        """Matches of `pattern` in the lines from index `start` on, read so far."""
        regex = re.compile(pattern)
        with self._new_line:
            lines = self.log_lines[start:]
        return [match for line in lines if (match := regex.search(line))]

    def wait_for_log(
        self, pattern: str, count: int = 1, *, start: int = 0, timeout_s: float = 30.0
    ) -> list[Match[str]]:
        """Block until lines from index `start` on have matched `pattern` `count` times and
        return those matches. Woken by the reader thread on every line (no polling); raises
        TimeoutError, with the log, if they do not come in time or the output ends first."""
        regex = re.compile(pattern)
        matches: list[Match[str]] = []
        scanned = start

        def enough() -> bool:
            nonlocal scanned
            while len(matches) < count and scanned < len(self.log_lines):
                match = regex.search(self.log_lines[scanned])
                scanned += 1
                if match:
                    matches.append(match)
            return len(matches) >= count or self._output_ended

        with self._new_line:
            self._new_line.wait_for(enough, timeout_s)
        if len(matches) < count:
            raise TimeoutError(
                f"log line /{pattern}/ seen {len(matches)} of {count} times "
                f"({'output ended' if self._output_ended else f'after {timeout_s}s'}):\n"
                + "".join(self.log_lines[start:])[-6000:]
            )
        return matches

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
