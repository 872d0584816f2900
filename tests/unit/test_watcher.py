"""Poll-mode watcher: acts only on directories that are stable across two scans."""

from __future__ import annotations

from pathlib import Path

from server.models.repository import ModelRepository
from server.models.watcher import RepositoryWatcher


class RecordingControl:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def load(self, name: str) -> None:
        self.calls.append(("load", name))

    def unload(self, name: str) -> None:
        self.calls.append(("unload", name))


def write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("ab") as file:
        file.write(data)


def scans(watcher: RepositoryWatcher, count: int) -> None:
    for _ in range(count):
        watcher.scan_once()


def test_a_new_model_is_loaded_once_its_directory_is_stable(tmp_path: Path) -> None:
    control = RecordingControl()
    watcher = RepositoryWatcher(ModelRepository(tmp_path), control, interval_s=1)
    watcher.mark_applied()
    write(tmp_path / "m" / "1" / "model.onnx", b"model")
    scans(watcher, 1)
    assert control.calls == []  # seen once: maybe still being written
    scans(watcher, 1)
    assert control.calls == [("load", "m")]
    scans(watcher, 3)
    assert control.calls == [("load", "m")]  # nothing changed since


def test_a_version_directory_being_copied_is_left_alone_until_complete(tmp_path: Path) -> None:
    control = RecordingControl()
    write(tmp_path / "m" / "1" / "model.onnx", b"v1")
    watcher = RepositoryWatcher(ModelRepository(tmp_path), control, interval_s=1)
    watcher.mark_applied()
    for chunk in (b"part-1", b"part-2", b"part-3"):
        write(tmp_path / "m" / "2" / "model.onnx", chunk)  # the copy goes on between scans
        scans(watcher, 1)
    assert control.calls == []
    scans(watcher, 1)
    assert control.calls == [("load", "m")]


def test_a_changed_config_reloads_and_a_removed_model_unloads(tmp_path: Path) -> None:
    control = RecordingControl()
    write(tmp_path / "m" / "1" / "model.onnx", b"v1")
    write(tmp_path / "m" / "config.pbtxt", b"max_batch_size: 8\n")
    watcher = RepositoryWatcher(ModelRepository(tmp_path), control, interval_s=1)
    watcher.mark_applied()
    write(tmp_path / "m" / "config.pbtxt", b"# changed\n")
    scans(watcher, 2)
    assert control.calls == [("load", "m")]
    for file in sorted((tmp_path / "m").rglob("*"), reverse=True):
        file.unlink() if file.is_file() else file.rmdir()
    (tmp_path / "m").rmdir()
    scans(watcher, 1)
    assert control.calls == [("load", "m"), ("unload", "m")]


def test_models_present_at_start_are_not_loaded_again(tmp_path: Path) -> None:
    control = RecordingControl()
    write(tmp_path / "a" / "1" / "model.onnx", b"a")
    watcher = RepositoryWatcher(ModelRepository(tmp_path), control, interval_s=1)
    watcher.mark_applied()
    scans(watcher, 3)
    assert control.calls == []


def test_stop_ends_the_poll_loop() -> None:
    watcher = RepositoryWatcher(
        ModelRepository(Path("/nonexistent")), RecordingControl(), interval_s=3600
    )
    watcher.start()
    watcher.stop(timeout_s=5)
    assert watcher._thread is not None and not watcher._thread.is_alive()
