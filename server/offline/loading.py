"""Open one model version without a server (`tensorgate batch`, `tensorgate profile`).

The model is opened through the server's own loader (runtime chosen by the config's backend,
its placement and options, the config completed from the model), so an offline run scores
exactly what the server would serve.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from runtimes.base import Runtime
from runtimes.errors import ModelLoadError
from server._proto import model_config_pb2 as mc
from server.dataplane.errors import ModelNotFoundError
from server.models import config as model_config
from server.models import loader, repository
from server.models.config import ModelSignature
from server.settings import BUNDLED_MODELS

REPOSITORY_VARIABLE = "TENSORGATE_MODEL_REPOSITORY"


@dataclass(frozen=True)
class OfflineModel:
    runtime: Runtime
    config: mc.ModelConfig  # completed, as the server would serve it
    signature: ModelSignature
    version: int


def repository_of(given: Path | None, environ: Mapping[str, str]) -> tuple[Path, bool]:
    """The repository to read (the flag, then the variable, then the bundled example models),
    and whether the user named it: the bundled models live in the installed package, which
    the tools must not write to."""
    if given is not None:
        return given, True
    if environ.get(REPOSITORY_VARIABLE):
        return Path(environ[REPOSITORY_VARIABLE]), True
    return BUNDLED_MODELS, False


def open_model(
    model_repository: Path, name: str, version: int | None, *, default_max_batch_size: int = 32
) -> OfflineModel:
    """One runtime of the model version (default: the highest its version policy selects);
    ModelNotFoundError lists what the repository or the model has."""
    if not model_repository.is_dir():
        raise ModelNotFoundError(f"model repository {model_repository} is not a directory")
    models_on_disk = repository.ModelRepository(model_repository)
    source = models_on_disk.source(name)
    if source is None:
        models = sorted(models_on_disk.discover())
        raise ModelNotFoundError(
            f"no model '{name}' in {model_repository}; "
            + (f"its models are {', '.join(models)}" if models else "it holds no models")
        )
    available = list(source.version_paths)
    if not available:
        raise ModelLoadError(f"model '{name}' has no numbered version directory")
    given = loader.read_given_config(source)
    if version is None:
        selected = loader.select_versions(given, available)
        if not selected:
            raise ModelLoadError(
                f"model '{name}': its version policy selects none of its versions {available}"
            )
        version = selected[-1]
    elif version not in source.version_paths:
        raise ModelNotFoundError(
            f"model '{name}' has no version {version}; its versions are {available}"
        )
    config, runtime = loader.open_runtime(
        source, version, given, default_max_batch_size=default_max_batch_size
    )
    return OfflineModel(runtime, config, model_config.signature_of(config), version)
