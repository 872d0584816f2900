"""What `tensorgate serve` says about a wrong option value, and what its help says of defaults."""

from __future__ import annotations

import pytest

from server.cli import build_parser, settings_from


def usage_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["serve", *argv])
    assert info.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (
            ["--model-control-mode", "bogus"],
            "model control mode must be one of none, poll, explicit, got 'bogus'",
        ),
        (["--metrics", "maybe"], "--metrics: expected true or false, got 'maybe'"),
        (
            ["--trace-exporter", "jaeger"],
            "trace exporter must be one of none, console, otlp, got 'jaeger'",
        ),
        (
            ["--log-level", "loud"],
            "log level must be one of DEBUG, INFO, WARNING, ERROR, got 'loud'",
        ),
    ],
)
def test_a_wrong_value_names_the_valid_ones(
    argv: list[str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    message = usage_error(argv, capsys)
    assert expected in message
    assert "invalid _" not in message  # argparse's wording with the type function's name


def test_a_wrong_environment_value_names_the_valid_ones() -> None:
    with pytest.raises(SystemExit) as info:
        settings_from(build_parser().parse_args(["serve"]), {"TENSORGATE_METRICS": "maybe"})
    assert str(info.value.code) == (
        "tensorgate: invalid TENSORGATE_METRICS=maybe: expected true or false, got 'maybe'"
    )


def test_choices_are_case_insensitive_where_the_help_shows_them_so() -> None:
    args = build_parser().parse_args(["serve", "--model-control-mode", "POLL", "--metrics", "No"])
    settings = settings_from(args, {})
    assert (settings.model_control_mode, settings.metrics_enabled) == ("poll", False)


def test_help_shows_real_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "default ()" not in text and "default None" not in text
    assert "TENSORGATE_MODEL_REPOSITORY; default the bundled example models]" in text
    assert "TENSORGATE_METRICS; default true]" in text
    assert "TENSORGATE_GRPC_PORT; default 8001]" in text
