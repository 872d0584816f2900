"""The MLflow registry source and its artifact cache, against an in-memory registry.

The real registry is tests/integration/test_mlflow_registry.py; here are the rules that are
hard to bring about there: what is fetched when, back-off, the cache's bounds and repairs.
"""

from __future__ import annotations

import builtins
import shutil
from pathlib import Path
from typing import Any

import pytest

from server.models import mlflow_source
from server.models.artifact_cache import MANIFEST, ArtifactCache
from server.models.mlflow_client import MlflowRegistry, RegistryVersion, redacted
from server.models.mlflow_source import MlflowOptions, MlflowRepository
from tests.support.model_factory import CORRUPT_MODEL_BYTES, write_add_sub_model


class FakeRegistry:
    """Aliases and versions in memory; each version a model file the test wrote."""

    def __init__(self, files: Path) -> None:
        self.files = files
        self.aliases: dict[tuple[str, str], int] = {}
        self.versions: dict[tuple[str, int], bytes] = {}
        self.downloads: list[tuple[str, int]] = []
        self.down = False

    def add(self, model: str, version: int, *, corrupt: bool = False) -> None:
        written = write_add_sub_model(self.files, model, version=version, with_config=False)
        data = CORRUPT_MODEL_BYTES if corrupt else written.model_path.read_bytes()
        self.versions[(model, version)] = data

    def _check(self) -> None:
        if self.down:
            raise ConnectionError("registry down")

    def served_models(self) -> list[str]:
        self._check()
        return sorted({model for model, _ in self.versions})

    def version_by_alias(self, model: str, alias: str) -> RegistryVersion | None:
        self._check()
        version = self.aliases.get((model, alias))
        return None if version is None else RegistryVersion(model, version, f"run{version}", "")

    def newest_version(self, model: str) -> RegistryVersion | None:
        self._check()
        versions = [v for m, v in self.versions if m == model]
        return RegistryVersion(model, max(versions), "", "") if versions else None

    def download(self, version: RegistryVersion, directory: Path) -> None:
        self._check()
        self.downloads.append((version.model, version.version))
        (directory / "model.onnx").write_bytes(self.versions[(version.model, version.version)])


@pytest.fixture
def registry(tmp_path: Path) -> FakeRegistry:
    return FakeRegistry(tmp_path / "files")


def source(tmp_path: Path, registry: FakeRegistry, **options: Any) -> MlflowRepository:
    return MlflowRepository(
        MlflowOptions("http://registry:5000", tmp_path / "cache", retry_s=60, **options),
        registry,
    )


def served(repository: MlflowRepository, model: str) -> list[int]:
    """What `model` serves after a poll-mode scan."""
    repository.poll()
    found = repository.discover().get(model)
    return sorted(found.version_paths) if found else []


def test_aliases_choose_the_versions_and_fetch_each_once(
    tmp_path: Path, registry: FakeRegistry
) -> None:
    for version in (1, 2, 3):
        registry.add("m", version)
    repository = source(tmp_path, registry, second_alias="challenger")
    assert served(repository, "m") == [3]  # no alias: the newest
    registry.aliases[("m", "champion")] = 1
    registry.aliases[("m", "challenger")] = 2
    assert served(repository, "m") == [1, 2]
    parameters = repository.discover()["m"].version_parameters
    assert parameters[1]["mlflow.aliases"] == "champion"
    assert parameters[2]["mlflow.run_id"] == "run2"
    assert served(repository, "m") == [1, 2]
    assert registry.downloads == [("m", 3), ("m", 1), ("m", 2)]  # cached after the first


def test_an_invalid_version_is_refused_once_and_what_served_stays(
    tmp_path: Path, registry: FakeRegistry
) -> None:
    registry.add("m", 1)
    registry.add("m", 2, corrupt=True)
    registry.aliases[("m", "champion")] = 1
    repository = source(tmp_path, registry)
    assert served(repository, "m") == [1]
    registry.aliases[("m", "champion")] = 2
    assert served(repository, "m") == [1]
    assert served(repository, "m") == [1]
    assert "registry version 2 not served" in repository.problems()["m"]
    assert "not a valid ONNX model" in repository.problems()["m"]
    assert registry.downloads.count(("m", 2)) == 1
    assert not (tmp_path / "cache" / "artifacts" / "m" / "2").exists()  # never cached


def test_a_registry_that_is_down_is_retried_with_back_off_and_changes_nothing(
    tmp_path: Path, registry: FakeRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [1000.0]
    monkeypatch.setattr(mlflow_source.time, "monotonic", lambda: now[0])
    registry.add("m", 1)
    repository = source(tmp_path, registry)
    assert served(repository, "m") == [1]
    registry.down = True
    syncs = repository.syncs
    assert served(repository, "m") == [1]
    assert "registry unreachable" in repository.problems()["m"]
    assert (repository.status().reachable, repository.status().failures) == (False, 1)
    now[0] += 59  # within the first wait (60 s): no contact
    assert served(repository, "m") == [1]
    assert repository.syncs == syncs + 1
    now[0] += 1
    served(repository, "m")
    assert repository.status().failures == 2  # then 120 s, 240 s, ... up to 300 s
    now[0] += 119
    served(repository, "m")
    assert repository.syncs == syncs + 2
    registry.down = False
    now[0] += 1
    assert served(repository, "m") == [1]
    assert repository.problems() == {}
    assert (repository.status().reachable, repository.status().failures) == (True, 0)
    assert repository.status().served == [("m", "1", "", "")]


def test_a_restart_serves_the_view_from_the_cache_without_the_registry(
    tmp_path: Path, registry: FakeRegistry
) -> None:
    registry.add("m", 1)
    registry.aliases[("m", "champion")] = 1
    assert served(source(tmp_path, registry), "m") == [1]
    registry.down = True
    restarted = source(tmp_path, registry)
    assert served(restarted, "m") == [1]
    assert restarted.discover()["m"].version_parameters[1]["mlflow.run_id"] == "run1"


def test_a_model_gone_from_the_registry_leaves_the_view(
    tmp_path: Path, registry: FakeRegistry
) -> None:
    registry.add("m", 1)
    registry.add("n", 1)
    repository = source(tmp_path, registry)
    assert sorted(repository.discover()) == ["m", "n"]
    del registry.versions[("n", 1)]
    assert sorted(repository.discover()) == ["m", "n"]  # a look contacts nothing
    repository.poll()
    assert sorted(repository.discover()) == ["m"]


def test_the_cache_removes_partial_and_damaged_downloads_and_stays_bounded(
    tmp_path: Path,
) -> None:
    root = tmp_path / "artifacts"

    def fill(data: bytes) -> Any:
        return lambda directory: (directory / "model.onnx").write_bytes(data)

    cache = ArtifactCache(root, max_bytes=250)
    first = cache.put("m", 1, fill(b"a" * 100), {"run_id": "r1"})
    cache.put("m", 2, fill(b"b" * 100), {})
    (root / "m" / ".partial-3-dead").mkdir()  # a crash mid-download
    cache = ArtifactCache(root, max_bytes=250)  # a restart
    assert not (root / "m" / ".partial-3-dead").exists()
    assert cache.get("m", 1) == first

    (first.path / "model.onnx").write_bytes(b"x" * 100)  # damaged on disk
    assert ArtifactCache(root, max_bytes=250).get("m", 1) is None
    assert not first.path.exists()

    cache.put("m", 1, fill(b"a" * 100), {})
    cache.put("m", 3, fill(b"c" * 100), {})  # 300 bytes: over the bound
    cache.get("m", 2)  # used more recently than 1
    removed = cache.trim(in_use=[root / "m" / "3"])
    assert removed == [root / "m" / "1"]
    assert sorted(p.parent.name for p in root.glob(f"*/*/{MANIFEST}")) == ["2", "3"]


def test_without_mlflow_the_option_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_import = builtins.__import__

    def no_mlflow(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.startswith("mlflow"):
            raise ImportError(f"No module named '{name}'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_mlflow)
    with pytest.raises(RuntimeError, match=r"pip install 'tensorgate\[mlflow\]'"):
        MlflowRegistry("http://registry:5000", ())


def test_credentials_never_reach_messages() -> None:
    assert redacted("https://user:secret@registry:5000/x") == "https://registry:5000/x"
    assert "secret" not in redacted("failed: https://user:secret@registry:5000")


def test_copy_of_view_is_a_repository_in_tritons_layout(
    tmp_path: Path, registry: FakeRegistry
) -> None:
    registry.add("m", 1)
    repository = source(tmp_path, registry)
    repository.discover()
    copy = tmp_path / "copy"
    shutil.copytree(tmp_path / "cache" / "view", copy, symlinks=False)
    assert (copy / "m" / "1" / "model.onnx").is_file()
    assert 'default_model_filename: "model.onnx"' in (copy / "m" / "config.pbtxt").read_text()


def test_a_load_of_a_name_the_registry_does_not_have_leaves_nothing_behind(
    tmp_path: Path, registry: FakeRegistry
) -> None:
    registry.add("m", 1)
    repository = source(tmp_path, registry)
    for made_up in ("nope", "../etc", "it's"):
        repository.refresh(made_up)
        assert repository.source(made_up) is None
    assert repository.problems() == {}
    assert sorted(repository.discover()) == ["m"]
