"""`tensorgate profile`: build a model's drift reference profile from a sample file.

The sample goes through the model once (in batches), so the profile covers the outputs too: the
prediction distribution is the concept-drift signal that needs no labels. The model is opened,
and the file read and checked, exactly as `tensorgate batch` does (server/offline/loading.py,
server.batch_scoring), so both commands take the same files and give the same errors.
"""

from __future__ import annotations

from pathlib import Path

from server.models.config import DEFAULT_DRIFT_PROFILE
from server.observability.drift import DriftProfile, feature_columns
from server.offline import loading as offline
from server.offline.batch_scoring import (
    _chunk_rows,
    _concatenate,
    check_inputs,
    input_format_of,
    read_inputs,
    score_chunk,
)


def default_output(model_repository: Path, model: str, named: bool) -> Path:
    """Where the profile goes without --output: the model's directory, where the server reads
    it, when the user named the repository; else (the bundled example models, inside the
    installed package) the current directory."""
    if named:
        return model_repository / model / DEFAULT_DRIFT_PROFILE
    return Path(f"{model}.{DEFAULT_DRIFT_PROFILE}")


def build_profile(
    model_repository: Path, model: str, version: int | None, samples_path: Path
) -> tuple[DriftProfile, int]:
    """The profile of the sample's inputs and the model's outputs on it, and the row count."""
    file_format = input_format_of(samples_path)
    opened = offline.open_model(model_repository, model, version)
    signature = opened.signature
    try:
        inputs, row_label = read_inputs(samples_path, file_format, signature)
        rows = check_inputs(inputs, signature, samples_path, row_label)
        names = [spec.name for spec in signature.outputs]
        step = _chunk_rows(inputs)
        parts = [
            score_chunk(
                opened.runtime,
                signature,
                {name: value[start : start + step] for name, value in inputs.items()},
                names,
                start,
                row_label,
            )
            for start in range(0, rows, step)
        ]
    finally:
        opened.runtime.close()
    outputs = {name: _concatenate([part[name] for part in parts]) for name in names}
    return DriftProfile.build(feature_columns({**inputs, **outputs})), rows
