"""Discovery of models on disk in Triton's layout; reads directories, loads nothing.

<repository>/<model>/[config.pbtxt]
<repository>/<model>/<version>/<model file, model.onnx by default>
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

CONFIG_FILENAME = "config.pbtxt"


@dataclass(frozen=True)
class ModelSource:
    """One model directory: its optional config file and its numbered version directories."""

    name: str
    path: Path
    config_path: Path | None
    version_paths: dict[int, Path]


def discover(repository: Path) -> dict[str, ModelSource]:
    """Every model directory under `repository`, by name. Hidden entries are ignored."""
    if not repository.is_dir():
        raise FileNotFoundError(f"model repository {repository} is not a directory")
    sources = {}
    for entry in sorted(repository.iterdir()):
        if entry.is_dir() and not entry.name.startswith("."):
            sources[entry.name] = read_model_dir(entry)
    return sources


def _is_version_name(name: str) -> bool:
    return name.isascii() and name.isdigit() and int(name) > 0


def read_model_dir(path: Path) -> ModelSource:
    config_path = path / CONFIG_FILENAME
    versions = {}
    for entry in path.iterdir():
        if entry.is_dir() and _is_version_name(entry.name):
            versions[int(entry.name)] = entry
        elif entry.is_dir() and not entry.name.startswith("."):
            log.warning(
                "model '%s': ignoring directory '%s' (not a version)", path.name, entry.name
            )
    return ModelSource(
        name=path.name,
        path=path,
        config_path=config_path if config_path.is_file() else None,
        version_paths=dict(sorted(versions.items())),
    )


Fingerprint = tuple[tuple[str, int, int], ...]


def directory_fingerprint(path: Path) -> Fingerprint:
    """(relative path, size, mtime_ns) of every file below `path`: equal fingerprints taken a
    poll apart mean nothing is being written there."""
    entries = []
    for file in sorted(path.rglob("*")):
        if file.is_file():
            stat = file.stat()
            entries.append((str(file.relative_to(path)), stat.st_size, stat.st_mtime_ns))
    return tuple(entries)


def file_fingerprint(path: Path | None) -> Fingerprint:
    if path is None or not path.is_file():
        return ()
    stat = path.stat()
    return ((path.name, stat.st_size, stat.st_mtime_ns),)


@dataclass(frozen=True)
class ModelFingerprint:
    """What a model directory looks like on disk: its config file and each version directory."""

    config: Fingerprint
    versions: tuple[tuple[int, Fingerprint], ...]

    def version(self, number: int) -> Fingerprint:
        return dict(self.versions).get(number, ())


def fingerprint(source: ModelSource) -> ModelFingerprint:
    return ModelFingerprint(
        config=file_fingerprint(source.config_path),
        versions=tuple(
            (number, directory_fingerprint(path)) for number, path in source.version_paths.items()
        ),
    )
