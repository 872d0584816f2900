"""server.profiling (`tensorgate profile`): the model opened as the server opens it, and the
sample read and checked as `tensorgate batch` reads its input."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from server.dataplane.errors import ModelNotFoundError
from server.observability.drift import DriftProfile, feature_columns
from server.offline.batch_scoring import BatchScoringError
from server.offline.profiling import build_profile, default_output
from server.settings import BUNDLED_MODELS
from tests.support import model_factory as mf
from tests.support.python_models import ADD_SUB_CONFIG, ADD_SUB_SOURCE, write_python_model


def _features(rows: int = 200) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((rows, 16), dtype=np.float32)


def _write(path: Path, features: np.ndarray) -> None:
    """`features` in the format of `path`'s extension, as the tabular model's input."""
    if path.suffix == ".npy":
        np.save(path, features)
    elif path.suffix == ".npz":
        np.savez(path, features=features)
    elif path.suffix == ".csv":
        with open(path, "w", newline="") as file:
            writer = csv.writer(file)
            writer.writerow([f"features_{j}" for j in range(16)])
            writer.writerows(features.tolist())
    else:
        pq.write_table(pa.table({"features": pa.array(list(features))}), path)


@pytest.mark.parametrize("suffix", [".npy", ".npz", ".csv", ".parquet"])
def test_every_batch_input_format_gives_the_same_profile(tmp_path, suffix):
    features = _features()
    _write(tmp_path / f"sample{suffix}", features)
    profile, rows = build_profile(
        BUNDLED_MODELS, "tabular_classifier", None, tmp_path / f"sample{suffix}"
    )
    expected, _ = build_profile(
        BUNDLED_MODELS, "tabular_classifier", None, _npy(tmp_path, features)
    )
    assert rows == 200
    assert profile == expected
    assert {"features[0]", "features[15]", "label[0]"} <= set(profile.features)


def _npy(tmp_path: Path, features: np.ndarray) -> Path:
    path = tmp_path / "reference.npy"
    np.save(path, features)
    return path


def test_a_wrong_shape_names_the_input_and_both_shapes(tmp_path):
    np.save(tmp_path / "narrow.npy", _features(10)[:, :15])
    with pytest.raises(BatchScoringError) as info:
        build_profile(BUNDLED_MODELS, "tabular_classifier", None, tmp_path / "narrow.npy")
    assert str(info.value) == (
        "narrow.npy: input 'features' has shape [10, 15], but the model expects [rows, 16]"
    )


def test_errors_are_those_of_batch(tmp_path):
    (tmp_path / "sample.txt").write_text("1,2")
    with pytest.raises(BatchScoringError, match=r"unknown format '\.txt'; expected one of"):
        build_profile(BUNDLED_MODELS, "tabular_classifier", None, tmp_path / "sample.txt")
    with pytest.raises(BatchScoringError, match=r"input file .*missing\.npy does not exist"):
        build_profile(BUNDLED_MODELS, "tabular_classifier", None, tmp_path / "missing.npy")
    np.save(tmp_path / "sample.npy", _features(10))
    with pytest.raises(ModelNotFoundError, match="its models are image_classifier, tabular"):
        build_profile(BUNDLED_MODELS, "nope", None, tmp_path / "sample.npy")
    with pytest.raises(ModelNotFoundError, match=r"has no version 3; its versions are \[1\]"):
        build_profile(BUNDLED_MODELS, "tabular_classifier", 3, tmp_path / "sample.npy")
    np.save(tmp_path / "lossy.npy", _features(10).astype(np.float64) + 0.1)
    with pytest.raises(BatchScoringError, match="holds float64 values, but the model expects FP32"):
        build_profile(BUNDLED_MODELS, "tabular_classifier", None, tmp_path / "lossy.npy")


def _add_sub_profile(inputs: dict[str, np.ndarray], offset: float) -> DriftProfile:
    a, b = inputs["INPUT0"], inputs["INPUT1"]
    return DriftProfile.build(
        feature_columns({**inputs, "OUTPUT0": a + b + np.float32(offset), "OUTPUT1": a - b})
    )


def test_the_default_version_is_the_one_the_version_policy_serves(tmp_path):
    policy = "version_policy: { specific { versions: [ 1 ] } }"
    for version in (1, 2):
        mf.write_add_sub_model(
            tmp_path, "pinned", version=version, offset=version, config_extra=policy
        )
    rng = np.random.default_rng(1)
    inputs = {
        name: rng.standard_normal((50, 16), dtype=np.float32) for name in ("INPUT0", "INPUT1")
    }
    np.savez(tmp_path / "sample.npz", **inputs)
    profile, _ = build_profile(tmp_path, "pinned", None, tmp_path / "sample.npz")
    assert profile == _add_sub_profile(inputs, 1.0)
    profile, _ = build_profile(tmp_path, "pinned", 2, tmp_path / "sample.npz")
    assert profile == _add_sub_profile(inputs, 2.0)


def test_a_model_without_batching_takes_the_rows_one_by_one(tmp_path):
    mf.write_add_sub_model(tmp_path, "unbatched", max_batch_size=0, offset=0.0)
    rng = np.random.default_rng(2)
    inputs = {
        name: rng.standard_normal((30, 16), dtype=np.float32) for name in ("INPUT0", "INPUT1")
    }
    np.savez(tmp_path / "sample.npz", **inputs)
    profile, rows = build_profile(tmp_path, "unbatched", None, tmp_path / "sample.npz")
    assert rows == 30
    assert profile == _add_sub_profile(inputs, 0.0)


def test_a_python_runtime_model(tmp_path):
    write_python_model(tmp_path, "py_add_sub", ADD_SUB_SOURCE, ADD_SUB_CONFIG)
    rng = np.random.default_rng(3)
    inputs = {name: rng.standard_normal((40, 4), dtype=np.float32) for name in ("INPUT0", "INPUT1")}
    np.savez(tmp_path / "sample.npz", **inputs)
    profile, _ = build_profile(tmp_path, "py_add_sub", None, tmp_path / "sample.npz")
    assert profile == _add_sub_profile(inputs, 0.5)


def test_the_default_output_is_never_inside_the_bundled_models(tmp_path):
    assert default_output(tmp_path, "m", named=True) == tmp_path / "m" / "drift_profile.json"
    assert default_output(BUNDLED_MODELS, "m", named=False) == Path("m.drift_profile.json")
