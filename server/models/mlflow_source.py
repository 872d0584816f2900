"""Serve from an MLflow Model Registry: registry versions are served versions.

The registry is mirrored into a local repository in Triton's layout, which the rest of the
server reads like any other (the model manager, the poll watcher):

    <cache>/artifacts/<model>/<version>/    each registry version, fetched once (artifact_cache.py)
    <cache>/view/<model>/config.pbtxt        the served version's logged config, or a minimal one
    <cache>/view/<model>/<version>           a link to the artifact, one per served version

Which versions a model serves is what its aliases point at (`champion`, and optionally a second
alias such as `challenger`, which requests can name by version number); a model without the
alias serves its newest version. Moving an alias changes the links, and the manager then loads,
warms and swaps in the new version and drains the old one, as for a local version change.

A version is fetched and checked (onnxruntime opens it) before it is linked: an artifact that
is not a valid ONNX model never replaces what serves. A registry that cannot be reached changes
nothing: the view stays (across restarts too), the error shows in RepositoryIndex and in
`tensorgate_model_source_up`, and the next attempts back off.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import text_format

from server._proto import model_config_pb2 as mc
from server.models import config as model_config
from server.models.artifact_cache import ArtifactCache, CachedVersion
from server.models.mlflow_client import MlflowRegistry, Registry, RegistryVersion, redacted
from server.models.repository import (
    CONFIG_FILENAME,
    ModelRepository,
    ModelSource,
    read_model_dir,
)
from server.observability.metrics import SourceStatus

log = logging.getLogger(__name__)

_BACKOFF_MAX_S = 300.0  # the longest wait between contacts with a registry that is down


@dataclass(frozen=True)
class MlflowOptions:
    tracking_uri: str  # http(s)://host:port, the registry's tracking server
    cache_dir: Path
    models: tuple[str, ...] = ()  # none: the registered models tagged tensorgate.serve=true
    alias: str = "champion"
    second_alias: str = ""  # e.g. challenger: served beside the first, by its version number
    cache_max_bytes: int = 10 << 30
    retry_s: float = 5.0  # first wait after a failed contact; doubles up to 5 minutes


class InvalidArtifact(Exception):
    """A registry version tensorgate cannot serve (no ONNX model, or not a valid one)."""


@dataclass(frozen=True)
class ServedVersion:
    cached: CachedVersion
    aliases: tuple[str, ...]
    registry: RegistryVersion


class MlflowRepository(ModelRepository):
    """The registry as a model repository (see the module docstring)."""

    def __init__(self, options: MlflowOptions, registry: Registry | None = None) -> None:
        super().__init__(options.cache_dir / "view")
        self.root.mkdir(parents=True, exist_ok=True)
        self.options = options
        self._registry = registry or MlflowRegistry(options.tracking_uri, options.models)
        self._cache = ArtifactCache(options.cache_dir / "artifacts", options.cache_max_bytes)
        # Held while the registry is contacted and the view changed (downloads included);
        # what metrics and RepositoryIndex read is under the short _state_lock instead.
        self._sync_lock = threading.RLock()
        self._state_lock = threading.Lock()
        self._served: dict[str, dict[int, ServedVersion]] = {}
        self._problems: dict[str, str] = {}
        self._registry_error = ""
        self._failures = 0
        self._invalid: dict[tuple[str, int], str] = {}  # fetched and refused, with the reason
        self._next_attempt_s = 0.0
        self.syncs = 0
        self._looked = False
        log.info("models from the MLflow registry at %s", redacted(options.tracking_uri))

    # ModelRepository ----------------------------------------------------------------------------

    def discover(self) -> dict[str, ModelSource]:
        if not self._looked:
            self.poll()  # the first look (at start) reads the registry
            self._looked = True
        return {name: self._view_source(name) for name in self._view_names()}

    def source(self, name: str) -> ModelSource | None:
        with self._sync_lock:  # a consistent view: no sync half done
            return self._view_source(name) if name in self._view_names() else None

    def poll(self) -> None:
        """Poll mode, each scan: bring the view in line with the registry (unless backing off
        after a failure)."""
        with self._sync_lock:
            if time.monotonic() >= self._next_attempt_s:
                self._sync(None)

    def refresh(self, name: str) -> None:
        """A load asked for `name`: fetch what its aliases point at now."""
        with self._sync_lock:
            self._sync([name])
            if name not in self._view_names():
                # The load fails, saying so; a name a client made up is not kept.
                with self._state_lock:
                    self._problems.pop(name, None)

    def problems(self) -> dict[str, str]:
        with self._state_lock:
            problems = {name: problem for name, problem in self._problems.items() if problem}
            if self._registry_error:
                down = (
                    f"registry unreachable, serving what was fetched before: {self._registry_error}"
                )
                for name in set(self._view_names()) | set(problems):
                    problems[name] = "; ".join(p for p in (problems.get(name), down) if p)
            return problems

    # status, for metrics ----------------------------------------------------------------------

    def status(self) -> SourceStatus:
        """For metrics: is the registry reachable, and what each served version is."""
        with self._state_lock:
            served = [
                (name, str(version), ",".join(entry.aliases), entry.registry.run_id)
                for name, versions in self._served.items()
                for version, entry in versions.items()
            ]
            return SourceStatus("mlflow", not self._registry_error, self._failures, served)

    # ------------------------------------------------------------------------------------------

    def _view_names(self) -> list[str]:
        return sorted(
            entry.name
            for entry in self.root.iterdir()
            if entry.is_dir() and not entry.name.startswith(".")
        )

    def _view_source(self, name: str) -> ModelSource:
        with self._state_lock:
            served = self._served.get(name)
        if served is None:
            served = self._served_from_view(name)
        parameters = {version: _parameters(entry) for version, entry in served.items()}
        return dataclasses.replace(read_model_dir(self.root / name), version_parameters=parameters)

    def _served_from_view(self, name: str) -> dict[int, ServedVersion]:
        """After a restart with the registry down: what the view links to, from the cache."""
        served = {}
        for link in (self.root / name).iterdir():
            if link.is_symlink() and link.name.isdigit():
                cached = self._cache.get(name, int(link.name))
                if cached is not None:
                    served[int(link.name)] = _served(name, int(link.name), cached)
        with self._state_lock:
            return self._served.setdefault(name, served)

    def _sync(self, names: list[str] | None) -> None:
        """Contact the registry: bring the view of `names` (None: every served model) in line
        with their aliases. Never raises for the registry's sake."""
        self.syncs += 1
        try:
            wanted = names if names is not None else self._registry.served_models()
            for name in wanted:
                if not name or "/" in name or "'" in name or name.startswith("."):
                    self._note(name, "not served: the name cannot be a model directory")
                    continue
                self._sync_model(name)
            if names is None:
                for gone in set(self._view_names()) - set(wanted):
                    self._unpublish(gone)
        except Exception as error:  # the registry's client raises many kinds
            self._failed(error)
            return
        with self._state_lock:
            if self._registry_error:
                log.info("MLflow registry reachable again")
            self._registry_error, self._failures, self._next_attempt_s = "", 0, 0.0
            in_use = [e.cached.path for served in self._served.values() for e in served.values()]
        self._cache.trim(in_use)

    def _note(self, name: str, problem: str) -> None:
        with self._state_lock:
            self._problems[name] = problem

    def _failed(self, error: Exception) -> None:
        with self._state_lock:
            self._failures += 1
            delay = min(self.options.retry_s * 2 ** (self._failures - 1), _BACKOFF_MAX_S)
            self._next_attempt_s = time.monotonic() + delay
            self._registry_error = redacted(f"{type(error).__name__}: {error}")[:500]
        log.error(
            "MLflow registry at %s: %s (attempt %d; next in %.0f s; serving what was fetched)",
            redacted(self.options.tracking_uri),
            self._registry_error,
            self._failures,
            delay,
        )

    def _sync_model(self, name: str) -> None:
        targets: dict[int, tuple[RegistryVersion, list[str]]] = {}
        for alias in filter(None, (self.options.alias, self.options.second_alias)):
            found = self._registry.version_by_alias(name, alias)
            if found is not None:
                targets.setdefault(found.version, (found, []))[1].append(alias)
        if not targets:
            newest = self._registry.newest_version(name)
            if newest is None:
                self._note(name, "not served: no such registered model, or it has no version")
                return
            targets[newest.version] = (newest, [])
        served, refused = {}, []
        for version, (found, aliases) in sorted(targets.items()):
            try:
                cached = self._fetch(found)
            except InvalidArtifact as error:
                refused.append(f"registry version {version} not served: {error}")
                continue
            served[version] = ServedVersion(cached, tuple(aliases), found)
        if refused:
            # What served before keeps serving beside what could be served of the new.
            with self._state_lock:
                before = dict(self._served.get(name, {}))
            for version, entry in before.items():
                served.setdefault(version, entry)
        self._note(name, "; ".join(refused))
        if served:
            self._publish(name, served)

    def _fetch(self, found: RegistryVersion) -> CachedVersion:
        key = (found.model, found.version)
        if key in self._invalid:
            raise InvalidArtifact(self._invalid[key])
        cached = self._cache.get(found.model, found.version)
        if cached is None:
            log.info("fetching %s registry version %d", found.model, found.version)
            metadata = {"run_id": found.run_id, "source": found.source}
            try:
                cached = self._cache.put(
                    found.model, found.version, lambda d: self._fill(found, d), metadata
                )
            except InvalidArtifact as error:
                self._invalid[key] = str(error)
                raise
        return cached

    def _fill(self, found: RegistryVersion, directory: Path) -> None:
        self._registry.download(found, directory)
        _check_onnx(directory)

    def _publish(self, name: str, served: dict[int, ServedVersion]) -> None:
        """Point the view of `name` at `served`: new links first, the config, then old links
        go (a load always finds a consistent model)."""
        model_dir = self.root / name
        model_dir.mkdir(exist_ok=True)
        for version, entry in served.items():
            link = model_dir / str(version)
            if not (link.is_symlink() and link.resolve() == entry.cached.path.resolve()):
                temporary = model_dir / f".{version}.link"
                temporary.unlink(missing_ok=True)
                temporary.symlink_to(entry.cached.path.resolve(), target_is_directory=True)
                temporary.replace(link)
        newest = served[max(served)]
        text = text_format.MessageToString(_view_config(name, newest.cached.path))
        config_path = model_dir / CONFIG_FILENAME
        if not config_path.is_file() or config_path.read_text() != text:
            temporary_config = model_dir / f".{CONFIG_FILENAME}.new"
            temporary_config.write_text(text)
            temporary_config.replace(config_path)
        for link in model_dir.iterdir():
            if link.is_symlink() and link.name.isdigit() and int(link.name) not in served:
                link.unlink()
        with self._state_lock:
            self._served[name] = served

    def _unpublish(self, name: str) -> None:
        log.info("model '%s' is no longer in the registry's served models", name)
        model_dir = self.root / name
        for entry in model_dir.iterdir():
            entry.unlink()
        model_dir.rmdir()
        with self._state_lock:
            self._served.pop(name, None)
            self._problems.pop(name, None)


def _served(name: str, version: int, cached: CachedVersion) -> ServedVersion:
    meta = cached.metadata
    return ServedVersion(
        cached, (), RegistryVersion(name, version, meta.get("run_id", ""), meta.get("source", ""))
    )


def _parameters(entry: ServedVersion) -> dict[str, str]:
    prefix = model_config.SOURCE_PARAMETER_PREFIX
    return {
        f"{prefix}registered_model": entry.registry.model,
        f"{prefix}registry_version": str(entry.registry.version),
        f"{prefix}aliases": ",".join(entry.aliases),
        f"{prefix}run_id": entry.registry.run_id,
    }


def _model_file(directory: Path) -> Path:
    """The artifact's ONNX model: model.onnx, or its only .onnx file."""
    if (directory / model_config.DEFAULT_MODEL_FILENAME).is_file():
        return directory / model_config.DEFAULT_MODEL_FILENAME
    found = sorted(directory.glob("*.onnx"))
    if len(found) != 1:
        raise InvalidArtifact(
            f"the artifact holds {len(found)} .onnx files at its top, not one model.onnx"
        )
    return found[0]


def _check_onnx(directory: Path) -> None:
    """onnxruntime must open the model (a registry can hold anything under that name)."""
    import onnxruntime as ort

    path = _model_file(directory)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own kinds for a bad graph
        raise InvalidArtifact(f"{path.name} is not a valid ONNX model: {error}") from error
    if (directory / CONFIG_FILENAME).is_file():
        try:
            model_config.read_config_file(directory / CONFIG_FILENAME)
        except Exception as error:
            raise InvalidArtifact(f"its {CONFIG_FILENAME} cannot be read: {error}") from error


def _view_config(name: str, artifact: Path) -> mc.ModelConfig:
    """The logged config (if any), naming the model, its file, and every linked version as
    served (the aliases choose the versions, not a version policy)."""
    logged = artifact / CONFIG_FILENAME
    config = model_config.read_config_file(logged) if logged.is_file() else mc.ModelConfig()
    config.name = name
    config.default_model_filename = _model_file(artifact).name
    config.version_policy.all.SetInParent()
    return config
