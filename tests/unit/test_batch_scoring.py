"""server.batch_scoring (`tensorgate batch`): outputs equal in-process onnxruntime, every file
format, clear errors for bad files and rows, and resuming an interrupted run."""

from __future__ import annotations

import csv
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from runtimes.base import TensorSpec
from runtimes.errors import TensorgateError
from server import cli
from server.dataplane.errors import ModelNotFoundError
from server.models.config import ModelSignature
from server.offline.batch_scoring import BatchJob, BatchScoringError, check_inputs, score
from server.settings import ServerSettings
from tests.support import model_factory as mf
from tests.support.python_models import ADD_SUB_CONFIG, ADD_SUB_SOURCE, write_python_model

BUNDLED = ServerSettings().model_repository
TABULAR_OUTPUTS = ("probabilities", "label")


def _session(model: str, repo: Path = BUNDLED) -> ort.InferenceSession:
    return ort.InferenceSession(str(repo / model / "1" / "model.onnx"))


def _expected(model: str, inputs: dict[str, np.ndarray], repo: Path = BUNDLED) -> dict:
    session = _session(model, repo)
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, inputs), strict=True))


def _job(tmp_path: Path, model: str, input_name: str, output_name: str, **kwargs) -> BatchJob:
    return BatchJob(
        model=model,
        input_path=tmp_path / input_name,
        output_path=tmp_path / output_name,
        model_repository=kwargs.pop("repo", BUNDLED),
        progress=False,
        **kwargs,
    )


def _features(rows: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((rows, 16), dtype=np.float32)


def _assert_tabular(outputs: dict[str, np.ndarray], features: np.ndarray) -> None:
    expected = _expected("tabular_classifier", {"features": features})
    np.testing.assert_allclose(outputs["probabilities"], expected["probabilities"], rtol=1e-5)
    np.testing.assert_array_equal(outputs["label"], expected["label"])


@contextmanager
def raises(cls: type[Exception], *fragments: str) -> Iterator[None]:
    """`cls` (or a subclass) with every fragment in its message."""
    with pytest.raises(cls) as info:
        yield
    for fragment in fragments:
        assert fragment in str(info.value), f"{fragment!r} not in {str(info.value)!r}"


# outputs equal onnxruntime, in every format ----------------------------------------------------


def test_npy_to_npz_equals_onnxruntime_over_many_batches(tmp_path):
    features = _features(1000)
    np.save(tmp_path / "in.npy", features)
    result = score(_job(tmp_path, "tabular_classifier", "in.npy", "out.npz", batch_rows=128))
    assert (result.rows, result.scored_rows, result.version) == (1000, 1000, 1)
    with np.load(tmp_path / "out.npz") as out:
        assert sorted(out.files) == sorted(TABULAR_OUTPUTS)
        _assert_tabular(dict(out), features)
    assert not (tmp_path / "out.npz.partial").exists()


def test_two_input_model_from_npz(tmp_path):
    rng = np.random.default_rng(1)
    inputs = {
        "input_ids": rng.integers(1, 1000, (300, 12), dtype=np.int64),
        "attention_mask": (rng.random((300, 12)) < 0.8).astype(np.int64),
    }
    np.savez(tmp_path / "in.npz", **inputs)
    score(_job(tmp_path, "text_encoder", "in.npz", "out.npz", batch_rows=64))
    with np.load(tmp_path / "out.npz") as out:
        np.testing.assert_allclose(
            out["embedding"], _expected("text_encoder", inputs)["embedding"], rtol=1e-4, atol=1e-6
        )


def test_npy_output_of_a_one_output_model_and_a_chosen_output(tmp_path):
    images = np.random.default_rng(2).standard_normal((20, 3, 64, 64), dtype=np.float32)
    np.save(tmp_path / "in.npy", images)
    score(_job(tmp_path, "image_classifier", "in.npy", "out.npy", batch_rows=8))
    expected = _expected("image_classifier", {"image": images})["logits"]
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), expected, rtol=1e-4, atol=1e-5)

    features = _features(50)
    np.save(tmp_path / "tab.npy", features)
    score(_job(tmp_path, "tabular_classifier", "tab.npy", "label.npy", outputs=("label",)))
    expected_labels = _expected("tabular_classifier", {"features": features})["label"]
    np.testing.assert_array_equal(np.load(tmp_path / "label.npy"), expected_labels)


def _write_csv(path: Path, header: list[str], rows: np.ndarray) -> None:
    with open(path, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(header)
        writer.writerows(rows.tolist())


@pytest.mark.parametrize("header", ["any", "numbered"])
def test_csv_to_csv_equals_onnxruntime(tmp_path, header):
    features = _features(200, seed=3)
    names = (
        [f"f{j}" for j in range(16)] if header == "any" else [f"features_{j}" for j in range(16)]
    )
    _write_csv(tmp_path / "in.csv", names, features)
    score(_job(tmp_path, "tabular_classifier", "in.csv", "out.csv", batch_rows=64))
    with open(tmp_path / "out.csv", newline="") as file:
        rows = list(csv.reader(file))
    assert rows[0] == ["probabilities_0", "probabilities_1", "probabilities_2", "label"]
    table = np.array(rows[1:], dtype=np.float64)
    # The CSV text holds each float32 exactly (float32 values print to their shortest text).
    parsed = np.loadtxt(tmp_path / "in.csv", delimiter=",", skiprows=1, dtype=np.float32)
    expected = _expected("tabular_classifier", {"features": parsed})
    np.testing.assert_array_equal(table[:, :3].astype(np.float32), expected["probabilities"])
    np.testing.assert_array_equal(table[:, 3].astype(np.int64), expected["label"])


def test_parquet_scalar_and_list_columns_to_parquet(tmp_path):
    features = _features(120, seed=4)
    pq.write_table(
        pa.table({f"features_{j}": features[:, j] for j in range(16)}), tmp_path / "cols.parquet"
    )
    pq.write_table(
        pa.table({"features": pa.array(list(features), pa.list_(pa.float32(), 16))}),
        tmp_path / "list.parquet",
    )
    for name in ("cols", "list"):
        score(_job(tmp_path, "tabular_classifier", f"{name}.parquet", f"{name}_out.parquet"))
        table = pq.read_table(tmp_path / f"{name}_out.parquet")
        assert table.column_names == [
            "probabilities_0",
            "probabilities_1",
            "probabilities_2",
            "label",
        ]
        probabilities = np.stack([table.column(f"probabilities_{j}").to_numpy() for j in range(3)])
        _assert_tabular(
            {"probabilities": probabilities.T, "label": table.column("label").to_numpy()},
            features,
        )


@pytest.fixture(scope="module")
def test_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("batch_repo")
    mf.write_identity_model(repo, "identity_bytes", "BYTES", max_batch_size=8, with_config=True)
    mf.write_add_sub_model(repo, "unbatched", max_batch_size=0, with_config=True)
    return repo


def test_bytes_model_and_a_model_without_batching(tmp_path, test_repo):
    words = mf.make_array("BYTES", (30, mf.IDENTITY_ELEMENT_COUNT), seed=5)
    text = np.array([[word.decode("utf-8") for word in row] for row in words])
    np.savez(tmp_path / "words.npz", INPUT0=text)
    score(_job(tmp_path, "identity_bytes", "words.npz", "echo.npz", repo=test_repo))
    with np.load(tmp_path / "echo.npz", allow_pickle=True) as out:
        assert out["OUTPUT0"].tolist() == words.tolist()

    # max_batch_size 0: each row of the file is one request of the model's own shape.
    a = np.random.default_rng(6).standard_normal((7, 16), dtype=np.float32)
    np.savez(tmp_path / "ab.npz", INPUT0=a, INPUT1=a * 2)
    score(_job(tmp_path, "unbatched", "ab.npz", "ab_out.npz", repo=test_repo))
    with np.load(tmp_path / "ab_out.npz") as out:
        np.testing.assert_allclose(out["OUTPUT0"], a * 3, rtol=1e-6)
        np.testing.assert_allclose(out["OUTPUT1"], -a, rtol=1e-6)


def test_integer_input_is_converted_to_the_models_float(tmp_path):
    features = np.arange(64, dtype=np.int64).reshape(4, 16)
    np.save(tmp_path / "in.npy", features)
    score(_job(tmp_path, "tabular_classifier", "in.npy", "out.npz"))
    with np.load(tmp_path / "out.npz") as out:
        _assert_tabular(dict(out), features.astype(np.float32))


def test_a_python_runtime_model_is_loaded_as_the_server_loads_it(tmp_path):
    # The config's backend picks the runtime (here python, which has no model.onnx).
    write_python_model(tmp_path / "repo", "py_add_sub", ADD_SUB_SOURCE, ADD_SUB_CONFIG)
    rng = np.random.default_rng(11)
    a, b = (rng.standard_normal((6, 4), dtype=np.float32) for _ in range(2))
    header = [f"INPUT0_{j}" for j in range(4)] + [f"INPUT1_{j}" for j in range(4)]
    _write_csv(tmp_path / "in.csv", header, np.concatenate([a, b], axis=1))
    job = _job(tmp_path, "py_add_sub", "in.csv", "out.npz", repo=tmp_path / "repo")
    score(job)
    with np.load(tmp_path / "out.npz") as out:
        np.testing.assert_allclose(out["OUTPUT0"], a + b + 0.5, rtol=1e-6)  # offset parameter
        np.testing.assert_allclose(out["OUTPUT1"], a - b, rtol=1e-6)

    # A row the model fails on is named by its line in the file (the header is line 1).
    a[2, 1] = np.nan
    _write_csv(tmp_path / "in.csv", header, np.concatenate([a, b], axis=1))
    with raises(BatchScoringError, "line 4: python model 'py_add_sub' failed", "NaN input"):
        score(job)


def test_csv_text_may_hold_a_hash(tmp_path, test_repo):
    with open(tmp_path / "words.csv", "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow([f"INPUT0_{j}" for j in range(4)])
        writer.writerow(["a#b", "#c", "d", "e"])
    score(_job(tmp_path, "identity_bytes", "words.csv", "echo.npz", repo=test_repo))
    with np.load(tmp_path / "echo.npz", allow_pickle=True) as out:
        assert out["OUTPUT0"].tolist() == [[b"a#b", b"#c", b"d", b"e"]]


# conversions: only those that keep every value ------------------------------------------------


def test_float64_input_that_float32_holds_exactly_is_converted_and_logged_once(tmp_path, caplog):
    features = _features(300)
    np.save(tmp_path / "in.npy", features.astype(np.float64))
    with caplog.at_level(logging.INFO, logger="server.offline.batch_scoring"):
        score(_job(tmp_path, "tabular_classifier", "in.npy", "out.npz", batch_rows=100))
    with np.load(tmp_path / "out.npz") as out:
        _assert_tabular(dict(out), features)
    converted = [r.getMessage() for r in caplog.records if "converted" in r.getMessage()]
    assert converted == [
        "in.npy: converted input 'features' from float64 to FP32 (every value unchanged)"
    ]


@pytest.mark.parametrize(
    ("dtype", "value", "becomes"),
    [
        (np.float64, 0.1, "0.10000000149011612"),
        (np.float64, 1e300, "inf"),
        (np.int64, 2**24 + 1, "16777216.0"),
    ],
)
def test_a_conversion_that_would_change_a_value_is_refused(tmp_path, dtype, value, becomes):
    features = _features(5).astype(dtype)
    features[3, 2] = value
    np.save(tmp_path / "in.npy", features)
    _fails(
        _job(tmp_path, "tabular_classifier", "in.npy", "out.npz"),
        BatchScoringError,
        f"input 'features' holds {np.dtype(dtype)} values, but the model expects FP32",
        f"row index 3 has {value!r}, which would become {becomes}",
    )


def test_check_inputs_converts_only_what_survives_exactly():
    signature = ModelSignature(
        8, (TensorSpec("x", "INT32", (2,)), TensorSpec("y", "FP16", (1,))), ()
    )

    def label(index: int) -> str:
        return f"row index {index}"

    inputs = {"x": np.array([[1.0, -2.0], [3.0, 4.0]]), "y": np.array([[np.nan], [0.5]])}
    assert check_inputs(inputs, signature, Path("f.npz"), label) == 2
    assert inputs["x"].dtype == np.int32 and inputs["x"].tolist() == [[1, -2], [3, 4]]
    assert inputs["y"].dtype == np.float16 and np.isnan(inputs["y"][0, 0])
    inputs = {"x": np.array([[1.0, 2.0], [3.5, 4.0]]), "y": np.array([[0.5], [0.5]])}
    with raises(BatchScoringError, "'x' holds float64", "INT32", "row index 1 has 3.5", "become 3"):
        check_inputs(inputs, signature, Path("f.npz"), label)
    inputs = {"x": np.array([[-1, 2]], np.int64), "y": np.array([[0.5]])}
    signature = ModelSignature(
        8, (TensorSpec("x", "UINT8", (2,)), TensorSpec("y", "FP16", (1,))), ()
    )
    with raises(BatchScoringError, "row index 0 has -1, which would become 255"):
        check_inputs(inputs, signature, Path("f.npz"), label)


@pytest.mark.parametrize(
    ("input_name", "output_name"), [("in.npy", "out.parquet"), ("in.parquet", "out.npz")]
)
def test_parquet_without_pyarrow_fails_before_writing_anything(
    tmp_path, monkeypatch, input_name, output_name
):
    features = _features(10)
    np.save(tmp_path / "in.npy", features)
    pq.write_table(pa.table({"features": pa.array(list(features))}), tmp_path / "in.parquet")
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow raises ImportError
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    _fails(
        _job(tmp_path, "tabular_classifier", input_name, output_name),
        BatchScoringError,
        "Parquet files need pyarrow: pip install 'tensorgate[parquet]'",
    )
    assert sorted(path.name for path in tmp_path.iterdir()) == ["in.npy", "in.parquet"]


# bad files, clear errors -----------------------------------------------------------------------


def _fails(job: BatchJob, cls: type[Exception], *fragments: str) -> None:
    with raises(cls, *fragments):
        score(job)
    assert not job.output_path.exists()


def test_bad_files_give_clear_errors(tmp_path):
    features = _features(10)
    np.save(tmp_path / "tab.npy", features)
    np.save(tmp_path / "narrow.npy", features[:, :15])
    np.save(tmp_path / "text.npy", np.array([["a"] * 16], dtype=str))
    np.savez(tmp_path / "wrong_key.npz", feature=features)
    np.save(tmp_path / "empty.npy", np.zeros((0, 16), np.float32))
    (tmp_path / "garbage.npy").write_bytes(b"not numpy at all")
    (tmp_path / "in.txt").write_text("1,2,3")

    def job(input_name: str, output_name: str = "out.npz", **kwargs) -> BatchJob:
        return _job(
            tmp_path, kwargs.pop("model", "tabular_classifier"), input_name, output_name, **kwargs
        )

    _fails(job("in.txt"), BatchScoringError, "in.txt", "unknown format '.txt'", ".npy, .npz")
    _fails(job("tab.npy", "out.json"), BatchScoringError, "unknown format '.json'")
    _fails(job("missing.npy"), BatchScoringError, "missing.npy does not exist")
    _fails(job("garbage.npy"), BatchScoringError, "garbage.npy could not be read")
    _fails(
        job("narrow.npy"),
        BatchScoringError,
        "input 'features' has shape [10, 15]",
        "expects [rows, 16]",
    )
    _fails(job("text.npy"), BatchScoringError, "input 'features' holds <U1", "expects FP32")
    _fails(job("wrong_key.npz"), BatchScoringError, "no array for input 'features'", "['feature']")
    _fails(job("empty.npy"), BatchScoringError, "empty.npy has no rows")
    _fails(
        job("tab.npy", "out.npy"),
        BatchScoringError,
        "an .npy file holds one array",
        "--outputs",
    )
    _fails(job("tab.npy", outputs=("nope",)), BatchScoringError, "no output 'nope'")
    _fails(
        job("tab.npy", model="no_such_model"),
        ModelNotFoundError,
        f"no model 'no_such_model' in {BUNDLED}",
        "its models are image_classifier, tabular_classifier, text_encoder",
    )
    _fails(job("tab.npy", version=7), ModelNotFoundError, "has no version 7", "versions are [1]")
    _fails(
        job("tab.npy", repo=tmp_path / "nowhere"),
        ModelNotFoundError,
        f"model repository {tmp_path / 'nowhere'} is not a directory",
    )
    _fails(
        job("tab.npy", model="text_encoder"),
        BatchScoringError,
        "an .npy file holds one array",
        "['input_ids', 'attention_mask']",
    )
    np.savez(
        tmp_path / "ragged.npz",
        input_ids=np.ones((3, 4), np.int64),
        attention_mask=np.ones((2, 4), np.int64),
    )
    _fails(job("ragged.npz", model="text_encoder"), BatchScoringError, "disagree on the row count")


def test_bad_csv_and_parquet_files(tmp_path):
    features = _features(6)
    rows = features.astype(str)
    rows[3, 5] = "abc"
    _write_csv(tmp_path / "bad_value.csv", [f"f{j}" for j in range(16)], rows)
    # Lines of the file: the header is line 1, data row index 3 is line 5.
    _fails(
        _job(tmp_path, "tabular_classifier", "bad_value.csv", "out.csv"),
        BatchScoringError,
        "bad_value.csv, line 5: bad value for input 'features' in column 'f5': 'abc' is not FP32",
    )
    with open(tmp_path / "short_row.csv", "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow([f"f{j}" for j in range(16)])
        writer.writerows(features[:2].tolist())
        writer.writerow([])  # a blank line: skipped, but still a line of the file
        writer.writerow(features[2, :15].tolist())
    _fails(
        _job(tmp_path, "tabular_classifier", "short_row.csv", "out.csv"),
        BatchScoringError,
        "short_row.csv, line 5: 15 values, but the header names 16 columns",
    )
    _write_csv(tmp_path / "too_few.csv", [f"f{j}" for j in range(15)], features[:, :15])
    _fails(
        _job(tmp_path, "tabular_classifier", "too_few.csv", "out.csv"),
        BatchScoringError,
        "no columns for input 'features'",
        "'features_0' to 'features_15'",
        "exactly 16 columns",
        "the file has 15 columns",
    )
    (tmp_path / "empty.csv").write_text("")
    _fails(
        _job(tmp_path, "tabular_classifier", "empty.csv", "out.csv"),
        BatchScoringError,
        "empty.csv is empty",
    )
    _write_csv(tmp_path / "text.csv", ["input_ids", "attention_mask"], np.ones((2, 2)))
    _fails(
        _job(tmp_path, "text_encoder", "text.csv", "out.npz"),
        BatchScoringError,
        "input 'input_ids' has variable dimensions [-1]",
        "use an .npz",
    )
    columns = {f"features_{j}": pa.array(features[:, j]) for j in range(16)}
    columns["features_4"] = pa.array([1.0, 2.0, None, 4.0, 5.0, 6.0], pa.float32())
    pq.write_table(pa.table(columns), tmp_path / "nulls.parquet")
    _fails(
        _job(tmp_path, "tabular_classifier", "nulls.parquet", "out.parquet"),
        BatchScoringError,
        "column 'features_4' is empty at row index 2",
    )
    short = pa.array([list(row) for row in features[:3]] + [list(features[3, :4])])
    pq.write_table(pa.table({"features": short}), tmp_path / "short_list.parquet")
    _fails(
        _job(tmp_path, "tabular_classifier", "short_list.parquet", "out.parquet"),
        BatchScoringError,
        "column 'features' has 4 values at row index 3",
        "needs 16",
    )


# resuming and bad rows ---------------------------------------------------------------------------


class _StopAfter:
    """A progress bar that interrupts the run after `chunks` chunks, like Ctrl-C would."""

    def __init__(self, chunks: int) -> None:
        self.chunks = chunks

    def __call__(self, **kwargs: object) -> _StopAfter:
        return self

    def update(self, rows: int) -> None:
        self.chunks -= 1
        if self.chunks == 0:
            raise KeyboardInterrupt

    def close(self) -> None:
        pass


def test_an_interrupted_run_resumes_where_it_stopped(tmp_path):
    features = _features(1000, seed=7)
    np.save(tmp_path / "in.npy", features)
    job = _job(tmp_path, "tabular_classifier", "in.npy", "out.npz", batch_rows=100)
    with pytest.raises(KeyboardInterrupt):
        score(job, progress_factory=_StopAfter(3))
    assert not job.output_path.exists()
    partial = tmp_path / "out.npz.partial"
    assert list(partial.glob("part-*.npz"))  # the three chunks scored are saved

    # Other options cannot continue those results.
    with raises(BatchScoringError, "cannot resume", "chunk_rows"):
        score(BatchJob(**{**job.__dict__, "resume": True, "batch_rows": 50}))

    result = score(BatchJob(**{**job.__dict__, "resume": True}))
    assert (result.rows, result.scored_rows) == (1000, 700)
    with np.load(job.output_path) as out:
        _assert_tabular(dict(out), features)
    assert not partial.exists()


def test_without_resume_partial_results_are_discarded(tmp_path):
    features = _features(300, seed=8)
    np.save(tmp_path / "in.npy", features)
    job = _job(tmp_path, "tabular_classifier", "in.npy", "out.npz", batch_rows=100)
    with pytest.raises(KeyboardInterrupt):
        score(job, progress_factory=_StopAfter(1))
    assert score(job).scored_rows == 300


def test_a_bad_row_fails_the_run_by_its_number_and_resume_continues_after_the_fix(
    tmp_path, test_repo
):
    words = mf.make_array("BYTES", (40, mf.IDENTITY_ELEMENT_COUNT), seed=9).astype("S")
    bad = words.copy()
    bad[25, 1] = b"\xff\xfe not utf-8"
    np.savez(tmp_path / "in.npz", INPUT0=bad)
    job = _job(tmp_path, "identity_bytes", "in.npz", "out.npz", batch_rows=10, repo=test_repo)
    with raises(BatchScoringError, "row index 25:", "input 'INPUT0'", "UTF-8", "--resume"):
        score(job)
    assert not job.output_path.exists()
    assert list((tmp_path / "out.npz.partial").glob("part-*.npz"))

    # Fix the row; the rows scored before it are kept, the rest are scored now.
    np.savez(tmp_path / "in.npz", INPUT0=words)
    result = score(BatchJob(**{**job.__dict__, "resume": True}))
    assert (result.rows, result.scored_rows) == (40, 20)
    with np.load(job.output_path, allow_pickle=True) as out:
        assert out["OUTPUT0"].tolist() == words.tolist()


def test_resume_scores_again_the_chunks_whose_rows_changed(tmp_path):
    features = _features(300, seed=10)
    np.save(tmp_path / "in.npy", features)
    job = _job(tmp_path, "tabular_classifier", "in.npy", "out.npz", batch_rows=100)
    with pytest.raises(KeyboardInterrupt):
        score(job, progress_factory=_StopAfter(2))
    features[150] += 1  # the second chunk's rows change under the saved results
    np.save(tmp_path / "in.npy", features)
    result = score(BatchJob(**{**job.__dict__, "resume": True}))
    assert result.scored_rows == 200
    with np.load(job.output_path) as out:
        _assert_tabular(dict(out), features)


# the command --------------------------------------------------------------------------------------


def test_cli_batch(tmp_path, capsys):
    features = _features(100)
    np.save(tmp_path / "in.npy", features)
    code = cli.main(
        [
            "batch",
            "--model",
            "tabular_classifier",
            "--input",
            str(tmp_path / "in.npy"),
            "--output",
            str(tmp_path / "out.npz"),
            "--no-progress",
        ]
    )
    assert code == 0
    assert "scored 100 rows with tabular_classifier version 1" in capsys.readouterr().out
    with np.load(tmp_path / "out.npz") as out:
        _assert_tabular(dict(out), features)

    code = cli.main(
        [
            "batch",
            "--model",
            "tabular_classifier",
            "--input",
            str(tmp_path / "nope.npy"),
            "--output",
            str(tmp_path / "x.npz"),
            "--no-progress",
        ]
    )
    assert code == 2
    assert "tensorgate batch: input file" in capsys.readouterr().err


def test_every_error_is_a_tensorgate_error():
    assert issubclass(BatchScoringError, TensorgateError)
