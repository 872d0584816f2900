"""`tensorgate profile`: build a model's drift reference profile from a sample file.

The sample goes through the model once (in batches), so the profile covers the outputs too: the
prediction distribution is the concept-drift signal that needs no labels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from runtimes.errors import InvalidInputError, ModelLoadError
from runtimes.onnx import OnnxRuntime
from server.models import config as model_config
from server.models import loader, repository
from server.observability.drift import DriftProfile, feature_columns

DEFAULT_PROFILE_NAME = "drift_profile.json"


def read_samples(path: Path, input_names: list[str]) -> dict[str, np.ndarray]:
    """Inputs from an .npz (one array per input name) or an .npy (the model's only input)."""
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as archive:
            missing = [name for name in input_names if name not in archive.files]
            if missing:
                raise InvalidInputError(f"{path.name} has no array for input(s) {missing}")
            return {name: archive[name] for name in input_names}
    if path.suffix == ".npy":
        if len(input_names) != 1:
            raise InvalidInputError(
                f"{path.name}: an .npy file holds one array but the model has inputs "
                f"{input_names}; use an .npz with one array per input"
            )
        return {input_names[0]: np.load(path, allow_pickle=False)}
    raise InvalidInputError(f"{path.name}: expected an .npy or .npz file")


def build_profile(
    model_repository: Path, model: str, version: int | None, samples_path: Path
) -> tuple[DriftProfile, int]:
    """The profile of the sample's inputs and the model's outputs on it, and the row count."""
    source = repository.read_model_dir(model_repository / model)
    if not source.version_paths:
        raise ModelLoadError(f"model '{model}' has no numbered version directory")
    chosen = version or max(source.version_paths)
    given = loader.read_given_config(source)
    filename = (given.default_model_filename if given else "") or "model.onnx"
    runtime = OnnxRuntime(source.version_paths[chosen] / filename)
    try:
        config = model_config.complete_config(
            given, model, runtime.metadata(), default_max_batch_size=32
        )
        signature = model_config.signature_of(config)
        inputs = read_samples(samples_path, [spec.name for spec in signature.inputs])
        rows = len(next(iter(inputs.values())))
        step = config.max_batch_size or rows
        outputs: dict[str, list[np.ndarray]] = {}
        names = [spec.name for spec in signature.outputs]
        for start in range(0, rows, step):
            part = {name: value[start : start + step] for name, value in inputs.items()}
            for name, value in runtime.infer(runtime.prepare(part), names).items():
                outputs.setdefault(name, []).append(value)
    finally:
        runtime.close()
    merged = {**inputs, **{name: np.concatenate(parts) for name, parts in outputs.items()}}
    return DriftProfile.build(feature_columns(merged)), rows
