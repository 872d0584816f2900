"""Discovery of models on disk; reads directories, loads nothing. Two layouts:

Triton's, any number of models:
    <repository>/<model>/[config.pbtxt]
    <repository>/<model>/<version>/<model file, model.onnx by default>

One model file at the top, as KServe's storage initializer leaves a `storageUri` that names a
single file (`/mnt/models/model.onnx`): one model, version 1, named by --model-name (KServe fills
it from the InferenceService) or after the file; a `config.pbtxt` beside the file is its config.
    <repository>/<file>.onnx
    <repository>/[config.pbtxt]
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
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
    # The one-file layout names the model's file (the config may still name another); "" in
    # Triton's layout, where the config or the backend's default names it.
    model_file: str = ""
    # Config parameters a source adds to each version's config, for operators to read (the
    # MLflow registry's version, aliases and run id).
    version_parameters: dict[int, dict[str, str]] = field(default_factory=dict)


# Files that make a repository directory the one-file layout when they lie at its top.
MODEL_FILE_SUFFIXES = (".onnx",)


class ModelRepository:
    """A repository directory in either layout (see the module docstring)."""

    def __init__(self, root: Path, model_name: str = "") -> None:
        """model_name: the served name in the one-file layout (default: the file's stem)."""
        self.root = root
        self.model_name = model_name
        self._warned = False

    def discover(self) -> dict[str, ModelSource]:
        """Every model in the repository, by name."""
        single = self._single_model()
        if single is not None:
            return {single.name: single}
        if self.model_name and not self._warned:
            self._warned = True  # once, not on every poll
            log.warning(
                "--model-name '%s' is ignored: %s is in Triton's layout (no model file at its "
                "top), where each model is named by its directory",
                self.model_name,
                self.root,
            )
        return discover(self.root)

    def source(self, name: str) -> ModelSource | None:
        """Model `name`, or None when the repository has no such model."""
        if not self.root.is_dir():
            return None
        single = self._single_model()
        if single is not None:
            return single if name == single.name else None
        path = self.root / name
        if name.startswith(".") or path.parent != self.root or not path.is_dir():
            return None
        return read_model_dir(path)

    def poll(self) -> None:
        """Poll mode, before each scan: contact where models come from (a registry); the
        repository on disk needs nothing."""

    def refresh(self, name: str) -> None:
        """Bring model `name` up to date from where it comes from before a load; the
        repository on disk is always up to date (a registry source fetches here)."""

    def problems(self) -> dict[str, str]:
        """What keeps a model's source from being current (model -> reason), for
        RepositoryIndex; a directory on disk has none."""
        return {}

    def _single_model(self) -> ModelSource | None:
        if not self.root.is_dir():
            raise FileNotFoundError(f"model repository {self.root} is not a directory")
        files = sorted(
            entry
            for entry in self.root.iterdir()
            if entry.suffix in MODEL_FILE_SUFFIXES and entry.is_file()
        )
        if not files:
            return None
        if len(files) > 1:
            raise FileNotFoundError(
                f"model repository {self.root} holds {len(files)} model files at its top "
                f"({', '.join(f.name for f in files)}); one file is served as one model, more "
                "need Triton's layout: <repository>/<model>/<version>/model.onnx"
            )
        config_path = self.root / CONFIG_FILENAME
        return ModelSource(
            name=self.model_name or files[0].stem,
            path=self.root,
            config_path=config_path if config_path.is_file() else None,
            version_paths={1: self.root},
            model_file=files[0].name,
        )


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
    parameters: tuple[tuple[int, tuple[tuple[str, str], ...]], ...] = ()

    def version(self, number: int) -> Fingerprint:
        return dict(self.versions).get(number, ())


def fingerprint(source: ModelSource) -> ModelFingerprint:
    return ModelFingerprint(
        config=file_fingerprint(source.config_path),
        versions=tuple(
            (number, directory_fingerprint(path)) for number, path in source.version_paths.items()
        ),
        parameters=tuple(
            (number, tuple(sorted(given.items())))
            for number, given in sorted(source.version_parameters.items())
        ),
    )
