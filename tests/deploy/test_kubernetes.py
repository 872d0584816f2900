"""deploy/kubernetes: kustomize builds the base, the GPU overlay and the TLS component cleanly;
every resource passes the Kubernetes API schemas (strict: unknown fields fail) of the oldest
release the manifests support (1.27: native gRPC probes) and of the newest one known; the
ServiceMonitor passes the Prometheus Operator's models; and the parts agree with each other,
with the server's settings and with the Dockerfile."""

from __future__ import annotations

import copy
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from server.cli import _SERVE_OPTIONS, build_parser, settings_from
from tests.deploy import dockerfile as df

REPO_ROOT = Path(__file__).resolve().parents[2]
KUBERNETES = REPO_ROOT / "deploy" / "kubernetes"
KUBECTL = Path(os.environ.get("KUBECTL", REPO_ROOT / ".venv" / "bin" / "kubectl"))
SCHEMA_VERSIONS = ("1.27.0", "1.37.0")

# Settings the manifests pass that `tensorgate serve` may not know yet: auth and TLS are being
# built as this is written, and a plaintext health port for TLS pods is still to come
# (deploy/README.md, "What the manifests assume"). Every other TENSORGATE_* must be a setting
# the server knows, and every one the server knows must parse.
PENDING_SETTINGS = {
    "TENSORGATE_AUTH_TOKENS_FILE",
    "TENSORGATE_TLS_CERT_FILE",
    "TENSORGATE_TLS_KEY_FILE",
    "TENSORGATE_GRPC_HEALTH_PORT",
}

Resources = list[dict[str, Any]]


def kustomize(directory: Path) -> Resources:
    assert KUBECTL.exists(), f"{KUBECTL} is missing: run scripts/install_kubectl.sh"
    result = subprocess.run(
        [str(KUBECTL), "kustomize", str(directory)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", result.stderr  # no warnings either (deprecated fields, ...)
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def one(resources: Resources, kind: str, name: str | None = None) -> dict[str, Any]:
    found = [
        r
        for r in resources
        if r["kind"] == kind and (name is None or r["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"{len(found)} {kind} {name or ''}"
    return found[0]


def container(resources: Resources) -> dict[str, Any]:
    containers = one(resources, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["tensorgate"]
    return containers[0]


def config(resources: Resources) -> dict[str, str]:
    return one(resources, "ConfigMap")["data"]


def mounted_secret_files(resources: Resources) -> dict[str, tuple[str, str]]:
    """Path in the container -> (Secret, key), for every Secret item the container mounts."""
    pod = one(resources, "Deployment")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    files = {}
    for mount in container(resources)["volumeMounts"]:
        secret = volumes[mount["name"]].get("secret")
        if secret is None:
            continue
        assert mount["readOnly"] is True and "optional" not in secret
        for item in secret["items"]:
            files[f"{mount['mountPath']}/{item['path']}"] = (secret["secretName"], item["key"])
    return files


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


@pytest.fixture(scope="module")
def base() -> Resources:
    return kustomize(KUBERNETES / "base")


@pytest.fixture(scope="module")
def gpu() -> Resources:
    return kustomize(KUBERNETES / "overlays" / "gpu")


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Resources:
    """The base with components/tls, as a user's overlay would add it."""
    overlay = tmp_path_factory.mktemp("tls-overlay")
    (overlay / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                # kustomize takes relative paths only.
                "resources": [os.path.relpath(KUBERNETES / "base", overlay)],
                "components": [os.path.relpath(KUBERNETES / "components" / "tls", overlay)],
            }
        )
    )
    return kustomize(overlay)


@pytest.fixture(scope="module")
def builds(base: Resources, gpu: Resources, tls: Resources) -> dict[str, Resources]:
    return {"base": base, "overlays/gpu": gpu, "base + components/tls": tls}


def test_kustomize_builds_every_kind_the_issue_asks_for(builds: dict[str, Resources]) -> None:
    for name, resources in builds.items():
        kinds = sorted((r["kind"], r["metadata"]["name"]) for r in resources)
        assert kinds == sorted(
            [
                ("ConfigMap", kinds_name(resources, "ConfigMap")),
                ("Deployment", "tensorgate"),
                ("HorizontalPodAutoscaler", "tensorgate"),
                ("Namespace", "tensorgate"),
                ("PersistentVolumeClaim", "tensorgate-models"),
                ("PodDisruptionBudget", "tensorgate"),
                ("Service", "tensorgate"),
                ("Service", "tensorgate-headless"),
                ("ServiceMonitor", "tensorgate"),
            ]
        ), name
        for resource in resources:
            if resource["kind"] != "Namespace":
                assert resource["metadata"]["namespace"] == "tensorgate", resource["kind"]


def kinds_name(resources: Resources, kind: str) -> str:
    name = one(resources, kind)["metadata"]["name"]
    assert re.fullmatch(r"tensorgate-config-[a-z0-9]{10}", name), name  # content hash
    return name


@pytest.mark.parametrize("version", SCHEMA_VERSIONS)
def test_resources_pass_the_kubernetes_schemas(builds: dict[str, Resources], version: str) -> None:
    checked = set()
    for name, resources in builds.items():
        for resource in resources:
            if resource["apiVersion"].startswith("monitoring.coreos.com/"):
                continue  # a custom resource: test_service_monitor_passes_its_crd_models
            try:
                kubernetes_validate.validate(resource, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                path = ".".join(str(p) for p in error.path)
                pytest.fail(f"{name}: {resource['kind']} at {path}: {error.message}")
            checked.add(resource["kind"])
    assert len(checked) == 7  # every kind but the ServiceMonitor

    # The validator is strict: a misspelt field fails.
    deployment = copy.deepcopy(one(builds["base"], "Deployment"))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, version, strict=True)


def test_service_monitor_passes_its_crd_models(builds: dict[str, Resources]) -> None:
    from cloudcoil.models.prometheus_operator.v1 import ServiceMonitor

    for resources in builds.values():
        manifest = one(resources, "ServiceMonitor")
        model = ServiceMonitor.model_validate(manifest)
        # The models ignore unknown fields: a round trip that loses one shows it.
        assert model.model_dump(by_alias=True, exclude_unset=True) == manifest
    broken = copy.deepcopy(manifest)
    broken["spec"]["endpoints"][0]["interval"] = "15"  # no unit
    with pytest.raises(ValueError):
        ServiceMonitor.model_validate(broken)


def test_settings_parse_and_match_the_pod(builds: dict[str, Resources]) -> None:
    """Every TENSORGATE_* the ConfigMap sets is a `tensorgate serve` setting (or one the server
    is growing), parses, and matches the ports, mounts and grace period of the pod."""
    known = {option.env for option in _SERVE_OPTIONS}
    for name, resources in builds.items():
        env = config(resources)
        assert all(key.startswith("TENSORGATE_") for key in env), name
        assert set(env) - known <= PENDING_SETTINGS, f"{name}: unknown {set(env) - known}"
        settings = settings_from(build_parser().parse_args(["serve"]), env)

        pod = one(resources, "Deployment")["spec"]["template"]["spec"]
        main = container(resources)
        config_map = one(resources, "ConfigMap")["metadata"]["name"]
        assert main["envFrom"] == [{"configMapRef": {"name": config_map}}]
        ports = {p["name"]: p["containerPort"] for p in main["ports"]}
        assert ports["grpc"] == settings.grpc_port == 8001
        assert ports["http"] == settings.http_port == 8000
        assert settings.grpc_host == "0.0.0.0"
        assert ports["metrics"] == int(env["TENSORGATE_METRICS_PORT"]) == 8002

        # The models volume is where the server looks, read-only.
        mounts = {m["mountPath"]: m for m in main["volumeMounts"]}
        models = mounts[str(settings.model_repository)]
        assert models["readOnly"] is True
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert (
            volumes[models["name"]]["persistentVolumeClaim"]["claimName"]
            == (one(resources, "PersistentVolumeClaim")["metadata"]["name"])
        )

        # Files the settings name are files of mounted Secrets.
        assert mounted_secret_files(resources).keys() >= {
            v for k, v in env.items() if k.endswith("_FILE")
        }
        assert "TENSORGATE_AUTH_TOKENS_FILE" in env

        # Graceful termination: the preStop pause, then the server's grace period, then
        # unloading, all inside terminationGracePeriodSeconds.
        pre_stop = main["lifecycle"]["preStop"]["exec"]["command"]
        assert pre_stop[0] == "sleep"
        assert settings.grace_period_s == 30
        pause_s = int(pre_stop[1])
        assert pod["terminationGracePeriodSeconds"] == pause_s + settings.grace_period_s + 10
        # Connections are recycled so that clients spread over new replicas, and calls on an
        # aged connection get no more time than a drain does.
        assert settings.max_connection_age_s > 0
        assert settings.max_connection_age_grace_s <= settings.grace_period_s


def test_probes_are_native_grpc_health_checks(builds: dict[str, Resources]) -> None:
    for name, resources in builds.items():
        main = container(resources)
        env = config(resources)
        port = int(env.get("TENSORGATE_GRPC_HEALTH_PORT", env["TENSORGATE_GRPC_PORT"]))
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert main[probe]["grpc"] == {"port": port, "service": ""}, (name, probe)
        liveness = main["livenessProbe"]
        assert liveness["failureThreshold"] * liveness["periodSeconds"] >= 30
        # A slow model load is the startup probe's business, not a liveness restart loop.
        startup = main["startupProbe"]
        assert startup["failureThreshold"] * startup["periodSeconds"] >= 300
    # With TLS on the gRPC port, the plaintext probes use the health-only port, which the pod
    # declares and no Service exposes.
    tls = builds["base + components/tls"]
    env = config(tls)
    assert env["TENSORGATE_GRPC_HEALTH_PORT"] == "8003"
    assert {"name": "health", "containerPort": 8003, "protocol": "TCP"} in container(tls)["ports"]
    for service in (r for r in tls if r["kind"] == "Service"):
        for port in service["spec"]["ports"]:
            assert port["targetPort"] != "health" and port["port"] != 8003
    assert "TENSORGATE_TLS_CERT_FILE" not in config(builds["base"])


def test_pod_is_sized_hardened_and_rolls_without_losing_capacity(
    builds: dict[str, Resources],
) -> None:
    user = df.parse((REPO_ROOT / "Dockerfile").read_text()).final.last("USER").arguments
    uid, gid = (int(x) for x in user.split(":"))
    for name, resources in builds.items():
        deployment = one(resources, "Deployment")
        assert "replicas" not in deployment["spec"], "the HPA owns the replica count"
        rolling = deployment["spec"]["strategy"]["rollingUpdate"]
        assert rolling == {"maxSurge": 1, "maxUnavailable": 0}
        pod = deployment["spec"]["template"]["spec"]
        security = pod["securityContext"]
        assert (security["runAsUser"], security["runAsGroup"]) == (uid, gid)  # the image's USER
        assert security["runAsNonRoot"] is True
        main = container(resources)
        assert main["securityContext"]["readOnlyRootFilesystem"] is True
        assert main["securityContext"]["allowPrivilegeEscalation"] is False
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(main["resources"][kind]), (name, kind)
        assert main["image"].startswith("registry.example.com/tensorgate:0.1.0")
        assert main["args"] == ["serve"]


def test_gpu_overlay_asks_for_a_gpu_node_and_the_gpu_image(base: Resources, gpu: Resources) -> None:
    main = container(gpu)
    assert main["image"] == "registry.example.com/tensorgate:0.1.0-gpu"
    assert main["resources"]["limits"]["nvidia.com/gpu"] == "1"
    pod = one(gpu, "Deployment")["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod[
        "tolerations"
    ]
    # Everything else comes from the base unchanged.
    base_main = container(base)
    for key in ("readinessProbe", "livenessProbe", "lifecycle", "volumeMounts", "envFrom"):
        assert main[key] == base_main[key], key
    assert container(base)["image"] == "registry.example.com/tensorgate:0.1.0"
    hpa = one(gpu, "HorizontalPodAutoscaler")["spec"]
    assert [m["type"] for m in hpa["metrics"]] == ["Pods"]


def test_services_monitor_and_budget_select_the_pods(base: Resources) -> None:
    pod_labels = one(base, "Deployment")["spec"]["template"]["metadata"]["labels"]
    deployment_selector = one(base, "Deployment")["spec"]["selector"]["matchLabels"]
    assert selects(deployment_selector, pod_labels)
    container_ports = {p["name"] for p in container(base)["ports"]}

    cluster_ip = one(base, "Service", "tensorgate")
    headless = one(base, "Service", "tensorgate-headless")
    assert cluster_ip["spec"]["type"] == "ClusterIP" and "clusterIP" not in cluster_ip["spec"]
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["publishNotReadyAddresses"] is False
    for service in (cluster_ip, headless):
        assert selects(service["spec"]["selector"], pod_labels)
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= container_ports
        grpc = next(p for p in service["spec"]["ports"] if p["name"] == "grpc")
        assert (grpc["port"], grpc["appProtocol"]) == (8001, "kubernetes.io/h2c")
        http = next(p for p in service["spec"]["ports"] if p["name"] == "http")
        assert (http["port"], http["appProtocol"]) == (8000, "http")

    # The ServiceMonitor picks the one Service with the metrics port: no pod scraped twice.
    monitor = one(base, "ServiceMonitor")
    selector = monitor["spec"]["selector"]["matchLabels"]
    services = [r for r in base if r["kind"] == "Service"]
    picked = [s for s in services if selects(selector, s["metadata"]["labels"])]
    assert picked == [cluster_ip]
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in cluster_ip["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"

    budget = one(base, "PodDisruptionBudget")["spec"]
    assert selects(budget["selector"]["matchLabels"], pod_labels)
    hpa = one(base, "HorizontalPodAutoscaler")["spec"]
    assert hpa["minReplicas"] > budget["maxUnavailable"]


def test_hpa_scales_on_the_queue_metric_the_adapter_serves(base: Resources) -> None:
    hpa = one(base, "HorizontalPodAutoscaler")["spec"]
    assert hpa["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "tensorgate",
    }
    by_type = {m["type"]: m for m in hpa["metrics"]}
    assert set(by_type) == {"Pods", "Resource"}
    queue = by_type["Pods"]["pods"]
    assert queue["target"]["type"] == "AverageValue" and float(queue["target"]["averageValue"]) > 0
    assert by_type["Resource"]["resource"]["name"] == "cpu"
    assert by_type["Resource"]["resource"]["target"]["type"] == "Utilization"

    values = yaml.safe_load((KUBERNETES / "prometheus-adapter" / "values.yaml").read_text())
    (rule,) = values["rules"]["custom"]
    # The series the server exports (a gauge labelled model, version, priority) ...
    assert re.match(r"^tensorgate_queue_depth\{", rule["seriesQuery"])
    # ... tied to the pod and namespace labels the ServiceMonitor's scrape adds ...
    overrides = rule["resources"]["overrides"]
    assert overrides == {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}
    # ... served under the name the HPA asks for ...
    series = "tensorgate_queue_depth"
    served = re.sub(rule["name"]["matches"], rule["name"]["as"], series)
    assert re.search(rule["name"]["matches"], series) and served == queue["metric"]["name"]
    # ... summed per pod over model, version and priority.
    query = rule["metricsQuery"]
    assert query.replace(" ", "") == "sum(<<.Series>>{<<.LabelMatchers>>})by(<<.GroupBy>>)"


def test_example_secrets_have_what_the_pods_mount(builds: dict[str, Resources]) -> None:
    """The Secrets live outside the kustomization (never in git); secrets.example.yaml shows
    them, passes the schemas, and holds every key a build mounts."""
    examples = [
        doc for doc in yaml.safe_load_all((KUBERNETES / "secrets.example.yaml").read_text()) if doc
    ]
    keys = {(s["metadata"]["name"], k) for s in examples for k in s["stringData"]}
    for version in SCHEMA_VERSIONS:
        for secret in examples:
            kubernetes_validate.validate(secret, version, strict=True)
    mounted = set()
    for name, resources in builds.items():
        assert not [r for r in resources if r["kind"] == "Secret"], name
        mounted |= set(mounted_secret_files(resources).values())
    assert mounted == keys
    tls = next(s for s in examples if s["metadata"]["name"] == "tensorgate-tls")
    assert tls["type"] == "kubernetes.io/tls"  # what cert-manager and `create secret tls` make
    auth = next(s for s in examples if s["metadata"]["name"] == "tensorgate-auth")
    for line in auth["stringData"]["tokens"].splitlines():
        name, scopes, token = line.split()  # <name> <scopes> <token>
        assert set(scopes.split(",")) <= {"infer", "admin"} and token.startswith("REPLACE")
