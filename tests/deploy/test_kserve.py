"""deploy/kserve: the ClusterServingRuntime and the example InferenceService.

They load into the KServe Python SDK's own models without unknown fields, their container
passes the Kubernetes Pod schema, their settings agree with each other and with KServe's rules,
and the container's own arguments start a real tensorgate on a /mnt/models-shaped directory in
both layouts KServe's storage initializer leaves (one file; Triton's layout).
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import grpc
import kubernetes_validate
import numpy as np
import onnxruntime as ort
import pytest
import yaml

from server._proto import grpc_service_pb2 as pb
from server._proto import grpc_service_pb2_grpc as pb_grpc
from server.cli import build_parser, settings_from
from tests.deploy.client import infer_request, wait_ready
from tests.deploy.test_kubernetes import SCHEMA_VERSIONS
from tests.support.server_process import ServerProcess

REPO_ROOT = Path(__file__).resolve().parents[2]
KSERVE = REPO_ROOT / "deploy" / "kserve"
# The KServe SDK lives in its own environment (benchmarks/peers/setup.sh kserve, run by
# scripts/install_dev.sh): its pins do not fit tensorgate's.
KSERVE_PYTHON = Path(
    os.environ.get("KSERVE_PYTHON", REPO_ROOT / ".tools" / "peers" / "kserve" / "bin" / "python")
)
TABULAR = REPO_ROOT / "server" / "example_models" / "tabular_classifier"
ISVC_NAME = "tabular-classifier"
MOUNT = "/mnt/models"  # where KServe's storage initializer puts the storageUri's contents


def manifest(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((KSERVE / name).read_text())
    return loaded


@pytest.fixture(scope="module")
def runtime() -> dict[str, Any]:
    return manifest("cluster-serving-runtime.yaml")


@pytest.fixture(scope="module")
def isvc() -> dict[str, Any]:
    return manifest("inference-service.yaml")


def server_container(runtime: dict[str, Any]) -> dict[str, Any]:
    (container,) = runtime["spec"]["containers"]
    assert isinstance(container, dict)
    return container


def args_for(runtime: dict[str, Any], name: str) -> list[str]:
    """The container's arguments as KServe passes them: {{.Name}} is the InferenceService's."""
    return [arg.replace("{{.Name}}", name) for arg in server_container(runtime)["args"]]


def sdk_problems(manifests: list[dict[str, Any]]) -> list[str]:
    if not KSERVE_PYTHON.is_file():
        pytest.fail(
            f"no KServe SDK at {KSERVE_PYTHON}: run `bash benchmarks/peers/setup.sh kserve`"
        )
    done = subprocess.run(
        [str(KSERVE_PYTHON), str(Path(__file__).with_name("kserve_sdk_check.py"))],
        input=json.dumps(manifests),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    problems: list[str] = json.loads(done.stdout)
    return problems


def test_manifests_load_into_the_kserve_sdk_models(
    runtime: dict[str, Any], isvc: dict[str, Any]
) -> None:
    assert sdk_problems([runtime, isvc]) == []
    # The check is strict: a misspelt field, and a missing required one, are reported.
    broken = copy.deepcopy(runtime)
    broken["spec"]["supportedModelFormats"][0]["autoselect"] = True
    broken_isvc = copy.deepcopy(isvc)
    broken_isvc["spec"]["predictors"] = broken_isvc["spec"].pop("predictor")
    problems = sdk_problems([broken, broken_isvc])
    assert any("autoselect: not a field of V1alpha1SupportedModelFormat" in p for p in problems)
    assert any("predictors: not a field of V1beta1InferenceServiceSpec" in p for p in problems)
    assert any("`predictor`, must not be `None`" in p for p in problems), problems


@pytest.mark.parametrize("version", SCHEMA_VERSIONS)
def test_runtime_container_passes_the_pod_schema(runtime: dict[str, Any], version: str) -> None:
    """The runtime's container and volumes, as KServe puts them in the predictor's pod (plus
    the storage initializer's volume at /mnt/models), form a valid Pod."""
    container = copy.deepcopy(server_container(runtime))
    container["args"] = args_for(runtime, ISVC_NAME)
    container["volumeMounts"].append({"name": "kserve-provision-location", "mountPath": MOUNT})
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": ISVC_NAME, "annotations": runtime["spec"]["annotations"]},
        "spec": {
            "containers": [container],
            "volumes": [*runtime["spec"]["volumes"], {"name": "kserve-provision-location"}],
        },
    }
    pod["spec"]["volumes"][-1]["emptyDir"] = {}
    kubernetes_validate.validate(pod, version, strict=True)


def test_runtime_and_inference_service_agree_with_kserve_rules(
    runtime: dict[str, Any], isvc: dict[str, Any]
) -> None:
    spec = runtime["spec"]
    container = server_container(runtime)
    assert container["name"] == "kserve-container"  # the name KServe merges the predictor into
    settings = settings_from(build_parser().parse_args(args_for(runtime, ISVC_NAME)), {})
    assert str(settings.model_repository) == MOUNT
    assert settings.model_name == ISVC_NAME

    # One port (Knative exposes only one), named h2c, is the gRPC port; probes are native gRPC
    # health checks on it; KServe's metrics annotations name the metrics port.
    (port,) = container["ports"]
    assert port == {"name": "h2c", "containerPort": settings.grpc_port, "protocol": "TCP"}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"] == {"port": settings.grpc_port, "service": ""}
    assert spec["annotations"]["prometheus.kserve.io/port"] == str(settings.metrics_port)
    assert spec["annotations"]["prometheus.kserve.io/path"] == "/metrics"
    assert settings.http_port == 8080  # KServe's default HTTP port, for a REST (v2) service

    # A read-only root filesystem needs a writable /tmp, from the runtime's own volume.
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    tmp = next(m for m in container["volumeMounts"] if m["mountPath"] == "/tmp")
    assert any(v["name"] == tmp["name"] and "emptyDir" in v for v in spec["volumes"])

    formats = {f["name"]: f for f in spec["supportedModelFormats"]}
    assert formats["onnx"]["autoSelect"] is True and formats["onnx"]["priority"] >= 1
    assert set(spec["protocolVersions"]) == {"grpc-v2", "v2"}  # no v1: tensorgate speaks v2

    model = isvc["spec"]["predictor"]["model"]
    # Without protocolVersion the InferenceService asks for v1, which this runtime refuses.
    assert model["protocolVersion"] in spec["protocolVersions"]
    assert model["modelFormat"]["name"] in formats
    assert model["runtime"] == runtime["metadata"]["name"]
    assert model["storageUri"].endswith(".onnx")  # the one-file layout the server serves
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Standard"
    assert isvc["metadata"]["name"] == ISVC_NAME


def one_file(mount: Path) -> None:
    shutil.copy(TABULAR / "1" / "model.onnx", mount / "model.onnx")


def one_file_with_config(mount: Path) -> None:
    """A config logged beside the file names the model otherwise: the layout's name wins."""
    one_file(mount)
    (mount / "config.pbtxt").write_text(
        'name: "renamed_elsewhere"\nmax_batch_size: 4\ndynamic_batching { }\n'
    )


def triton_layout(mount: Path) -> None:
    shutil.copytree(TABULAR, mount / "tabular_classifier")


LAYOUTS = {
    # layout -> (how to fill /mnt/models, the model a client calls, its max_batch_size)
    "one file": (one_file, ISVC_NAME, 32),
    "one file and its config": (one_file_with_config, ISVC_NAME, 4),
    "Triton's layout": (triton_layout, "tabular_classifier", 32),
}


def served_args(runtime: dict[str, Any], mount: Path) -> list[str]:
    """The container's arguments for a test: /mnt/models is `mount`, and ports are free ones
    (ServerProcess asks for port 0 and reads the port the server reports)."""
    args = []
    for arg in args_for(runtime, ISVC_NAME)[1:]:  # [0] is "serve", which ServerProcess passes
        arg = arg.replace(MOUNT, str(mount))
        args.append(re.sub(r"^(--(grpc|http|metrics)-port)=\d+$", r"\1=0", arg))
    return args


@pytest.mark.parametrize("layout", LAYOUTS)
def test_container_args_serve_a_mnt_models_directory(
    runtime: dict[str, Any], tmp_path: Path, layout: str
) -> None:
    fill, model_name, max_batch_size = LAYOUTS[layout]
    mount = tmp_path / "mnt-models"
    mount.mkdir()
    fill(mount)
    features = infer_request(rows=3, seed=7)
    features.model_name = model_name
    inputs = np.frombuffer(features.raw_input_contents[0], np.float32).reshape(3, 16)
    (expected, _) = ort.InferenceSession(str(TABULAR / "1" / "model.onnx")).run(
        ["probabilities", "label"], {"features": inputs}
    )
    with ServerProcess(extra_args=served_args(runtime, mount)) as server:
        wait_ready(server.url)
        with grpc.insecure_channel(server.url) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            index = stub.RepositoryIndex(pb.RepositoryIndexRequest(), timeout=10)
            assert [(m.name, m.version, m.state) for m in index.models] == [
                (model_name, "1", "READY")
            ]
            config = stub.ModelConfig(pb.ModelConfigRequest(name=model_name), timeout=10).config
            assert (config.name, config.max_batch_size) == (model_name, max_batch_size)
            answer = stub.ModelInfer(features, timeout=10)
    assert answer.model_name == model_name and answer.model_version == "1"
    names = [output.name for output in answer.outputs]
    probabilities = answer.raw_output_contents[names.index("probabilities")]
    np.testing.assert_allclose(
        np.frombuffer(probabilities, np.float32).reshape(expected.shape), expected, rtol=1e-5
    )


def test_a_directory_with_two_model_files_is_refused_with_the_reason(
    runtime: dict[str, Any], tmp_path: Path
) -> None:
    mount = tmp_path / "mnt-models"
    mount.mkdir()
    one_file(mount)
    shutil.copy(mount / "model.onnx", mount / "other.onnx")
    with pytest.raises(RuntimeError, match="2 model files at its top"):
        ServerProcess(extra_args=served_args(runtime, mount))
