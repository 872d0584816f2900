"""The parameters of a repository load request (RepositoryModelLoad, POST .../load), read the
same way for both front ends: an optional model config in JSON ("config"), and optional model
files ("file:<path>", raw bytes over gRPC, base64 over HTTP, as Triton takes them)."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from google.protobuf import json_format

from runtimes.errors import InvalidInputError
from server._proto import model_config_pb2 as mc

FILE_PREFIX = "file:"


@dataclass
class LoadRequest:
    config: mc.ModelConfig | None = None
    # Model files by their path inside the model's directory ("1/model.onnx").
    files: dict[str, bytes] = field(default_factory=dict)


def parse_load_parameters(
    parameters: Mapping[str, object], *, base64_files: bool, max_file_bytes: int
) -> LoadRequest:
    """Check and decode the parameters; `max_file_bytes` bounds the files' total size."""
    request = LoadRequest(config=_config(parameters))
    total = 0
    for key, value in parameters.items():
        if not key.startswith(FILE_PREFIX):
            continue
        path = model_file_path(key[len(FILE_PREFIX) :])
        content = _file_content(key, value, base64_files)
        total += len(content)
        if total > max_file_bytes:
            raise InvalidInputError(
                f"load parameter '{key}': the model files exceed {max_file_bytes} bytes in all"
            )
        request.files[path] = content
    return request


def model_file_path(text: str) -> str:
    """A relative path inside the model's directory; anything that could leave it is refused."""
    path = PurePosixPath(text)
    if (
        not text
        or "\\" in text
        or "\x00" in text
        or path.is_absolute()
        or any(part in ("", ".", "..") for part in text.split("/"))
    ):
        raise InvalidInputError(
            f"load parameter 'file:{text}': a model file path is relative, inside the model's "
            "directory (like '1/model.onnx'), without '..'"
        )
    return str(path)


def _file_content(key: str, value: object, base64_files: bool) -> bytes:
    if base64_files:
        if not isinstance(value, str):
            raise InvalidInputError(f"load parameter '{key}' must be a base64 string")
        try:
            return base64.b64decode(value, validate=True)
        except binascii.Error:
            raise InvalidInputError(f"load parameter '{key}' is not valid base64") from None
    if not isinstance(value, bytes):
        raise InvalidInputError(f"load parameter '{key}' must hold the file's bytes (bytes_param)")
    return value


def _config(parameters: Mapping[str, object]) -> mc.ModelConfig | None:
    """The optional "config" parameter: a model config in JSON, as Triton accepts it."""
    if "config" not in parameters:
        return None
    text = parameters["config"]
    if not isinstance(text, str):
        raise InvalidInputError("load parameter 'config' must be a string of JSON")
    try:
        config: mc.ModelConfig = json_format.Parse(text, mc.ModelConfig())
    except json_format.ParseError as error:
        raise InvalidInputError(
            f"load parameter 'config' is not a valid model config: {error}"
        ) from None
    return config
