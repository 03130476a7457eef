"""The CLI's free-text values, file system refusals and help, as a user meets them: a bad collection
name or URL is one error line before anything is created; a refused write names the path and the
fix; every --help shows its defaults."""

from __future__ import annotations

import errno
import os
import re

import pytest
from test_hostile_inputs import MISSING_MODEL, built, funnel, one_error_line, sample_40  # noqa: F401  (fixtures)
from typer.main import get_command
from typer.testing import CliRunner

from funnel.cli import app
from funnel.cli.output import os_error_line, writing
from funnel.cli.validate import collection_name, qdrant_location
from funnel.errors import InputError


@pytest.mark.parametrize("name", ["../evil", "", "a b*?", "x" * 300, ".hidden", "a/b"])
def test_export_refuses_a_bad_collection_name_before_creating_anything(tmp_path, built, name):  # noqa: F811
    line = one_error_line(funnel("export", built, "--qdrant", tmp_path / "qdrant", "--collection", name, cwd=tmp_path), "--collection")
    assert "is not a collection name: use 1-255 letters, digits" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("location", "message"),
    [
        ("ftp://x", "is not an http(s) URL"),
        ("localhost:6333", "looks like HOST:PORT without a scheme: write http://localhost:6333"),
        ("http://[::1", "is not a valid URL"),
        ("http://127.0.0.1:99999", "is not a valid URL"),
        ("", "--qdrant is empty"),
    ],
)
def test_export_refuses_a_location_that_is_neither_a_url_nor_a_folder(tmp_path, built, location, message):  # noqa: F811
    one_error_line(funnel("export", built, "--qdrant", location, "--collection", "docs", cwd=tmp_path), message)
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no folder named ftp: or localhost:6333


def test_index_to_qdrant_checks_the_collection_before_the_model(tmp_path, sample_40):  # noqa: F811
    one_error_line(
        funnel(
            "index",
            sample_40,
            "--backend",
            "qdrant",
            "--qdrant",
            tmp_path / "q",
            "--collection",
            "../x",
            "--model",
            MISSING_MODEL,
            cwd=tmp_path,
        ),
        "is not a collection name",
    )
    assert not (tmp_path / "q").exists()


@pytest.mark.parametrize("url", ["http://[::1", "http://127.0.0.1:notaport", "ftp://127.0.0.1:8000"])
def test_search_refuses_a_malformed_server_url_in_one_line(url):
    one_error_line(funnel("search", "docs", "a query", "--server", url), "server URL")


def test_the_checks_pass_good_values():
    assert collection_name("debian-300_v2.1") == "debian-300_v2.1"
    for location in ("http://127.0.0.1:6333", "https://qdrant.example:443/", ":memory:", "qdrant-data", "./q"):
        assert qdrant_location(location) == location
    with pytest.raises(InputError):
        collection_name("a" * 256)


def test_a_full_disk_names_the_path_and_the_fix(tmp_path):
    """/dev/full refuses every write with ENOSPC, as a full disk does, and names no file."""
    with pytest.raises(OSError) as refused, writing(tmp_path / "report"), open("/dev/full", "w") as full:
        full.write("x" * 10_000)
        full.flush()
    assert refused.value.errno == errno.ENOSPC
    assert os_error_line(refused.value) == (
        f"{tmp_path / 'report'}: No space left on device: free space on that disk (or write somewhere else) and run the command again"
    )


def test_other_refusals_keep_the_path_they_name_and_say_what_to_do(tmp_path):
    with pytest.raises(OSError) as missing:
        os.rename(tmp_path / "nothing", tmp_path / "else")
    assert (
        os_error_line(missing.value)
        == f"{tmp_path / 'nothing'} -> {tmp_path / 'else'}: No such file or directory: check that the path exists"
    )
    eio = OSError(errno.EIO, os.strerror(errno.EIO), "/data/idx/vectors.f16")
    assert os_error_line(eio).startswith("/data/idx/vectors.f16: Input/output error: the disk reported an I/O error")


COMMANDS = sorted(command.name for command in app.registered_commands if command.name)


@pytest.mark.parametrize("name", COMMANDS)
def test_every_help_shows_its_defaults(name):
    """Help text holding "[...]" is rich markup: typer's renderer swallowed "[default: ...]"."""
    result = CliRunner().invoke(app, [name, "--help"], env={"COLUMNS": "250", "NO_COLOR": "1"})
    assert result.exit_code == 0, result.output
    shown = re.sub(r"\s+", " ", result.output)
    for param in get_command(app).commands[name].params:  # type: ignore[attr-defined]
        help_text = getattr(param, "help", None) or ""
        assert "[" not in help_text, f"{name} {param.name}: {help_text!r} (use show_default=...)"
        if isinstance(getattr(param, "show_default", None), str):
            assert f"[default: ({param.show_default})]" in shown, (name, param.name)


def test_index_help_names_the_defaults_it_used_to_lose():
    result = CliRunner().invoke(app, ["index", "--help"], env={"COLUMNS": "250", "NO_COLOR": "1"})
    text = re.sub(r"\s+", " ", result.output)
    for default in ("indexes/<corpus name>", "the offline all-MiniLM-L6-v2", "id, else _id", "64, or the model's smallest trained dim"):
        assert f"[default: ({default})]" in text
