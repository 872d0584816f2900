"""The python runtime: a model written in Python, for pre/post-processing or non-ONNX models.

The version directory holds `model.py` defining

    class TensorgateModel:
        def initialize(self, args: dict) -> None: ...          # optional
        def execute(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...
        def finalize(self) -> None: ...                         # optional

`execute` gets a whole batch (the leading dimension is the batch when max_batch_size > 0) and
returns every output the config declares, with as many rows. It runs under the same batcher as
any model, on a worker thread. Inputs and outputs come from the config, which must list them.
BYTES tensors are numpy object arrays of bytes.
"""

from __future__ import annotations

import importlib.util
import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from runtimes.base import RuntimeMetadata, RuntimeSpec
from runtimes.errors import ModelExecutionError, ModelLoadError

CLASS_NAME = "TensorgateModel"
DEFAULT_FILENAME = "model.py"
_module_numbers = itertools.count()


class PythonRuntime:
    def __init__(self, spec: RuntimeSpec) -> None:
        if not spec.declared_inputs or not spec.declared_outputs:
            raise ModelLoadError(
                f"python model '{spec.model_name}' must declare its inputs and outputs in "
                "config.pbtxt"
            )
        path = spec.version_dir / (spec.model_filename or DEFAULT_FILENAME)
        if not path.is_file():
            raise ModelLoadError(f"python model '{spec.model_name}' has no {path.name}")
        module_name = f"tensorgate_model_{spec.model_name}_{next(_module_numbers)}"
        try:
            loader_spec = importlib.util.spec_from_file_location(module_name, path)
            if loader_spec is None or loader_spec.loader is None:
                # No loader for this file name (it is not a .py file): reported as a missing
                # class, as the AttributeError from using the missing spec always was.
                raise AttributeError(f"no module loader for {path.name}")
            module = importlib.util.module_from_spec(loader_spec)
            loader_spec.loader.exec_module(module)
            model_class = getattr(module, CLASS_NAME)
            self._model: Any = model_class()
            if hasattr(self._model, "initialize"):
                self._model.initialize(
                    {
                        "model_name": spec.model_name,
                        "model_version": spec.version_dir.name,
                        "model_directory": str(spec.version_dir),
                        "max_batch_size": spec.max_batch_size,
                        "parameters": dict(spec.parameters),
                    }
                )
        except AttributeError as exc:
            raise ModelLoadError(
                f"python model '{spec.model_name}': {path.name} defines no class {CLASS_NAME}"
            ) from exc
        except Exception as exc:
            raise ModelLoadError(
                f"python model '{spec.model_name}' failed to load: {type(exc).__name__}: {exc}"
            ) from exc
        self._name = spec.model_name
        self._metadata = RuntimeMetadata(
            inputs=spec.declared_inputs,
            outputs=spec.declared_outputs,
            supports_batching=spec.max_batch_size > 0,
            device="python",
        )

    def metadata(self) -> RuntimeMetadata:
        return self._metadata

    def prepare(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return inputs

    def infer(
        self, inputs: Mapping[str, np.ndarray], output_names: Sequence[str]
    ) -> dict[str, np.ndarray]:
        model = self._model
        if model is None:
            raise ModelExecutionError(f"python model '{self._name}' is unloaded")
        try:
            outputs = model.execute(dict(inputs))
        except Exception as exc:
            raise ModelExecutionError(
                f"python model '{self._name}' failed: {type(exc).__name__}: {exc}"
            ) from exc
        if not isinstance(outputs, Mapping):
            raise ModelExecutionError(
                f"python model '{self._name}' returned {type(outputs).__name__}, not a dict"
            )
        missing = [name for name in output_names if name not in outputs]
        if missing:
            raise ModelExecutionError(
                f"python model '{self._name}' did not return output(s) {missing}"
            )
        return {name: np.asarray(outputs[name]) for name in output_names}

    def close(self) -> None:
        model, self._model = self._model, None
        if model is not None and hasattr(model, "finalize"):
            model.finalize()


def create(spec: RuntimeSpec) -> PythonRuntime:
    return PythonRuntime(spec)
