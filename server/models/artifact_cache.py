"""A local cache of model artifacts fetched from a registry: one directory per model version.

    <root>/<model>/<version>/...            the artifact's files
    <root>/<model>/<version>/MANIFEST       their SHA-256 sums and what the registry said
    <root>/<model>/.used-<version>          touched on each use: the least recently used go first

A download goes to a hidden partial directory and appears under its final name by one rename,
after its manifest is written, so a partial download is never served (one left by a crash is
removed). A cached version is reused across restarts once its files match the manifest. The
cache is bounded: past `max_bytes`, the least recently used versions that nothing serves go.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

MANIFEST = ".tensorgate-manifest.json"
_PARTIAL_PREFIX = ".partial-"


@dataclass(frozen=True)
class CachedVersion:
    path: Path
    metadata: dict[str, str]  # what the registry said of this version when it was fetched


class ArtifactCache:
    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self._verified: set[Path] = set()  # checked against their manifest in this process
        self._lock = threading.Lock()
        root.mkdir(parents=True, exist_ok=True)
        for partial in root.glob(f"*/{_PARTIAL_PREFIX}*"):
            log.info("removing an incomplete download: %s", partial)
            shutil.rmtree(partial, ignore_errors=True)

    def get(self, model: str, version: int) -> CachedVersion | None:
        """The cached version, if present and intact (a damaged one is removed)."""
        path = self.root / model / str(version)
        manifest_path = path / MANIFEST
        if not manifest_path.is_file():
            return None
        try:
            manifest = json.loads(manifest_path.read_text())
            with self._lock:
                verified = path in self._verified
            if not verified:
                if _sums(path) != manifest["files"]:
                    raise ValueError("its files do not match their checksums")
                with self._lock:
                    self._verified.add(path)
            self._used(model, version).touch()  # beside the version: its files stay as they are
            return CachedVersion(path, dict(manifest["metadata"]))
        except (OSError, ValueError, KeyError) as error:
            log.warning(
                "cached %s version %d is damaged (%s): fetching it again", model, version, error
            )
            shutil.rmtree(path, ignore_errors=True)
            return None

    def put(
        self, model: str, version: int, fill: Callable[[Path], None], metadata: dict[str, str]
    ) -> CachedVersion:
        """Fetch a version with `fill(directory)` and add it, complete, to the cache."""
        final = self.root / model / str(version)
        partial = self.root / model / f"{_PARTIAL_PREFIX}{version}-{uuid.uuid4().hex}"
        partial.mkdir(parents=True)
        try:
            fill(partial)
            manifest = {"files": _sums(partial), "metadata": metadata, "fetched": time.time()}
            (partial / MANIFEST).write_text(json.dumps(manifest, indent=1))
            shutil.rmtree(final, ignore_errors=True)  # a damaged copy get() did not remove
            partial.rename(final)
        finally:
            shutil.rmtree(partial, ignore_errors=True)
        with self._lock:
            self._verified.add(final)
        self._used(model, version).touch()
        return CachedVersion(final, metadata)

    def _used(self, model: str, version: int) -> Path:
        """A stamp whose time is when the version was last used (for trimming)."""
        return self.root / model / f".used-{version}"

    def trim(self, in_use: Iterable[Path]) -> list[Path]:
        """Remove least recently used versions not in `in_use` until the cache fits; returns
        what was removed."""
        keep = {path.resolve() for path in in_use}
        versions = [m.parent for m in self.root.glob(f"*/*/{MANIFEST}")]
        sizes = {path: _size(path) for path in versions}
        total = sum(sizes.values())
        removed = []

        def last_used(path: Path) -> float:
            stamp = self._used(path.parent.name, int(path.name))
            return stamp.stat().st_mtime if stamp.exists() else 0.0

        for path in sorted(versions, key=last_used):
            if total <= self.max_bytes:
                break
            if path.resolve() in keep:
                continue
            shutil.rmtree(path, ignore_errors=True)
            self._used(path.parent.name, int(path.name)).unlink(missing_ok=True)
            with self._lock:
                self._verified.discard(path)
            total -= sizes[path]
            removed.append(path)
            log.info("artifact cache over %d bytes: removed %s", self.max_bytes, path)
        return removed


def _files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file() and p.name != MANIFEST)


def _sums(directory: Path) -> dict[str, str]:
    sums = {}
    for path in _files(directory):
        digest = hashlib.sha256()
        with path.open("rb") as file:
            for chunk in iter(lambda: file.read(1 << 20), b""):
                digest.update(chunk)
        sums[str(path.relative_to(directory))] = digest.hexdigest()
    return sums


def _size(directory: Path) -> int:
    return sum(path.stat().st_size for path in _files(directory))
