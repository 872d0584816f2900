"""Model files sent in a load request, staged as a model directory of their own.

Each upload gets a fresh private directory (`<tmp>/tensorgate-upload-XXXX/<model>/`), so an
upload never touches the repository or another upload; the paths were checked to stay inside
it (server/dataplane/load_parameters.py), and are checked again here against the resolved
directory. The manager discards an upload's directory once nothing serves from it.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

from runtimes.errors import ModelLoadError

log = logging.getLogger(__name__)


def stage(name: str, files: Mapping[str, bytes]) -> Path:
    """Write `files` (relative path -> bytes) into a new model directory named `name`."""
    model_dir = Path(tempfile.mkdtemp(prefix="tensorgate-upload-")) / name
    try:
        model_dir.mkdir(mode=0o700)
        root = model_dir.resolve()
        for relative, content in files.items():
            target = (model_dir / relative).resolve()
            if not target.is_relative_to(root) or target == root:
                raise ModelLoadError(f"model file '{relative}' is outside the model directory")
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(content)
            except OSError as error:  # a name too long for the file system, a full disk, ...
                # Triton's words for the same case, which its client examples match on.
                raise ModelLoadError(
                    f"failed to poll from model repository: cannot write model file "
                    f"'{relative[:64]}': {error.strerror}"
                ) from None
    except BaseException:
        discard(model_dir)
        raise
    log.info("model '%s': %d file(s) from a load request staged in %s", name, len(files), model_dir)
    return model_dir


def discard(model_dir: Path) -> None:
    """Remove a staged upload (the temporary directory around the model directory)."""
    shutil.rmtree(model_dir.parent, ignore_errors=True)
