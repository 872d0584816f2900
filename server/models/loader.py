"""Turn a ModelSource on disk into running ServedModel versions.

Runs on the thread that asked for the load (start-up, the watcher, a RepositoryModelLoad call);
requests keep being served meanwhile on their own threads.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from batching.observer import BatchObserver, FanOut
from batching.scheduler import Scheduler
from runtimes.base import Runtime
from runtimes.errors import ModelLoadError
from runtimes.registry import runtime_factory
from server._proto import model_config_pb2 as mc
from server.models import config as model_config
from server.models.labels import read_labels
from server.models.repository import ModelSource
from server.models.served import ServedModel
from server.models.warmup import warm_up
from server.observability.drift import DriftMonitor, load_profile
from server.observability.metrics import NullModelMetrics, ServerMetrics
from server.observability.stats import ModelStats
from server.observability.tracing import Tracing

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadOptions:
    """Server-wide defaults that apply when a model's config leaves them out, and the
    instruments every loaded version reports to."""

    default_max_batch_size: int = 32
    metrics: ServerMetrics | None = None
    tracing: Tracing = field(default_factory=Tracing)


def read_given_config(source: ModelSource) -> mc.ModelConfig | None:
    given = model_config.read_config_file(source.config_path) if source.config_path else None
    if source.model_file:
        # One-file layout: the layout names the model (a config copied beside the file may
        # name it otherwise) and its file, unless the config names the file itself.
        given = given or mc.ModelConfig()
        given.name = source.name
        if not given.default_model_filename:
            given.default_model_filename = source.model_file
    return given


def policy_kind(given: mc.ModelConfig | None) -> str:
    """The version policy's kind: latest (the default), all or specific."""
    if given is None or not given.HasField("version_policy"):
        return "latest"
    return given.version_policy.WhichOneof("policy_choice") or "latest"


def _labels(source: ModelSource, given: mc.ModelConfig | None) -> dict[str, tuple[str, ...]]:
    """The labels files the config's outputs name (for the classification extension)."""
    outputs = given.output if given is not None else ()
    return {
        output.name: read_labels(source.path, output.label_filename, output.name)
        for output in outputs
        if output.label_filename
    }


def select_versions(given: mc.ModelConfig | None, available: list[int]) -> list[int]:
    """Versions to serve under the config's version policy (default: the latest one)."""
    available = sorted(available)
    if given is None or not given.HasField("version_policy"):
        return available[-1:]
    policy = given.version_policy
    choice = policy.WhichOneof("policy_choice")
    if choice == "all":
        return available
    if choice == "specific":
        return [v for v in available if v in set(policy.specific.versions)]
    return available[-max(1, policy.latest.num_versions) :]


def load_version(
    source: ModelSource, version: int, given: mc.ModelConfig | None, options: LoadOptions
) -> ServedModel:
    """Load one version: runtimes on a thread, then a started scheduler. Raises ModelLoadError."""
    started = time.monotonic()
    labels = _labels(source, given)  # before any runtime exists: nothing to close on failure
    config, instances = _build_instances(source, version, given, options)
    stats = ModelStats()
    metrics = (
        options.metrics.for_model(source.name, version) if options.metrics else NullModelMetrics()
    )
    observers: list[BatchObserver] = [stats, metrics]
    if options.tracing.enabled:
        observers.append(options.tracing.batch_observer(source.name, version))
    scheduler = Scheduler(
        source.name,
        instances,
        model_config.batching_config_of(config),
        observer=FanOut(*observers),
    )
    scheduler.start()
    model = ServedModel(
        name=source.name,
        version=version,
        config=config,
        signature=model_config.signature_of(config),
        instances=tuple(instances),
        scheduler=scheduler,
        stats=stats,
        metrics=metrics,
        labels=labels,
    )
    metrics.loaded(time.monotonic() - started)
    drift = model_config.drift_settings_of(config, source.path)
    if drift is not None:
        profile = load_profile(drift.profile_path) if drift.profile_path else None
        model.drift = DriftMonitor(drift, profile)
    log.info(
        "loaded model '%s' version %d on %s: %d instance(s), max_batch_size %d%s",
        source.name,
        version,
        model.device,
        len(instances),
        config.max_batch_size,
        f", dynamic batching (max delay {config.dynamic_batching.max_queue_delay_microseconds}us)"
        if config.HasField("dynamic_batching")
        else "",
    )
    return model


def open_runtime(
    source: ModelSource,
    version: int,
    given: mc.ModelConfig | None,
    *,
    default_max_batch_size: int = 32,
    placement: model_config.Placement | None = None,
) -> tuple[mc.ModelConfig, Runtime]:
    """One runtime instance of a model version and its completed config (the first instance
    of a load, and the tools that run a model without a server: profile, batch)."""
    base = given or mc.ModelConfig()
    model_config.refuse_unsupported_modes(base, source.name)
    factory = runtime_factory(model_config.backend_of(base))
    where = placement or model_config.placements_of(base)[0]
    spec = model_config.runtime_spec_of(base, source.name, source.version_paths[version], where)
    runtime = factory(spec)
    try:
        config = model_config.complete_config(
            given, source.name, runtime.metadata(), default_max_batch_size=default_max_batch_size
        )
    except ModelLoadError:
        runtime.close()
        raise
    for key, value in source.version_parameters.get(version, {}).items():
        config.parameters[key].string_value = value
    return config, runtime


def _build_instances(
    source: ModelSource, version: int, given: mc.ModelConfig | None, options: LoadOptions
) -> tuple[mc.ModelConfig, list[Runtime]]:
    placements = model_config.placements_of(given or mc.ModelConfig())
    config, first = open_runtime(
        source,
        version,
        given,
        default_max_batch_size=options.default_max_batch_size,
        placement=placements[0],
    )
    unsupported = model_config.unsupported_fields(config)
    if unsupported:
        log.warning(
            "model '%s': config settings not supported yet, ignored: %s",
            source.name,
            ", ".join(unsupported),
        )
    factory = runtime_factory(config.backend)
    version_dir = source.version_paths[version]
    instances = [first]
    try:
        for placement in placements[1:]:
            spec = model_config.runtime_spec_of(config, source.name, version_dir, placement)
            instances.append(factory(spec))
        warm_up(source.name, instances, config, model_config.signature_of(config), source.path)
    except ModelLoadError:
        for instance in instances:
            instance.close()
        raise
    return config, instances
