"""The Dockerfile: hadolint finds nothing, and its steps install and start the server.

No Docker engine runs here, so tests/deploy/dockerfile.py runs the Dockerfile's own steps (its
ARG, ENV, WORKDIR, COPY through .dockerignore, RUN in its SHELL) into a fresh folder standing for
the image's root, then starts the image's ENTRYPOINT and CMD as its USER and runs its
HEALTHCHECK against it. This machine plays the default CPU base image (Debian 12, its Python
3.11); the GPU image's CUDA base cannot be run here.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import tempfile
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest

from server._proto import grpc_service_pb2_grpc as pb_grpc
from tests.deploy import dockerfile as df
from tests.deploy.client import MODEL, health_status, infer_request, wait_ready

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO_ROOT / "Dockerfile"
HADOLINT = Path(os.environ.get("HADOLINT", REPO_ROOT / ".venv" / "bin" / "hadolint"))
# What `docker build` starts from: a base image's environment, not this session's.
IMAGE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_LISTENING = re.compile(r"listening for gRPC on (\S+):(\d+)")


@pytest.fixture(scope="module")
def dockerfile() -> df.Dockerfile:
    return df.parse(DOCKERFILE.read_text())


def test_hadolint_finds_nothing() -> None:
    assert HADOLINT.exists(), f"{HADOLINT} is missing: run scripts/install_dev.sh"
    result = subprocess.run(
        [str(HADOLINT), "--failure-threshold", "style", "--format", "tty", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # The linter really ran (and would have complained): a root final user is DL3002.
    bad = subprocess.run(
        [str(HADOLINT), "-"],
        input=DOCKERFILE.read_text() + "USER root\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode != 0 and "DL3002" in bad.stdout, bad.stdout + bad.stderr


def test_image_shape(dockerfile: df.Dockerfile) -> None:
    """Multi-stage; the final stage runs as a numeric non-root user, exposes gRPC and metrics,
    takes /models as a volume, checks its health, and holds no build tools."""
    names = [stage.name for stage in dockerfile.stages]
    assert names[:2] == ["base", "builder"] and len(names) == 3
    final = dockerfile.final
    assert final.base == "base"

    user = final.last("USER")
    assert user is not None
    uid, _, gid = user.arguments.partition(":")
    assert uid.isdigit() and int(uid) != 0 and gid.isdigit() and int(gid) != 0

    exposed = {p for i in final.all("EXPOSE") for p in i.arguments.split()}
    assert exposed == {"8000", "8001", "8002"}
    assert [i.exec_form() for i in final.all("VOLUME")] == [["/models"]]
    healthcheck = final.last("HEALTHCHECK")
    assert healthcheck is not None and " CMD [" in healthcheck.arguments
    assert final.last("STOPSIGNAL").arguments == "SIGTERM"
    assert final.last("ENTRYPOINT").exec_form() == ["tensorgate"]  # exec form: PID 1 gets SIGTERM
    assert final.last("CMD").exec_form() == ["serve"]

    # The final stage copies the built environment; it installs nothing and adds a user only.
    runs = final.all("RUN")
    assert len(runs) == 1 and runs[0].arguments.startswith("groupadd ")
    for instruction in dockerfile.final.instructions:
        assert not re.search(r"\b(pip|apt-get|gcc|build-essential)\b", instruction.arguments)
    copies = [i.arguments.split() for i in final.all("COPY")]
    assert ["--from=builder", "/opt/tensorgate", "/opt/tensorgate"] in copies


def test_build_args_select_cpu_or_gpu(dockerfile: df.Dockerfile) -> None:
    """CPU by default; the GPU image documented in the header starts from a CUDA runtime base
    and installs onnxruntime-gpu."""
    assert dockerfile.global_arg_defaults() == {"BASE_IMAGE": "python:3.11-slim-bookworm"}
    assert dockerfile.stage("base").base == "${BASE_IMAGE}"
    builder_args = dict(i.arguments.split("=", 1) for i in dockerfile.stage("builder").all("ARG"))
    assert builder_args == {"ONNXRUNTIME": "onnxruntime", "EXTRAS": ""}
    header = DOCKERFILE.read_text()
    assert re.search(r"--build-arg BASE_IMAGE=nvidia/cuda:[\w.]+-cudnn-runtime-ubuntu", header)
    assert "--build-arg ONNXRUNTIME=onnxruntime-gpu" in header
    # The install script takes nothing else.
    result = subprocess.run(
        ["bash", "deploy/docker/install-server.sh"],
        cwd=REPO_ROOT,
        env={"PATH": IMAGE_PATH, "VIRTUAL_ENV": "/nonexistent", "ONNXRUNTIME": "tensorflow"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2 and "must be onnxruntime or onnxruntime-gpu" in result.stderr


def image_requirements(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["python3", "deploy/docker/requirements.py", *args],
        cwd=REPO_ROOT,
        env={"PATH": IMAGE_PATH},
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_build_arg_extras_adds_pyproject_extras_to_the_image() -> None:
    """EXTRAS=mlflow (documented in the header) puts MLflow's client in the image; the OTLP
    exporter is always there; an unknown extra stops the build, naming the known ones."""
    assert "--build-arg EXTRAS=mlflow" in DOCKERFILE.read_text()
    names = [
        re.match(r"[A-Za-z0-9._-]+", line).group(0)  # type: ignore[union-attr]
        for line in image_requirements("onnxruntime").stdout.splitlines()
    ]
    assert "opentelemetry-exporter-otlp-proto-grpc" in names and "onnxruntime" in names
    assert "mlflow-skinny" not in names
    with_mlflow = image_requirements("onnxruntime", "mlflow").stdout
    assert re.search(r"^mlflow-skinny\b", with_mlflow, re.MULTILINE)
    refused = image_requirements("onnxruntime", "mlflow,nope")
    assert refused.returncode != 0 and "no extra nope" in refused.stderr


def test_dockerignore_keeps_the_context_to_what_is_copied() -> None:
    ignore = df.DockerIgnore((REPO_ROOT / ".dockerignore").read_text())
    for kept in ("pyproject.toml", "README.md", "server/app.py", "deploy/docker/healthcheck.py"):
        assert not ignore.excluded(kept), kept
    for left_out in (
        ".venv/bin/python",
        ".git/HEAD",
        "tests/unit/test_cli.py",
        "server/__pycache__/app.cpython-311.pyc",
        "deploy/kubernetes/base/deployment.yaml",
        "benchmarks/README.md",
    ):
        assert ignore.excluded(left_out), left_out


@dataclass
class BuiltImage:
    build: df.LocalBuild
    environment: dict[str, str]
    root: Path


@pytest.fixture(scope="module")
def built_image(dockerfile: df.Dockerfile) -> Iterator[BuiltImage]:
    # The base image's Python: the builder would apt-get install one (or its venv module) when
    # missing, which must never run on this machine; so it must be there.
    probe = subprocess.run(
        ["python3", "-c", "import ensurepip, sys, venv; print(sys.version_info[:2])"],
        env={"PATH": IMAGE_PATH},
        capture_output=True,
        text=True,
    )
    assert probe.returncode == 0 and probe.stdout.strip() == "(3, 11)", (
        "tests/deploy stands this machine's /usr/bin/python3 (3.11 with venv) in for the "
        f"base image's Python: {probe.stdout}{probe.stderr}"
    )
    # Not under pytest's tmp_path (mode 0700): the image's user must reach into it.
    root = Path(tempfile.mkdtemp(prefix="tensorgate-image-"))
    root.chmod(0o755)
    environment = {"PATH": IMAGE_PATH, "HOME": "/root", "LANG": "C.UTF-8"}
    # How this machine reaches the package index (a build's network), nothing else.
    environment.update({k: v for k, v in os.environ.items() if k.startswith("PIP_")})
    build = df.LocalBuild(
        dockerfile,
        context=REPO_ROOT,
        root=root,
        base_environment=environment,
        # Adding the image's user would change this machine's /etc/passwd; the server is
        # started under that numeric uid instead.
        skip_run=lambda instruction: instruction.arguments.startswith("groupadd "),
    )
    try:
        image_environment = build.build()
        yield BuiltImage(build, image_environment, root)
    finally:
        # About 200 MB: removed in the background rather than held up for.
        subprocess.Popen(["rm", "-rf", "--", str(root)], start_new_session=True)


def test_builder_installs_a_lean_cpu_environment(built_image: BuiltImage) -> None:
    venv = built_image.build.path("/opt/tensorgate")
    site = next((venv / "lib").glob("python3.*/site-packages"))
    installed = {p.name.split("-")[0].lower() for p in site.glob("*.dist-info")}
    assert {"tensorgate", "onnxruntime", "grpcio", "numpy"} <= installed
    assert "opentelemetry_exporter_otlp_proto_grpc" in installed  # --trace-exporter otlp
    assert "onnxruntime_gpu" not in installed  # the CPU image takes the CPU build
    assert "pip" not in installed and "setuptools" not in installed  # no build tools
    assert not any(p.name.startswith("tritonclient") for p in site.iterdir())  # no test extras
    # Every pinned distribution it installed has its pinned version.
    pins = dict(
        line.split("==")
        for line in (REPO_ROOT / "deploy" / "docker" / "constraints.txt").read_text().splitlines()
        if line and not line.startswith("#")
    )
    versions = {
        re.sub(r"[-_.]+", "-", meta.name.rsplit("-", 1)[0].lower()): meta.name.rsplit("-", 1)[1]
        for meta in (p.with_suffix("") for p in site.glob("*.dist-info"))
    }
    pinned = {name: version for name, version in versions.items() if name in pins}
    assert pinned and all(pins[name] == version for name, version in pinned.items()), versions
    assert {"grpcio", "onnxruntime", "numpy", "protobuf"} <= pinned.keys()
    # Models in the image's repository: the bundled examples.
    models = built_image.build.path("/models")
    assert sorted(p.name for p in models.iterdir()) == [
        "image_classifier",
        "tabular_classifier",
        "text_encoder",
    ]


class _ImageProcess:
    """The image's ENTRYPOINT + CMD, as `docker run -e ...` would start it."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path, as_user: int | None):
        self.lines: list[str] = []
        self.port = 0
        self.listening = threading.Event()
        self.process = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            user=as_user,
            group=as_user,
            extra_groups=[] if as_user is not None else None,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)
            match = _LISTENING.search(line)
            if match and not self.listening.is_set():
                self.port = int(match.group(2))
                self.listening.set()
        self.listening.set()

    @property
    def output(self) -> str:
        return "".join(self.lines)


def test_image_starts_serves_checks_health_and_stops(
    dockerfile: df.Dockerfile, built_image: BuiltImage
) -> None:
    final = dockerfile.final
    user = int(final.last("USER").arguments.partition(":")[0])
    as_user = user if os.geteuid() == 0 else None  # not root: runs as this (non-root) user
    build = built_image.build
    env = dict(built_image.environment)
    # `docker run -e`: loopback and a free port here, instead of 0.0.0.0:8001.
    env.update(
        TENSORGATE_GRPC_HOST="127.0.0.1",
        TENSORGATE_GRPC_PORT="0",
        TENSORGATE_HTTP_PORT="0",
        TENSORGATE_METRICS_PORT="0",
        HOME="/nonexistent",
    )
    argv = build.image_command(
        final.last("ENTRYPOINT").exec_form() + final.last("CMD").exec_form(), env
    )
    assert argv[0] == str(build.path("/opt/tensorgate/bin/tensorgate"))

    server = _ImageProcess(argv, env, cwd=built_image.root, as_user=as_user)
    try:
        assert server.listening.wait(60) and server.port, server.output
        address = f"127.0.0.1:{server.port}"
        wait_ready(address)
        assert f"model repository: {build.path('/models')}" in server.output

        # The HEALTHCHECK, run as the image runs it (docker sets no extra variables).
        check = final.last("HEALTHCHECK").arguments.split(" CMD ", 1)[1]
        check_env = {**env, "TENSORGATE_GRPC_PORT": str(server.port)}
        check_argv = build.image_command(df.Instruction("CMD", check, 0).exec_form(), check_env)
        assert check_argv[0] == str(build.path("/opt/tensorgate/bin/python"))
        healthy = subprocess.run(
            check_argv, env=check_env, capture_output=True, text=True, timeout=30, user=as_user
        )
        assert healthy.returncode == 0 and healthy.stdout.strip() == "SERVING", healthy

        with grpc.insecure_channel(address) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            response = stub.ModelInfer(infer_request(rows=2), timeout=10)
        assert response.model_name == MODEL
        probabilities = np.frombuffer(response.raw_output_contents[0], dtype=np.float32)
        assert probabilities.shape == (6,)
        assert health_status(address) == "SERVING"

        # HTTP/REST (EXPOSE 8000) answers on the same data plane.
        http_port = re.search(r"listening for HTTP on \S+:(\d+)", server.output)
        assert http_port, server.output
        ready = f"http://127.0.0.1:{http_port.group(1)}/v2/models/{MODEL}/ready"
        with urllib.request.urlopen(ready, timeout=10) as page:
            assert page.status == 200

        # Metrics (EXPOSE 8002) carry the queue depth the HorizontalPodAutoscaler scales on.
        metrics = re.search(r"metrics on (http://\S+/metrics)", server.output)
        assert metrics, server.output
        with urllib.request.urlopen(metrics.group(1), timeout=10) as page:
            text = page.read().decode()
        depths = re.findall(r"^tensorgate_queue_depth\{(.*)\} (\S+)$", text, re.MULTILINE)
        labels = [dict(re.findall(r'(\w+)="([^"]*)"', found)) for found, _ in depths]
        assert {"model": "tabular_classifier", "version": "1", "priority": "1"} in labels, text

        # STOPSIGNAL: drains and exits cleanly; the health check then reports unhealthy.
        server.process.send_signal(getattr(signal, final.last("STOPSIGNAL").arguments))
        assert server.process.wait(timeout=40) == 0, server.output
        unhealthy = subprocess.run(
            check_argv, env=check_env, capture_output=True, text=True, timeout=30, user=as_user
        )
        assert unhealthy.returncode == 1, unhealthy
        assert "stopped" in server.output
        assert "Traceback" not in server.output, server.output
        assert "ERROR" not in server.output, server.output
    finally:
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait()
