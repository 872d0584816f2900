"""Loads, reloads and unloads models, keeping the registry and health in step.

Every change to one model runs under that model's lock (on the calling thread: start-up, the
repository watcher, a RepositoryModelLoad call), so concurrent loads and unloads of the
same model are serialised. A swap never leaves a gap: the new version is loaded and warmed up,
published atomically, and only then is the old one retired and drained (it finishes every
request it had accepted). A load that fails leaves whatever was serving in place.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path

from runtimes.errors import ModelLoadError, TensorgateError
from server._proto import model_config_pb2 as mc
from server.dataplane.errors import ModelNotFoundError
from server.models import loader, repository, uploads
from server.models.loader import LoadOptions
from server.models.registry import UNLOADED, ModelRegistry, ModelState, unknown_model
from server.models.repository import Fingerprint

log = logging.getLogger(__name__)

ReadinessListener = Callable[[str, bool], None]


@dataclass(frozen=True)
class IndexEntry:
    name: str
    version: str
    state: str
    reason: str


class ModelManager:
    """The only writer of the registry."""

    def __init__(
        self,
        registry: ModelRegistry,
        options: LoadOptions,
        models_on_disk: repository.ModelRepository,
        on_readiness: ReadinessListener | None = None,
    ) -> None:
        """on_readiness(model, ready) is told of every model whose readiness may have changed
        (a front end's health service follows it)."""
        self._registry = registry
        self._on_readiness = on_readiness
        self._options = options
        self._repository = models_on_disk
        self._locks: defaultdict[str, threading.Lock] = defaultdict(threading.Lock)
        self._locks_lock = threading.Lock()
        # At shutdown: when draining must end, and whether some version had to be abandoned.
        self._deadline_s: float | None = None
        self._abandoned = False
        # What each serving version was loaded from: (config, version directory) fingerprints
        # and the parameters its source gave it.
        self._loaded_from: dict[str, dict[int, Origin]] = {}
        # Models loaded from files in a load request: the directory each serves from.
        self._uploaded: dict[str, Path] = {}

    def model_names_on_disk(self) -> list[str]:
        return sorted(self._repository.discover())

    def _on_disk(self, name: str) -> bool:
        return self._repository.source(name) is not None

    def load(
        self,
        name: str,
        config_override: mc.ModelConfig | None = None,
        files: Mapping[str, bytes] | None = None,
    ) -> None:
        """Bring model `name` in line with its directory: load new versions, reload changed
        ones, retire versions its policy no longer selects (only once something serves).

        With `files` (paths inside a model directory -> contents, from a load request), the
        model is loaded from those files instead of the repository, as Triton does; a serving
        model is swapped without failed requests, as for a reload from disk.

        Raises ModelLoadError when the model ends up with nothing serving.
        """
        if files is None:
            self._repository.refresh(name)
        if files is None and not self._on_disk(name) and not self._registry.entries(name):
            raise ModelNotFoundError(f"no model directory '{name}' in the model repository")
        with self._lock_of(name):
            staged = uploads.stage(name, files) if files is not None else None
            try:
                self._load_locked(name, config_override, staged)
            except BaseException:
                if staged is not None:
                    uploads.discard(staged)
                raise
            else:
                self._keep_upload(name, staged)
            finally:
                self._update_health(name)

    def _keep_upload(self, name: str, staged: Path | None) -> None:
        """The model now serves from `staged` (None: from the repository); the directory of
        its previous upload is no longer needed (its runtimes have read their files)."""
        previous = self._uploaded.pop(name, None)
        if staged is not None:
            self._uploaded[name] = staged
        if previous is not None and previous != staged:
            uploads.discard(previous)

    def unload(self, name: str) -> None:
        """Retire every version of `name`; each finishes the requests it had accepted."""
        if not self._registry.entries(name):
            raise ModelNotFoundError(unknown_model(name))
        with self._lock_of(name):
            for version in list(self._registry.serving(name)):
                self._retire(name, version)
            for version, entry in self._registry.entries(name).items():
                if entry.state is ModelState.UNAVAILABLE:  # failed loads count as unloaded too
                    self._registry.mark(name, version, ModelState.UNAVAILABLE, UNLOADED)
            self._loaded_from.pop(name, None)
            self._keep_upload(name, None)
            self._update_health(name)

    def unload_all(self, deadline_s: float | None = None) -> bool:
        """Retire every model (server shutdown); False when some version still had work
        running at the monotonic deadline (it is left to the process's exit)."""
        self._deadline_s = deadline_s
        try:
            for name in self._registry.names():
                if self._registry.serving(name):
                    self.unload(name)
        finally:
            self._deadline_s = None
        return not self._abandoned

    def index(self, ready_only: bool) -> list[IndexEntry]:
        """Every model in the repository or the registry, one entry per known version."""
        entries = []
        problems = self._repository.problems()
        for name in sorted(set(self.model_names_on_disk()) | set(self._registry.names())):
            versions = self._registry.entries(name)
            problem = problems.get(name, "")
            if not versions and not ready_only:
                reason = "; ".join(r for r in ("not loaded", problem) if r)
                entries.append(IndexEntry(name, "", ModelState.UNAVAILABLE.value, reason))
            for version, entry in versions.items():
                if ready_only and entry.state is not ModelState.READY:
                    continue
                reason = "; ".join(r for r in (entry.reason, problem) if r)
                entries.append(IndexEntry(name, str(version), entry.state.value, reason))
        return entries

    # ---------------------------------------------------------------------------------------------

    def _load_locked(
        self, name: str, config_override: mc.ModelConfig | None, staged: Path | None = None
    ) -> None:
        source = (
            repository.read_model_dir(staged)
            if staged is not None
            else self._repository.source(name)
        )
        if source is None:
            raise ModelNotFoundError(f"no model directory '{name}' in the model repository")
        serving_before = self._registry.serving(name)
        try:
            given = (
                config_override
                if config_override is not None
                else (loader.read_given_config(source))
            )
            if not source.version_paths:
                raise ModelLoadError(f"model '{name}' has no numbered version directory")
            wanted = loader.select_versions(given, list(source.version_paths))
            if not wanted:
                raise ModelLoadError(f"model '{name}': its version policy selects no version")
        except ModelLoadError as error:
            self._fail_model(name, serving_before, error)
            raise
        config_key = given.SerializeToString(deterministic=True) if given else b""
        loaded_from = self._loaded_from.setdefault(name, {})
        failures = []
        for version in wanted:
            origin = _origin(config_key, source, version)
            if version in serving_before and loaded_from.get(version) == origin:
                # Unchanged since it loaded: a note of a failed reload in between (a broken
                # config fixed back) no longer applies.
                self._registry.note(name, version, "")
                continue
            try:
                self._load_version(source, version, given, replacing=version in serving_before)
            except TensorgateError as error:
                failures.append(error)
                continue
            loaded_from[version] = origin
        if failures:
            self._fall_back(source, given, wanted, loaded_from)
        serving = self._registry.serving(name)
        if failures:
            # Whatever served before keeps serving; nothing is retired on a failed load.
            still = ", ".join(str(v) for v in sorted(serving)) or "none"
            raise ModelLoadError(
                f"model '{name}': "
                + "; ".join(str(error) for error in failures)
                + f" (versions serving: {still})"
            )
        for version in set(serving) - set(wanted):
            self._retire(name, version)
            loaded_from.pop(version, None)

    def _fall_back(
        self,
        source: repository.ModelSource,
        given: mc.ModelConfig | None,
        wanted: list[int],
        loaded_from: dict[int, Origin],
    ) -> None:
        """Under a `latest` policy, when newer versions failed and fewer versions serve than the
        policy asks for, serve the newest older versions that load instead: a broken new
        version never turns a restart into an outage."""
        if loader.policy_kind(given) != "latest":
            return
        config_key = given.SerializeToString(deterministic=True) if given else b""
        older = sorted((v for v in source.version_paths if v < min(wanted)), reverse=True)
        for version in older:
            if len(self._registry.serving(source.name)) >= len(wanted):
                return
            try:
                self._load_version(source, version, given, replacing=False)
            except TensorgateError:
                continue
            loaded_from[version] = _origin(config_key, source, version)
            log.warning(
                "model '%s': serving version %d instead of the newer version(s) that failed",
                source.name,
                version,
            )

    def _load_version(
        self,
        source: repository.ModelSource,
        version: int,
        given: mc.ModelConfig | None,
        *,
        replacing: bool,
    ) -> None:
        name = source.name
        if not replacing:
            self._registry.mark(name, version, ModelState.LOADING)
        try:
            model = loader.load_version(source, version, given, self._options)
        except Exception as error:
            reason = _load_failure(error)
            if not isinstance(error, (TensorgateError, OSError)):
                log.exception("model '%s' version %d: unexpected load failure", name, version)
            log.error("model '%s' version %d failed to load: %s", name, version, reason)
            if replacing:
                self._registry.note(
                    name, version, f"reload failed, still serving the previous load: {reason}"
                )
            else:
                self._registry.mark(name, version, ModelState.UNAVAILABLE, reason)
            raise ModelLoadError(f"version {version}: {reason}") from error
        previous = self._registry.publish(model)
        if previous is not None:
            log.info("model '%s' version %d reloaded; draining the previous load", name, version)
            previous.stop()

    def _retire(self, name: str, version: int) -> None:
        model = self._registry.retire(name, version)
        if model is not None:
            log.info("unloading model '%s' version %d (draining)", name, version)
            if not model.stop(self._time_left()):
                self._abandoned = True
                log.error("model '%s' version %d: work still running; abandoned", name, version)
        self._registry.mark(name, version, ModelState.UNAVAILABLE, UNLOADED)
        log.info("unloaded model '%s' version %d", name, version)

    def _fail_model(self, name: str, serving: Collection[int], error: ModelLoadError) -> None:
        """A model-level failure (bad config): keep what serves, say why on every version."""
        log.error("model '%s' failed to load: %s", name, error)
        if serving:
            for version in serving:
                self._registry.note(
                    name, version, f"reload failed, still serving the previous load: {error}"
                )
            return
        source = self._repository.source(name)
        source_versions = list(source.version_paths if source is not None else ()) or [1]
        for version in source_versions:
            self._registry.mark(name, version, ModelState.UNAVAILABLE, str(error))

    def _update_health(self, name: str) -> None:
        if self._on_readiness is not None:
            self._on_readiness(name, self._registry.is_ready(name))

    def _time_left(self) -> float | None:
        if self._deadline_s is None:
            return None
        return max(0.0, self._deadline_s - time.monotonic())

    def _lock_of(self, name: str) -> threading.Lock:
        with self._locks_lock:
            return self._locks[name]


def _load_failure(error: Exception) -> str:
    """What a failed load reports: our errors say why; a file the server cannot read is named
    (a permission, a disk error); anything else is a fault logged with its traceback."""
    if isinstance(error, TensorgateError):
        return str(error)
    if isinstance(error, OSError):
        where = f" {error.filename}" if error.filename else ""
        return f"cannot read{where}: {error.strerror or error}"
    return "unexpected load failure"


Origin = tuple[object, Fingerprint, tuple[tuple[str, str], ...]]


def _origin(config_key: object, source: repository.ModelSource, version: int) -> Origin:
    """What a version is loaded from: a change in any part reloads it."""
    return (
        config_key,
        repository.directory_fingerprint(source.version_paths[version]),
        tuple(sorted(source.version_parameters.get(version, {}).items())),
    )
