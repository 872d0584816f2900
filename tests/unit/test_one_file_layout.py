"""The one-file repository layout (KServe's /mnt/models for a storageUri naming one file)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from server.models.loader import read_given_config
from server.models.repository import ModelRepository
from server.models.watcher import RepositoryWatcher
from tests.unit.test_watcher import RecordingControl, scans, write


def test_one_model_file_at_the_top_is_one_model_version_1(tmp_path: Path) -> None:
    (tmp_path / "model.onnx").write_bytes(b"graph")
    (tmp_path / "model.onnx.data").write_bytes(b"external weights")  # not a second model
    repository = ModelRepository(tmp_path, "iris")
    (source,) = repository.discover().values()
    assert (source.name, source.path, source.version_paths) == ("iris", tmp_path, {1: tmp_path})
    assert source.model_file == "model.onnx" and source.config_path is None
    assert repository.source("iris") == source
    assert repository.source("model") is None
    # Without a name the file names the model.
    assert list(ModelRepository(tmp_path).discover()) == ["model"]


def test_the_layout_names_the_model_and_its_file_over_a_copied_config(tmp_path: Path) -> None:
    (tmp_path / "churn.onnx").write_bytes(b"graph")
    (tmp_path / "config.pbtxt").write_text('name: "elsewhere"\nmax_batch_size: 4\n')
    source = ModelRepository(tmp_path, "churn-v2").source("churn-v2")
    assert source is not None and source.config_path == tmp_path / "config.pbtxt"
    given = read_given_config(source)
    assert given is not None
    assert (given.name, given.default_model_filename, given.max_batch_size) == (
        "churn-v2",
        "churn.onnx",
        4,
    )
    # A config that names the file keeps it.
    (tmp_path / "config.pbtxt").write_text('default_model_filename: "other.onnx"\n')
    given = read_given_config(source)
    assert given is not None and given.default_model_filename == "other.onnx"


def test_two_model_files_at_the_top_are_refused_with_the_layouts(tmp_path: Path) -> None:
    (tmp_path / "a.onnx").write_bytes(b"a")
    (tmp_path / "b.onnx").write_bytes(b"b")
    with pytest.raises(FileNotFoundError, match=r"2 model files at its top \(a.onnx, b.onnx\)"):
        ModelRepository(tmp_path).discover()


def test_a_model_name_in_tritons_layout_is_ignored_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "m" / "1").mkdir(parents=True)
    repository = ModelRepository(tmp_path, "iris")
    with caplog.at_level(logging.WARNING):
        assert list(repository.discover()) == ["m"]
        assert list(repository.discover()) == ["m"]  # a poll: said once is enough
    assert caplog.text.count("--model-name 'iris' is ignored") == 1
    assert ModelRepository(tmp_path, "iris").source("m") is not None
    assert ModelRepository(tmp_path).source("../m") is None
    assert ModelRepository(tmp_path / "missing").source("m") is None


def test_poll_mode_reloads_a_replaced_file_once_it_is_stable(tmp_path: Path) -> None:
    (tmp_path / "model.onnx").write_bytes(b"v1")
    control = RecordingControl()
    watcher = RepositoryWatcher(ModelRepository(tmp_path, "iris"), control, interval_s=1)
    watcher.mark_applied()
    scans(watcher, 2)
    assert control.calls == []
    write(tmp_path / "model.onnx", b" and more")
    scans(watcher, 1)
    assert control.calls == []  # maybe still being written
    scans(watcher, 1)
    assert control.calls == [("load", "iris")]
