"""The parameters of a repository load request: config, and model files with safe paths."""

from __future__ import annotations

import base64

import pytest

from runtimes.errors import InvalidInputError
from server.dataplane.load_parameters import parse_load_parameters


def parse(parameters: dict[str, object], *, base64_files: bool = False, limit: int = 1 << 20):
    return parse_load_parameters(parameters, base64_files=base64_files, max_file_bytes=limit)


def test_files_and_config() -> None:
    request = parse({"config": '{"max_batch_size": 4}', "file:1/model.onnx": b"onnx"})
    assert request.config is not None and request.config.max_batch_size == 4
    assert request.files == {"1/model.onnx": b"onnx"}


def test_http_files_are_base64() -> None:
    encoded = base64.b64encode(b"\x00\x01model").decode()
    assert parse({"file:1/m.onnx": encoded}, base64_files=True).files == {
        "1/m.onnx": b"\x00\x01model"
    }
    with pytest.raises(InvalidInputError, match=r"'file:1/m\.onnx' is not valid base64"):
        parse({"file:1/m.onnx": "not base64!"}, base64_files=True)


@pytest.mark.parametrize("path", ["", "../x", "1/../../x", "/abs", "a//b", "./x", "a\\b", "1/."])
def test_paths_that_could_leave_the_model_directory_are_refused(path: str) -> None:
    with pytest.raises(InvalidInputError, match="inside the model's directory"):
        parse({f"file:{path}": b"x"})


def test_the_files_total_size_is_bounded() -> None:
    parse({"file:1/a": b"x" * 6, "file:1/b": b"x" * 4}, limit=10)
    with pytest.raises(InvalidInputError, match="exceed 10 bytes in all"):
        parse({"file:1/a": b"x" * 6, "file:1/b": b"x" * 5}, limit=10)


def test_a_grpc_file_must_be_bytes() -> None:
    with pytest.raises(InvalidInputError, match="bytes_param"):
        parse({"file:1/a": "text"})
