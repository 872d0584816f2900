"""Output labels files (config.pbtxt `label_filename`), read when a model version loads; the
classification extension (server/dataplane/classification.py) appends them to its answers."""

from __future__ import annotations

from pathlib import Path

from runtimes.errors import ModelLoadError


def read_labels(model_dir: Path, label_filename: str, output: str) -> tuple[str, ...]:
    """The labels of `output`, one a line, from a file inside the model's directory."""
    path = (model_dir / label_filename).resolve()
    if not path.is_relative_to(model_dir.resolve()):
        raise ModelLoadError(
            f"output '{output}': label_filename '{label_filename}' is outside the model directory"
        )
    try:
        return tuple(path.read_text(encoding="utf-8").splitlines())
    except (OSError, UnicodeDecodeError) as error:
        raise ModelLoadError(
            f"output '{output}': cannot read label_filename '{label_filename}': {error}"
        ) from None
