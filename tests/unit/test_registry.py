"""server.registry (resolution), server.repository (discovery), server.loader.select_versions."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from google.protobuf import text_format
from hypothesis import example, given, settings
from hypothesis import strategies as st

from runtimes.errors import ErrorKind, InvalidInputError, TensorgateError
from server._proto import model_config_pb2 as mc
from server.dataplane.errors import ModelNotFoundError, ModelNotReadyError
from server.models.config import ModelSignature
from server.models.loader import select_versions
from server.models.registry import ModelRegistry, ModelState, parse_version
from server.models.repository import discover, read_model_dir
from server.models.served import ServedModel

PROPERTY = settings(derandomize=True, database=None, deadline=None, max_examples=300)


@contextmanager
def raises(cls: type[TensorgateError], *fragments: str) -> Iterator[None]:
    with pytest.raises(TensorgateError) as info:
        yield
    assert type(info.value) is cls, f"{type(info.value).__name__}: {info.value}"
    for fragment in fragments:
        assert fragment in str(info.value), f"{fragment!r} not in {str(info.value)!r}"


def served(name: str, version: int) -> ServedModel:
    """A ServedModel to register; resolution never touches its runtimes or scheduler."""
    return ServedModel(
        name=name,
        version=version,
        config=mc.ModelConfig(name=name),
        signature=ModelSignature(0, (), ()),
        instances=(),
        scheduler=None,  # type: ignore[arg-type]
    )


# --------------------------------------------------------------------------------------------
# ModelRegistry.resolve
# --------------------------------------------------------------------------------------------


def test_error_kinds_map_to_triton_status_codes() -> None:
    assert ModelNotFoundError.kind is ErrorKind.NOT_FOUND
    assert ModelNotReadyError.kind is ErrorKind.UNAVAILABLE
    assert InvalidInputError.kind is ErrorKind.INVALID_ARGUMENT


def test_unknown_model_is_not_found() -> None:
    registry = ModelRegistry()
    registry.publish(served("known", 1))
    with raises(ModelNotFoundError, "Request for unknown model: 'missing' is not found"):
        registry.resolve("missing")
    with raises(ModelNotFoundError, "Request for unknown model: 'missing' is not found"):
        registry.resolve("missing", "1")


def test_unknown_version_is_not_found() -> None:
    registry = ModelRegistry()
    registry.publish(served("m", 1))
    with raises(ModelNotFoundError, "Request for unknown model: 'm' version 7 is not found"):
        registry.resolve("m", "7")


def test_no_version_resolves_to_the_highest_ready_one() -> None:
    registry = ModelRegistry()
    one, three = served("m", 1), served("m", 3)
    registry.publish(three)
    registry.publish(one)
    registry.mark("m", 4, ModelState.LOADING)
    registry.mark("m", 5, ModelState.UNAVAILABLE, "broken graph")
    assert registry.resolve("m") is three
    assert registry.resolve("m", "") is three
    assert registry.resolve("m", "1") is one
    assert registry.resolve("m", "03") is three


def test_model_without_a_ready_version_is_unavailable_with_reasons() -> None:
    registry = ModelRegistry()
    registry.mark("m", 1, ModelState.UNAVAILABLE, "onnxruntime could not load model.onnx")
    registry.mark("m", 2, ModelState.LOADING)
    with raises(
        ModelNotReadyError,
        "model 'm' has no ready version",
        "version 1 is UNAVAILABLE: onnxruntime could not load model.onnx",
        "version 2 is LOADING",
    ):
        registry.resolve("m")


@pytest.mark.parametrize(
    ("state", "reason", "detail"),
    [
        (ModelState.UNAVAILABLE, "no version found", "(UNAVAILABLE: no version found)"),
        (ModelState.LOADING, "", "(LOADING)"),
        (ModelState.UNLOADING, "", "(UNLOADING)"),
    ],
)
def test_explicit_version_that_is_not_ready_is_unavailable(
    state: ModelState, reason: str, detail: str
) -> None:
    registry = ModelRegistry()
    registry.publish(served("m", 1))
    registry.publish(served("m", 2))
    registry.mark("m", 2, state, reason)
    with raises(ModelNotReadyError, "model 'm' version 2 is not ready", detail):
        registry.resolve("m", "2")
    assert registry.resolve("m").version == 1


@pytest.mark.parametrize("text", ["abc", "0", "-1", "1.0", " 1", "1 ", "+1", "v1", "1e3", "00"])
def test_bad_version_string_is_invalid_argument(text: str) -> None:
    registry = ModelRegistry()
    registry.publish(served("m", 1))
    expected = "failed to get model version from specified version string"
    with raises(InvalidInputError, expected, f"'{text}'"):
        registry.resolve("m", text)


def test_version_strings_with_leading_zeros_are_numbers() -> None:
    assert parse_version("1") == 1
    assert parse_version("0042") == 42
    assert parse_version("18446744073709551617") == 2**64 + 1


@pytest.mark.parametrize("text", ["\u00b2", "\u2460", "\u00b9\u00b2"])
def test_unicode_digit_like_version_strings_are_invalid_argument(text: str) -> None:
    # str.isdigit() is true for superscripts and circled digits, but int() rejects them, so
    # parse_version leaked a ValueError (INTERNAL) instead of INVALID_ARGUMENT.
    with raises(InvalidInputError, "failed to get model version from specified version string"):
        parse_version(text)


@PROPERTY
@given(text=st.text(max_size=8))
@example(text="\u00b2")
def test_parse_version_accepts_positive_integers_and_rejects_the_rest(text: str) -> None:
    try:
        number = parse_version(text)
    except InvalidInputError as error:
        assert f"'{text}'" in str(error)
    else:
        assert text.isascii() and text.isdigit()
        assert number == int(text) > 0


def test_state_transitions() -> None:
    registry = ModelRegistry()
    model = served("m", 1)
    registry.publish(model)
    assert registry.is_ready("m")
    assert list(registry.ready_models()) == [model]

    registry.mark("m", 1, ModelState.UNLOADING)
    assert registry.entries("m")[1].model is model  # kept so it can still be stopped
    assert not registry.is_ready("m")
    assert list(registry.ready_models()) == []

    registry.mark("m", 1, ModelState.UNAVAILABLE, "unloaded")
    entry = registry.entries("m")[1]
    assert (entry.state, entry.reason, entry.model) == (ModelState.UNAVAILABLE, "unloaded", None)


def test_retire_names_and_sorted_entries() -> None:
    registry = ModelRegistry()
    model = served("b", 3)
    registry.publish(model)
    registry.mark("b", 1, ModelState.LOADING)
    registry.mark("a", 2, ModelState.UNAVAILABLE, "bad")
    assert registry.names() == ["a", "b"]
    assert list(registry.entries("b")) == [1, 3]
    assert registry.entries("nothing") == {}
    assert registry.retire("b", 3) is model
    assert registry.entries("b")[3].state is ModelState.UNLOADING
    assert registry.retire("unknown", 1) is None
    assert not registry.is_ready("b")
    assert not registry.is_ready("unknown")


def test_publish_swaps_atomically_and_returns_the_replaced_model() -> None:
    registry = ModelRegistry()
    old, new = served("m", 1), served("m", 1)
    assert registry.publish(old) is None
    assert registry.publish(new) is old
    assert registry.resolve("m") is new
    assert registry.resolve("m", "1") is new


def test_unloaded_models_are_known_as_unloaded() -> None:
    registry = ModelRegistry()
    registry.publish(served("m", 1))
    assert not registry.is_unloaded("m")
    registry.mark("m", 1, ModelState.UNAVAILABLE, "unloaded")
    assert registry.is_unloaded("m")
    assert not registry.is_unloaded("unknown")


# --------------------------------------------------------------------------------------------
# Repository discovery
# --------------------------------------------------------------------------------------------


def make_dirs(root: Path, *paths: str) -> None:
    for path in paths:
        (root / path).mkdir(parents=True)


def test_discover_finds_models_versions_and_configs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    make_dirs(tmp_path, "alpha/1", "alpha/10", "alpha/2", "alpha/notes", "alpha/.cache")
    make_dirs(tmp_path, "beta/3", "beta/0", ".git/1", "gamma")
    (tmp_path / "alpha" / "config.pbtxt").write_text('name: "alpha"\n')
    (tmp_path / "README.md").write_text("not a model")
    (tmp_path / "alpha" / "5").write_text("a file, not a version directory")

    with caplog.at_level(logging.WARNING, logger="server.models.repository"):
        sources = discover(tmp_path)

    assert list(sources) == ["alpha", "beta", "gamma"]
    alpha = sources["alpha"]
    assert alpha.path == tmp_path / "alpha"
    assert alpha.config_path == tmp_path / "alpha" / "config.pbtxt"
    assert list(alpha.version_paths) == [1, 2, 10]
    assert alpha.version_paths[10] == tmp_path / "alpha" / "10"
    assert sources["beta"].config_path is None
    assert sources["beta"].version_paths == {3: tmp_path / "beta" / "3"}
    assert sources["gamma"].version_paths == {}

    warnings = [r.getMessage() for r in caplog.records]
    assert any("'alpha'" in w and "'notes'" in w for w in warnings)
    assert any("'beta'" in w and "'0'" in w for w in warnings)
    assert not any(".cache" in w for w in warnings)


def test_config_path_that_is_a_directory_is_no_config(tmp_path: Path) -> None:
    make_dirs(tmp_path, "m/1", "m/config.pbtxt")
    assert read_model_dir(tmp_path / "m").config_path is None


def test_discover_on_a_missing_or_non_directory_repository(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        discover(tmp_path / "missing")
    (tmp_path / "file").write_text("")
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        discover(tmp_path / "file")


def test_empty_repository(tmp_path: Path) -> None:
    assert discover(tmp_path) == {}


@pytest.mark.parametrize("name", ["\u00b2", "\u2460"])
def test_unicode_digit_like_directory_is_not_a_version(tmp_path: Path, name: str) -> None:
    # "²".isdigit() is true but int("²") raises ValueError: one oddly named directory must
    # not stop discovery of the whole repository.
    make_dirs(tmp_path, "m/1", f"m/{name}")
    assert list(read_model_dir(tmp_path / "m").version_paths) == [1]


# --------------------------------------------------------------------------------------------
# select_versions
# --------------------------------------------------------------------------------------------


def policy(text: str) -> mc.ModelConfig:
    return text_format.Parse(text, mc.ModelConfig())


def test_default_policy_is_the_latest_version() -> None:
    assert select_versions(None, [3, 1, 2]) == [3]
    assert select_versions(policy('name: "m"'), [3, 1, 2]) == [3]
    assert select_versions(None, []) == []


@pytest.mark.parametrize(("count", "expected"), [(0, [7]), (1, [7]), (2, [4, 7]), (9, [1, 4, 7])])
def test_latest_n(count: int, expected: list[int]) -> None:
    config = policy(f"version_policy {{ latest {{ num_versions: {count} }} }}")
    assert select_versions(config, [7, 1, 4]) == expected


def test_all_versions_sorted() -> None:
    assert select_versions(policy("version_policy { all { } }"), [7, 1, 4]) == [1, 4, 7]


def test_specific_versions_that_exist() -> None:
    config = policy("version_policy { specific { versions: [ 4, 9, 1 ] } }")
    assert select_versions(config, [7, 1, 4]) == [1, 4]
    assert select_versions(policy("version_policy { specific { } }"), [1, 2]) == []


def test_resolving_the_latest_version_follows_every_change() -> None:
    """resolve(name) is cached per request path; every change must be seen at once."""
    registry = ModelRegistry()
    one, two = served("m", 1), served("m", 2)
    registry.publish(one)
    assert registry.resolve("m") is one
    registry.publish(two)
    assert registry.resolve("m") is two
    assert registry.retire("m", 2) is two
    assert registry.resolve("m") is one
    registry.mark("m", 1, ModelState.UNLOADING)
    with raises(ModelNotReadyError, "no ready version"):
        registry.resolve("m")
    replacement = served("m", 1)
    registry.publish(replacement)
    assert registry.resolve("m") is replacement
