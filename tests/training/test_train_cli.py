import typer
from typer.testing import CliRunner

from funnel.cli.train import register
from funnel.errors import InputError
from funnel.models import read_model_metadata


def app() -> typer.Typer:
    application = typer.Typer()
    register(application)
    application.command("noop")(lambda: None)  # two commands, so "train" is a subcommand as in funnel
    return application


def test_cli_trains_and_reports(tmp_path, tiny_model_path, debian_pairs):
    result = CliRunner().invoke(
        app(),
        [
            "train",
            str(debian_pairs),
            "-o",
            str(tmp_path / "m"),
            "--model",
            str(tiny_model_path),
            "--scheme",
            "starbucks",
            "--pairs",
            "1:16,2:64",
            "--pair-weights",
            "2,1",
            "--max-steps",
            "2",
            "--batch-size",
            "16",
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "starbucks, dims [64, 16], 2 steps" in result.output
    assert read_model_metadata(tmp_path / "m")["layer_dim_pairs"] == [[1, 16], [2, 64]]


def test_cli_bad_options_raise_input_errors(tmp_path, debian_pairs):
    for options, message in [
        (["--pairs", "2x32"], "--pairs must be layer:dim pairs"),
        (["--dims", "64,half"], "--dims must be comma-separated integers"),
        (["--scheme", "onion"], "unknown scheme 'onion'"),
    ]:
        result = CliRunner().invoke(app(), ["train", str(debian_pairs), "-o", str(tmp_path / "m"), *options])
        assert isinstance(result.exception, InputError) and message in str(result.exception)
