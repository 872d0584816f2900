"""Triton's classification extension, as image_client and grpc_image_client use it: an output
requested with a class count comes back as its top classes, "<value>:<index>:<label>"."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from tritonclient.utils import InferenceServerException

from tests.support.server_process import REPO_ROOT, ServerProcess

MODEL = "image_classifier"
LABELS = [f"class_{i}" for i in range(10)]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    repo = tmp_path_factory.mktemp("classification")
    shutil.copytree(REPO_ROOT / "server/example_models" / MODEL, repo / MODEL)
    config = repo / MODEL / "config.pbtxt"
    text = config.read_text()
    assert 'name: "logits"' in text
    config.write_text(
        text.replace('name: "logits"', 'name: "logits"\n    label_filename: "labels.txt"')
    )
    (repo / MODEL / "labels.txt").write_text("\n".join(LABELS) + "\n")
    process = ServerProcess(repo)
    try:
        yield process
    finally:
        process.stop()


def _images(rows: int) -> np.ndarray:
    return np.random.default_rng(3).standard_normal((rows, 3, 64, 64)).astype(np.float32)


def _expected(images: np.ndarray, k: int, labels: bool = True) -> list[list[bytes]]:
    session = ort.InferenceSession(
        str(REPO_ROOT / "server/example_models" / MODEL / "1/model.onnx")
    )
    logits = session.run(None, {"image": images})[0]
    rows = []
    for row in logits:
        top = np.argsort(-row.astype(np.float64), kind="stable")[:k]
        rows.append([f"{row[i]:f}:{i}" + (f":{LABELS[i]}" if labels else "") for i in top])
    return [[entry.encode() for entry in row] for row in rows]


def test_grpc_top_classes_with_labels(server: ServerProcess) -> None:
    images = _images(2)
    with triton_grpc.InferenceServerClient(server.url) as client:
        assert "classification" in client.get_server_metadata().extensions
        image = triton_grpc.InferInput("image", list(images.shape), "FP32")
        image.set_data_from_numpy(images)
        output = triton_grpc.InferRequestedOutput("logits", class_count=3)
        result = client.infer(MODEL, [image], outputs=[output])
    classes = result.as_numpy("logits")
    assert classes.shape == (2, 3)
    assert classes.tolist() == _expected(images, 3)
    assert result.get_output("logits").datatype == "BYTES"


@pytest.mark.parametrize("binary", [True, False])
def test_http_top_classes_with_labels(server: ServerProcess, binary: bool) -> None:
    images = _images(1)
    client = triton_http.InferenceServerClient(server.http_url)
    try:
        assert "classification" in client.get_server_metadata()["extensions"]
        image = triton_http.InferInput("image", list(images.shape), "FP32")
        image.set_data_from_numpy(images)
        output = triton_http.InferRequestedOutput("logits", binary_data=binary, class_count=20)
        result = client.infer(MODEL, [image], outputs=[output])
    finally:
        client.close()
    classes = result.as_numpy("logits")
    assert classes.shape == (1, 10)  # more classes asked than there are: all of them
    # tritonclient.http gives JSON BYTES as str, binary ones as bytes.
    got = [[c.encode() if isinstance(c, str) else c for c in row] for row in classes.tolist()]
    assert got == _expected(images, 10)


def test_a_class_count_that_is_not_positive_is_refused(server: ServerProcess) -> None:
    images = _images(1)
    with triton_grpc.InferenceServerClient(server.url) as client:
        image = triton_grpc.InferInput("image", list(images.shape), "FP32")
        image.set_data_from_numpy(images)
        output = triton_grpc.InferRequestedOutput("logits", class_count=0)
        output._output.parameters["classification"].int64_param = -1
        with pytest.raises(InferenceServerException) as info:
            client.infer(MODEL, [image], outputs=[output])
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "output 'logits': classification must be a positive integer" in info.value.message()


def test_a_labels_file_outside_the_model_directory_fails_the_load(tmp_path: Path) -> None:
    shutil.copytree(REPO_ROOT / "server/example_models" / MODEL, tmp_path / MODEL)
    config = tmp_path / MODEL / "config.pbtxt"
    config.write_text(
        config.read_text().replace(
            'name: "logits"', 'name: "logits"\n    label_filename: "../../etc/passwd"'
        )
    )
    process = ServerProcess(tmp_path)
    try:
        with triton_grpc.InferenceServerClient(process.url) as client:
            assert not client.is_model_ready(MODEL)
            index = {m.name: m for m in client.get_model_repository_index().models}
            assert "outside the model directory" in index[MODEL].reason
    finally:
        process.stop()
