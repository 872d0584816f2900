"""TLS, mutual TLS, certificate rotation, bearer tokens with scopes, and the audit log."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tritonclient.utils import InferenceServerException

from tests.support.certificates import CertificateAuthority
from tests.support.model_factory import write_add_sub_model
from tests.support.server_process import ServerProcess

TOKENS = "# name scopes token\nreader infer tok-reader-123\nops admin tok-ops-456\n"


def inputs() -> list[triton.InferInput]:
    tensors = []
    for name in ("INPUT0", "INPUT1"):
        tensor = triton.InferInput(name, [1, 16], "FP32")
        tensor.set_data_from_numpy(np.ones((1, 16), np.float32))
        tensors.append(tensor)
    return tensors


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("security_repo")
    write_add_sub_model(repo, "m", max_batch_size=8)
    return repo


def test_tls_serves_trusting_clients_and_refuses_plaintext(tmp_path: Path, repo: Path) -> None:
    ca = CertificateAuthority(tmp_path, "ca")
    server_cert = ca.issue("server", server=True)
    with ServerProcess(
        repo, ["--tls-cert-file", str(server_cert.cert), "--tls-key-file", str(server_cert.key)]
    ) as server:
        trusted = triton.InferenceServerClient(server.url, ssl=True, root_certificates=str(ca.cert))
        assert trusted.is_server_live()
        assert trusted.infer("m", inputs()).as_numpy("OUTPUT0")[0, 0] == 2
        plaintext = triton.InferenceServerClient(server.url)
        with pytest.raises(InferenceServerException, match="UNAVAILABLE"):
            plaintext.is_server_live(client_timeout=5)


def test_mutual_tls_requires_a_client_certificate(tmp_path: Path, repo: Path) -> None:
    ca = CertificateAuthority(tmp_path, "ca")
    server_cert = ca.issue("server", server=True)
    client_cert = ca.issue("client", server=False)
    args = ["--tls-cert-file", str(server_cert.cert), "--tls-key-file", str(server_cert.key)]
    with ServerProcess(repo, [*args, "--tls-client-ca-file", str(ca.cert)]) as server:
        with_cert = triton.InferenceServerClient(
            server.url,
            ssl=True,
            root_certificates=str(ca.cert),
            private_key=str(client_cert.key),
            certificate_chain=str(client_cert.cert),
        )
        assert with_cert.is_server_live()
        without_cert = triton.InferenceServerClient(
            server.url, ssl=True, root_certificates=str(ca.cert)
        )
        with pytest.raises(InferenceServerException, match="UNAVAILABLE"):
            without_cert.is_server_live(client_timeout=5)


def test_rotated_certificate_files_serve_new_connections_without_a_restart(
    tmp_path: Path, repo: Path
) -> None:
    old_ca = CertificateAuthority(tmp_path, "old")
    new_ca = CertificateAuthority(tmp_path, "new")
    mounted_cert, mounted_key = tmp_path / "tls.crt", tmp_path / "tls.key"
    first = old_ca.issue("server", server=True)
    shutil.copy(first.cert, mounted_cert)
    shutil.copy(first.key, mounted_key)
    args = ["--tls-cert-file", str(mounted_cert), "--tls-key-file", str(mounted_key)]
    with ServerProcess(repo, args) as server:
        before = triton.InferenceServerClient(
            server.url, ssl=True, root_certificates=str(old_ca.cert)
        )
        assert before.is_server_live()
        rotated = new_ca.issue("server", server=True)
        shutil.copy(rotated.key, mounted_key)
        shutil.copy(rotated.cert, mounted_cert)
        after = triton.InferenceServerClient(
            server.url, ssl=True, root_certificates=str(new_ca.cert)
        )
        assert after.is_server_live()
        stale = triton.InferenceServerClient(
            server.url, ssl=True, root_certificates=str(old_ca.cert)
        )
        with pytest.raises(InferenceServerException, match="UNAVAILABLE"):
            stale.is_server_live(client_timeout=5)
        server.wait_for_log("TLS certificate files changed", timeout_s=10)


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory, repo: Path):
    directory = tmp_path_factory.mktemp("secured")
    tokens = directory / "tokens"
    tokens.write_text(TOKENS)
    audit = directory / "audit.jsonl"
    args = [
        "--auth-tokens-file",
        str(tokens),
        "--audit-log",
        str(audit),
        "--model-control-mode",
        "explicit",
        "--load-model",
        "m",
    ]
    with ServerProcess(repo, args) as server:
        yield server, audit


def test_inference_needs_a_valid_token_with_the_infer_scope(secured) -> None:
    server, _ = secured
    client = triton.InferenceServerClient(server.url)
    with pytest.raises(InferenceServerException) as missing:
        client.infer("m", inputs())
    assert "UNAUTHENTICATED" in missing.value.status()
    assert "ModelInfer needs a valid bearer token" in missing.value.message()
    with pytest.raises(InferenceServerException, match="UNAUTHENTICATED"):
        client.infer("m", inputs(), headers=bearer("tok-wrong"))
    result = client.infer("m", inputs(), headers=bearer("tok-reader-123"))
    assert result.as_numpy("OUTPUT0")[0, 0] == 2
    assert client.get_model_metadata("m", headers=bearer("tok-ops-456")).name == "m"


def test_control_needs_the_admin_scope(secured) -> None:
    server, _ = secured
    client = triton.InferenceServerClient(server.url)
    with pytest.raises(InferenceServerException) as denied:
        client.load_model("m", headers=bearer("tok-reader-123"))
    assert "PERMISSION_DENIED" in denied.value.status()
    assert "token 'reader' lacks the 'admin' scope that RepositoryModelLoad needs" in (
        denied.value.message()
    )
    client.load_model("m", headers=bearer("tok-ops-456"))
    client.load_model("m", headers=bearer("tok-ops-456"), config='{"max_batch_size": 8}')


def test_probes_stay_open(secured) -> None:
    server, _ = secured
    client = triton.InferenceServerClient(server.url)
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("m")
    with grpc.insecure_channel(server.url) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        response = health.Check(health_pb2.HealthCheckRequest(service="m"), timeout=5)
        assert response.status == health_pb2.HealthCheckResponse.SERVING


def test_the_audit_log_records_actions_and_refusals_but_never_tokens(secured) -> None:
    server, audit = secured
    client = triton.InferenceServerClient(server.url)
    with pytest.raises(InferenceServerException):
        client.unload_model("m", headers=bearer("tok-reader-123"))
    client.load_model("m", headers=bearer("tok-ops-456"), config='{"max_batch_size": 8}')

    entries = [json.loads(line) for line in audit.read_text().splitlines()]
    assert {"peer", "identity", "action", "model", "outcome", "time"} <= set(entries[-1])
    refused = [e for e in entries if e["outcome"] == "PERMISSION_DENIED"]
    assert any(
        e["action"] == "RepositoryModelUnload" and e["identity"] == "reader" for e in refused
    )
    loads = [e for e in entries if e["action"] == "RepositoryModelLoad" and e["outcome"] == "OK"]
    assert loads[-1]["identity"] == "ops"
    assert loads[-1]["model"] == "m"
    assert loads[-1]["config_override"] is True
    assert any(e["outcome"] == "UNAUTHENTICATED" for e in entries)
    text = audit.read_text() + server.log_text
    assert "tok-reader-123" not in text and "tok-ops-456" not in text


def test_a_server_without_tokens_says_loudly_that_auth_is_off(bundled_server) -> None:
    assert bundled_server.log_matches("AUTHENTICATION IS OFF")
