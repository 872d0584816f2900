"""Which runtime serves a model: the built-ins, and any a package adds through an entry point.

A package adds a runtime by declaring, in its pyproject.toml,

    [project.entry-points."tensorgate.runtimes"]
    torchscript = "my_package.runtime:create"

where `create(spec: runtimes.base.RuntimeSpec) -> Runtime`; a model then names it in its
config with `backend: "torchscript"`. Built-in names cannot be replaced.
"""

from __future__ import annotations

import importlib
import logging
from importlib import metadata

from runtimes.base import RuntimeFactory
from runtimes.errors import ModelLoadError

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "tensorgate.runtimes"
BUILTIN = {"onnxruntime": "runtimes.onnx:create", "python": "runtimes.python:create"}


def available_backends() -> list[str]:
    plugins = {ep.name for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}
    return sorted(set(BUILTIN) | plugins)


def runtime_factory(backend: str) -> RuntimeFactory:
    """The factory of `backend`; ModelLoadError naming what exists when there is none."""
    if backend in BUILTIN:
        module, _, name = BUILTIN[backend].partition(":")
        builtin: RuntimeFactory = getattr(importlib.import_module(module), name)
        return builtin
    for entry_point in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if entry_point.name == backend:
            try:
                factory: RuntimeFactory = entry_point.load()
            except Exception as exc:
                raise ModelLoadError(
                    f"runtime plugin '{backend}' ({entry_point.value}) failed to import: {exc}"
                ) from exc
            log.info("runtime '%s' comes from plugin %s", backend, entry_point.value)
            return factory
    raise ModelLoadError(f"no runtime '{backend}'; available: {', '.join(available_backends())}")
