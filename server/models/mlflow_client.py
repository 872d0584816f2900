"""MLflow's client, as much of it as tensorgate asks of a model registry (mlflow_source.py).

Imported only with --mlflow-tracking-uri; MLflow's client is the optional extra
`tensorgate[mlflow]` (mlflow-skinny). Credentials come from MLflow's own environment variables
(MLFLOW_TRACKING_TOKEN, MLFLOW_TRACKING_USERNAME/PASSWORD) and never reach a message here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

SERVE_TAG = "tensorgate.serve"  # registered models tagged with it ("true") are served
# MLflow's client retries a failed call for minutes by default; a poll retries soon anyway, and
# a registry that is down must not hold up a load. A server logs no progress bars and sends no
# usage telemetry. The user's own settings win.
_CLIENT_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "15",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
}


@dataclass(frozen=True)
class RegistryVersion:
    model: str
    version: int
    run_id: str
    source: str


class Registry(Protocol):
    """What tensorgate asks of a model registry."""

    def served_models(self) -> list[str]: ...

    def version_by_alias(self, model: str, alias: str) -> RegistryVersion | None: ...

    def newest_version(self, model: str) -> RegistryVersion | None: ...

    def download(self, version: RegistryVersion, directory: Path) -> None: ...


def redacted(uri: str) -> str:
    """`uri` without credentials, for logs and messages."""
    scheme, sep, rest = uri.partition("://")
    return f"{scheme}{sep}{rest.rpartition('@')[2]}" if sep else uri


class MlflowRegistry:
    """Registry on MLflow's client (mlflow-skinny; credentials from MLflow's environment
    variables: MLFLOW_TRACKING_TOKEN, MLFLOW_TRACKING_USERNAME/PASSWORD)."""

    def __init__(self, tracking_uri: str, models: tuple[str, ...]) -> None:
        try:
            from mlflow.tracking import MlflowClient
        except ImportError as error:
            raise RuntimeError(
                "serving from an MLflow registry needs MLflow's client: "
                "pip install 'tensorgate[mlflow]'"
            ) from error
        for key, value in _CLIENT_DEFAULTS.items():
            os.environ.setdefault(key, value)
        self._uri = tracking_uri
        self._models = models
        self._client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)

    def served_models(self) -> list[str]:
        if self._models:
            return list(self._models)
        names, token = [], None
        while True:
            page = self._client.search_registered_models(
                filter_string=f"tags.`{SERVE_TAG}` = 'true'", page_token=token
            )
            names += [model.name for model in page]
            token = page.token
            if not token:
                return sorted(names)

    def version_by_alias(self, model: str, alias: str) -> RegistryVersion | None:
        from mlflow.exceptions import MlflowException

        try:
            found = self._client.get_model_version_by_alias(model, alias)
        except MlflowException as error:
            if error.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                return None  # no such alias (or model): not a failure to reach the registry
            raise
        return self._version(found)

    def newest_version(self, model: str) -> RegistryVersion | None:
        versions = self._client.search_model_versions(f"name = '{model}'")
        return self._version(max(versions, key=lambda v: int(v.version))) if versions else None

    def download(self, version: RegistryVersion, directory: Path) -> None:
        from mlflow.artifacts import download_artifacts

        download_artifacts(
            artifact_uri=f"models:/{version.model}/{version.version}",
            dst_path=str(directory),
            tracking_uri=self._uri,
            registry_uri=self._uri,
        )

    @staticmethod
    def _version(found: Any) -> RegistryVersion:
        return RegistryVersion(
            found.name, int(found.version), found.run_id or "", found.source or ""
        )
