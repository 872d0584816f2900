"""deploy/prometheus's rules, and a real Prometheus started on loopback to evaluate them.

The tools come from Debian's `prometheus` package (scripts/install_debian_tools.sh); tests skip,
saying so, where it is not installed.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

from tests.support.server_process import REPO_ROOT

PROMETHEUS_DIR = REPO_ROOT / "deploy" / "prometheus"
RULES = PROMETHEUS_DIR / "tensorgate-rules.yml"
OPERATOR_RULE = PROMETHEUS_DIR / "tensorgate-prometheusrule.yaml"
DASHBOARD = REPO_ROOT / "deploy" / "grafana" / "tensorgate-dashboard.json"
JOB = "tensorgate"
T = TypeVar("T")


def tool(name: str) -> str:
    """The path of `promtool` or `prometheus`; skips the test when it is not installed."""
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed: run scripts/install_debian_tools.sh")
    return path


def rules(kind: str) -> list[dict[str, Any]]:
    """Every rule of the plain rules file that has `kind` ("record" or "alert")."""
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if kind in rule]


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every query on the Grafana dashboard, variables and all."""
    dashboard = json.loads(DASHBOARD.read_text())
    return [
        (panel["title"], target["expr"])
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    ]


class Prometheus:
    """`prometheus` on 127.0.0.1 with an ephemeral port, scraping `targets` as job tensorgate
    every second and evaluating the rules file every second."""

    def __init__(self, targets: list[str], workdir: Path, startup_timeout_s: float = 60.0) -> None:
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(RULES)],
            "scrape_configs": [{"job_name": JOB, "static_configs": [{"targets": targets}]}],
        }
        config_file = workdir / "prometheus.yml"
        config_file.write_text(yaml.safe_dump(config))
        self._log = (workdir / "prometheus.log").open("w+")
        # Port 0: Prometheus logs the address it bound, read back from its log.
        self.process = subprocess.Popen(
            [
                tool("prometheus"),
                f"--config.file={config_file}",
                f"--storage.tsdb.path={workdir / 'data'}",
                "--web.listen-address=127.0.0.1:0",
                "--log.format=json",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        try:
            self.url = poll(self._bound_url, startup_timeout_s, "Prometheus to listen")
            poll(self._ready, startup_timeout_s, "Prometheus ready")
        except BaseException:
            self.stop()
            raise

    def _bound_url(self) -> str | None:
        if self.process.poll() is not None:
            raise RuntimeError(f"prometheus exited {self.process.returncode}:\n{self.log}")
        for line in self.log.splitlines():
            entry = json.loads(line) if line.startswith("{") else {}
            if entry.get("msg") == "Listening on":
                return f"http://{entry['address']}"
        return None

    def _ready(self) -> bool | None:
        try:
            self.get("/-/ready")  # 503 while the TSDB opens
        except urllib.error.HTTPError:
            return None
        return True

    @property
    def log(self) -> str:
        self._log.seek(0)
        return self._log.read()

    def get(self, path: str, **params: str) -> Any:
        """GET an API path; the decoded JSON, or the text of a non-JSON answer."""
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.url}{path}{query}", timeout=10) as response:
            body = response.read().decode()
        return json.loads(body) if body.startswith("{") else body

    def query(self, expr: str) -> list[dict[str, Any]]:
        answer = self.get("/api/v1/query", query=expr)
        assert answer["status"] == "success", (expr, answer)
        result: list[dict[str, Any]] = answer["data"]["result"]
        return result

    def wait_for_data(self, exprs: list[str], timeout_s: float) -> list[str]:
        """Query each of `exprs` until all return data or `timeout_s` passes; the ones still
        empty then."""
        empty = list(exprs)

        def settled() -> bool | None:
            empty[:] = [expr for expr in empty if not self.query(expr)]
            return True if not empty else None

        with contextlib.suppress(TimeoutError):
            poll(settled, timeout_s, "data")
        return empty

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


def poll(attempt: Callable[[], T | None], timeout_s: float, what: str) -> T:
    """Call `attempt` until it returns something other than None, for at most `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = attempt()
        if result is not None:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout_s}s for {what}")
        time.sleep(0.2)
