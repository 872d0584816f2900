"""deploy/compose: the local stack (tensorgate, Prometheus, Grafana, Jaeger).

No Docker daemon runs here, so the stack is not started: the file is checked by a real Compose
implementation's `config` (Debian's docker-compose, which needs no daemon), and what its
services hand each other (ports, the OTLP endpoint, the scrape target, the rules, the dashboard
and its data source) is checked against the other side. That the server's traces reach an OTLP
receiver is tests/integration/test_otlp_traces.py.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml

from server.cli import build_parser, settings_from

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_DIR = REPO_ROOT / "deploy" / "compose"
COMPOSE_FILE = COMPOSE_DIR / "compose.yaml"
DOCKER_COMPOSE = shutil.which("docker-compose")
PINNED = re.compile(r"^[a-z0-9./_-]+:v?\d+\.\d+\.\d+$")


def compose_config(path: Path) -> subprocess.CompletedProcess[str]:
    if DOCKER_COMPOSE is None:  # as for promtool: where apt cannot install it, say so
        pytest.skip("docker-compose is not installed: run scripts/install_debian_tools.sh")
    return subprocess.run(
        [DOCKER_COMPOSE, "-f", str(path), "--project-directory", str(COMPOSE_DIR), "config"],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture(scope="module")
def resolved() -> dict[str, Any]:
    """The stack as docker-compose reads it: relative paths resolved, defaults filled in."""
    done = compose_config(COMPOSE_FILE)
    assert done.returncode == 0, done.stderr
    config: dict[str, Any] = yaml.safe_load(done.stdout)
    return config


def test_docker_compose_accepts_the_file_and_refuses_a_broken_one(
    resolved: dict[str, Any], tmp_path: Path
) -> None:
    assert set(resolved["services"]) == {"tensorgate", "prometheus", "grafana", "jaeger"}
    broken = yaml.safe_load(COMPOSE_FILE.read_text())
    broken["services"]["grafana"]["restart_policy"] = "always"  # not a service field
    (tmp_path / "compose.yaml").write_text(yaml.safe_dump(broken))
    done = compose_config(tmp_path / "compose.yaml")
    assert done.returncode != 0 and "restart_policy" in done.stderr


def test_every_image_is_pinned_and_every_mounted_file_exists(resolved: dict[str, Any]) -> None:
    for name, service in resolved["services"].items():
        assert PINNED.match(service["image"]), f"{name}: {service['image']} is not pinned"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0] if isinstance(volume, str) else volume["source"]
            assert Path(source).exists(), f"{name} mounts {source}, which is not in the repo"
    assert Path(resolved["services"]["tensorgate"]["build"]["context"]) == REPO_ROOT


def published(service: dict[str, Any]) -> dict[int, int]:
    return {int(p["target"]): int(p["published"]) for p in service.get("ports", [])}


def test_tensorgate_settings_parse_and_send_traces_to_jaeger(resolved: dict[str, Any]) -> None:
    services = resolved["services"]
    env = {key: str(value) for key, value in services["tensorgate"]["environment"].items()}
    settings = settings_from(build_parser().parse_args(["serve"]), env)
    assert settings.trace_exporter == "otlp" and settings.trace_sample_ratio == 1.0
    # The image's own defaults (Dockerfile ENV) put gRPC on 8001 and HTTP on 8000.
    assert published(services["tensorgate"]) == {
        8000: 8000,
        8001: 8001,
        settings.metrics_port: 8002,
    }
    endpoint = urlparse(env["OTEL_EXPORTER_OTLP_ENDPOINT"])
    assert (endpoint.hostname, endpoint.port) == ("jaeger", 4317)  # OTLP over gRPC
    assert services["jaeger"]["environment"]["COLLECTOR_OTLP_ENABLED"] == "true"


def test_prometheus_scrapes_tensorgate_with_its_rules(
    resolved: dict[str, Any], tmp_path: Path
) -> None:
    prometheus = resolved["services"]["prometheus"]
    mounts = dict(reversed(v.split(":")[:2]) for v in prometheus["volumes"])
    config_path = next(a.split("=", 1)[1] for a in prometheus["command"] if "config.file" in a)
    config = yaml.safe_load(Path(mounts[config_path]).read_text())
    (job,) = config["scrape_configs"]
    env = resolved["services"]["tensorgate"]["environment"]
    assert job["job_name"] == "tensorgate"  # the job the dashboard and the rules select
    assert job["static_configs"] == [{"targets": [f"tensorgate:{env['TENSORGATE_METRICS_PORT']}"]}]
    (rules_glob,) = config["rule_files"]
    rules = [container for container in mounts if Path(container).match(rules_glob)]
    assert [Path(mounts[r]).name for r in rules] == ["tensorgate-rules.yml"]

    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (scripts/install_debian_tools.sh)")
    # promtool checks the config with the rules file where this machine has it.
    config["rule_files"] = [mounts[rules[0]]]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    done = subprocess.run(
        [promtool, "check", "config", str(tmp_path / "prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_grafana_provisions_the_data_source_and_dashboard(resolved: dict[str, Any]) -> None:
    grafana = resolved["services"]["grafana"]
    mounts = dict(reversed(v.split(":")[:2]) for v in grafana["volumes"])
    provisioning = Path(mounts["/etc/grafana/provisioning"])
    (source,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yaml").read_text())[
        "datasources"
    ]
    assert source["type"] == "prometheus" and source["isDefault"] is True
    prometheus_port = published(resolved["services"]["prometheus"])
    assert urlparse(source["url"]).hostname == "prometheus"
    assert urlparse(source["url"]).port in prometheus_port

    (provider,) = yaml.safe_load((provisioning / "dashboards" / "tensorgate.yaml").read_text())[
        "providers"
    ]
    dashboards = [c for c in mounts if Path(c).parent == Path(provider["options"]["path"])]
    assert [Path(mounts[d]).name for d in dashboards] == ["tensorgate-dashboard.json"]

    # Provisioning does not fill an import's inputs: the panels' ${DS_PROMETHEUS} must be a
    # dashboard variable of type datasource, which resolves to the provisioned default.
    dashboard = json.loads(Path(mounts[dashboards[0]]).read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == source["type"]
    references = re.findall(r'"uid": "([^"]*)"', json.dumps(dashboard["panels"]))
    assert references and set(references) == {"${DS_PROMETHEUS}"}
