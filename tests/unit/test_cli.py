"""server.cli: `tensorgate serve` settings from flags, TENSORGATE_* variables and defaults."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from server import __version__
from server.cli import build_parser, main, settings_from
from server.settings import BUNDLED_MODELS, ServerSettings

ENV_NAMES = {
    "model_repository": "TENSORGATE_MODEL_REPOSITORY",
    "grpc_host": "TENSORGATE_GRPC_HOST",
    "grpc_port": "TENSORGATE_GRPC_PORT",
    "max_message_bytes": "TENSORGATE_MAX_MESSAGE_BYTES",
    "default_max_batch_size": "TENSORGATE_DEFAULT_MAX_BATCH_SIZE",
    "grace_period_s": "TENSORGATE_GRACE_PERIOD_SECS",
    "log_level": "TENSORGATE_LOG_LEVEL",
}


def settings(argv: list[str], environ: dict[str, str] | None = None) -> ServerSettings:
    return settings_from(build_parser().parse_args(["serve", *argv]), environ or {})


def test_defaults() -> None:
    result = settings([])
    assert result == ServerSettings()
    assert result.model_repository == BUNDLED_MODELS
    assert (result.grpc_host, result.grpc_port) == ("0.0.0.0", 8001)
    assert result.max_message_bytes == 256 * 1024 * 1024
    assert (result.default_max_batch_size, result.grace_period_s) == (32, 30.0)
    assert result.log_level == "INFO"


def test_every_setting_from_the_environment() -> None:
    environ = {
        ENV_NAMES["model_repository"]: "/srv/models",
        ENV_NAMES["grpc_host"]: "127.0.0.1",
        ENV_NAMES["grpc_port"]: "9001",
        ENV_NAMES["max_message_bytes"]: "1048576",
        ENV_NAMES["default_max_batch_size"]: "8",
        ENV_NAMES["grace_period_s"]: "2.5",
        ENV_NAMES["log_level"]: "debug",
    }
    assert settings([], environ) == ServerSettings(
        model_repository=Path("/srv/models"),
        grpc_host="127.0.0.1",
        grpc_port=9001,
        max_message_bytes=1_048_576,
        default_max_batch_size=8,
        grace_period_s=2.5,
        log_level="DEBUG",
    )


def test_every_setting_from_flags() -> None:
    argv = [
        "--model-repository=/models",
        "--grpc-host=::",
        "--grpc-port=0",
        "--max-message-bytes=2048",
        "--default-max-batch-size=4",
        "--grace-period-secs=0.5",
        "--log-level=warning",
    ]
    assert settings(argv) == ServerSettings(
        model_repository=Path("/models"),
        grpc_host="::",
        grpc_port=0,
        max_message_bytes=2048,
        default_max_batch_size=4,
        grace_period_s=0.5,
        log_level="WARNING",
    )


def test_flag_beats_environment_beats_default() -> None:
    environ = {ENV_NAMES["grpc_port"]: "9001", ENV_NAMES["grpc_host"]: "10.0.0.1"}
    result = settings(["--grpc-port", "9100"], environ)
    assert result.grpc_port == 9100  # flag over env
    assert result.grpc_host == "10.0.0.1"  # env over default
    assert result.max_message_bytes == ServerSettings().max_message_bytes  # default


def test_flag_beats_an_invalid_environment_value() -> None:
    assert settings(["--grpc-port", "1"], {ENV_NAMES["grpc_port"]: "not-a-port"}).grpc_port == 1


def test_only_exact_tensorgate_variables_are_read() -> None:
    environ = {"GRPC_PORT": "1", "tensorgate_grpc_port": "2", "TENSORGATE_PORT": "3"}
    assert settings([], environ) == ServerSettings()


def test_help_names_each_environment_variable(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["serve", "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for name in ENV_NAMES.values():
        assert name in text


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("grpc_port", "eighty"),
        ("grpc_port", ""),
        ("max_message_bytes", "1.5"),
        ("default_max_batch_size", "many"),
        ("grace_period_s", "soon"),
    ],
)
def test_invalid_environment_value_exits_with_the_variable_named(field: str, value: str) -> None:
    variable = ENV_NAMES[field]
    with pytest.raises(SystemExit) as info:
        settings([], {variable: value})
    message = str(info.value.code)
    assert message.startswith("tensorgate: invalid ")
    assert f"{variable}={value}" in message


def test_unknown_log_level_in_the_environment_is_rejected() -> None:
    # The help promises DEBUG, INFO, WARNING or ERROR; "LOUD" was accepted here and only failed
    # later, as a traceback from logging.basicConfig ("Unknown level: 'LOUD'").
    with pytest.raises(SystemExit) as info:
        settings([], {ENV_NAMES["log_level"]: "loud"})
    assert ENV_NAMES["log_level"] in str(info.value.code)


def test_unknown_log_level_flag_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        settings(["--log-level", "loud"])
    assert info.value.code == 2
    assert "--log-level" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--grpc-port", "x"], ["--grace-period-secs", "later"]])
def test_invalid_flag_is_a_usage_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        settings(argv)
    assert info.value.code == 2
    assert argv[0] in capsys.readouterr().err


def test_a_command_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args([])
    assert info.value.code == 2
    assert "serve" in capsys.readouterr().err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"tensorgate {__version__}"


# batch and profile --------------------------------------------------------------------------------

TABULAR = "tabular_classifier"
BUNDLED_PROFILE = BUNDLED_MODELS / TABULAR / "drift_profile.json"


@pytest.fixture
def sample(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A sample for the tabular model, as CSV; the current directory is tmp_path/cwd and no
    repository is named in the environment."""
    features = np.random.default_rng(0).standard_normal((50, 16)).astype(np.float32)
    path = tmp_path / "sample.csv"
    np.savetxt(path, features, delimiter=",", header=",".join(f"f{j}" for j in range(16)))
    path.write_text(path.read_text().removeprefix("# "))
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    monkeypatch.delenv("TENSORGATE_MODEL_REPOSITORY", raising=False)
    return path


def _profile(*argv: str) -> int:
    return main(["profile", "--model", TABULAR, *argv])


def test_profile_of_a_bundled_model_is_written_to_the_current_directory(
    sample: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _profile("--input", str(sample)) == 0
    written = Path.cwd() / f"{TABULAR}.drift_profile.json"
    assert written.is_file()
    assert not BUNDLED_PROFILE.exists()
    out = capsys.readouterr().out
    assert f"over 50 rows: {TABULAR}.drift_profile.json (in the current directory" in out
    assert "--output" in out


def test_profile_goes_into_a_named_repository_unless_output_says_otherwise(
    sample: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(BUNDLED_MODELS / TABULAR, repo / TABULAR)
    assert _profile("--input", str(sample), "--model-repository", str(repo)) == 0
    assert (repo / TABULAR / "drift_profile.json").is_file()

    other = tmp_path / "env_repo"
    shutil.copytree(BUNDLED_MODELS / TABULAR, other / TABULAR)
    monkeypatch.setenv("TENSORGATE_MODEL_REPOSITORY", str(other))
    assert _profile("--input", str(sample)) == 0
    assert (other / TABULAR / "drift_profile.json").is_file()

    assert _profile("--input", str(sample), "--output", str(tmp_path / "mine.json")) == 0
    assert (tmp_path / "mine.json").is_file()
    assert not list(Path.cwd().iterdir())


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--model", "nope", "--input", "{sample}"], "no model 'nope' in "),
        (["--version", "4", "--input", "{sample}"], "has no version 4; its versions are [1]"),
        (
            ["--input", "{narrow}"],
            "input 'features' has shape [50, 15], but the model expects [rows, 16]",
        ),
        (["--input", "sample.txt"], "input file sample.txt: unknown format '.txt'"),
    ],
)
def test_profile_errors_exit_2_with_our_message(
    sample: Path, argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    narrow = sample.with_name("narrow.npy")
    np.save(narrow, np.zeros((50, 15), np.float32))
    argv = [a.format(sample=sample, narrow=narrow) for a in argv]
    model = [] if "--model" in argv else ["--model", TABULAR]
    assert main(["profile", *model, *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tensorgate profile: ")
    assert message in err
    assert not list(Path.cwd().iterdir())


def test_batch_to_parquet_without_pyarrow_exits_2_before_writing(
    sample: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    argv = ["batch", "--model", TABULAR, "--input", str(sample), "--output", "out.parquet"]
    assert main([*argv, "--no-progress"]) == 2
    assert capsys.readouterr().err == (
        "tensorgate batch: Parquet files need pyarrow: pip install 'tensorgate[parquet]'\n"
    )
    assert not list(Path.cwd().iterdir())


def test_batch_of_an_unknown_model_lists_the_repositorys_models(
    sample: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["batch", "--model", "nope", "--input", str(sample), "--output", "out.npz"]
    assert main(argv) == 2
    assert capsys.readouterr().err == (
        f"tensorgate batch: no model 'nope' in {BUNDLED_MODELS}; its models are "
        "image_classifier, tabular_classifier, text_encoder\n"
    )
