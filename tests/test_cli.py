"""The `funnel` command as a user runs it: a subprocess, exit codes, one-line errors."""

import json
import os
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import SAMPLE


def funnel(*args, stdin=None, cwd=None):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "funnel", *map(str, args)], capture_output=True, text=True, input=stdin, env=env, cwd=cwd, timeout=600
    )


def assert_one_line_error(result, pattern):
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert pattern in lines[0]


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory):
    table = pq.read_table(SAMPLE).slice(0, 40)
    path = tmp_path_factory.mktemp("cli") / "debian-40.parquet"
    pq.write_table(table, path)
    return path


@pytest.fixture(scope="module")
def built(tmp_path_factory, small_corpus):
    """`funnel index --json` of the 40 documents: (index folder, the summary it printed). Read-only."""
    folder = tmp_path_factory.mktemp("cli-index") / "idx"
    result = funnel("index", small_corpus, "-o", folder, "--json")
    assert result.returncode == 0, result.stderr
    return folder, json.loads(result.stdout)


def test_index_search_and_info_end_to_end(built):
    index, summary = built
    assert summary["documents"] == 40 and summary["shortlists"] == [{"dim": 64, "kind": "flat"}]
    assert summary["query_encoder"] == "onnx"

    found = funnel("search", index, "a game of strategy", "-k", "3", "--json")
    assert found.returncode == 0, found.stderr
    hits = json.loads(found.stdout)["hits"]
    assert len(hits) == 3 and hits[0]["score"] >= hits[1]["score"] and hits[0]["metadata"]["source"] == "debian-12-bookworm"

    many = funnel("search", index, "--queries", "-", "-k", "2", "--json", stdin="compression\n\nfonts\n")
    assert [len(row["hits"]) for row in json.loads(many.stdout)] == [2, 2]

    text = funnel("search", index, "fonts", "--stages", "64:20,full:2")  # k from the last stage
    assert text.returncode == 0 and text.stdout.count("\n") == 2 and text.stdout.lstrip().startswith("1.")

    info = json.loads(funnel("info", index, "--json").stdout)
    from funnel.indexes.manifest import FORMAT_VERSION

    # 40 documents are too few to measure whether a rotation helps: auto keeps the model's order,
    # and an index without a stored rotation keeps the format older funnels read.
    assert info["documents"] == 40 and info["format_version"] == FORMAT_VERSION
    assert info["rotation"]["requested"] == "auto" and info["rotation"]["by_depth"] == {"full": "none"}


def test_missing_corpus_file(tmp_path):
    result = funnel("index", tmp_path / "nope.parquet", "-o", tmp_path / "idx")
    assert_one_line_error(result, "nope.parquet does not exist")
    assert not (tmp_path / "idx").exists()


def test_missing_text_column_lists_columns(tmp_path):
    pq.write_table(pa.table({"id": ["a"], "body": ["x"]}), tmp_path / "c.parquet")
    result = funnel("index", tmp_path / "c.parquet", "-o", tmp_path / "idx")
    assert_one_line_error(result, "has no text column; its columns are: id, body")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.parquet"], "nothing half-written"


def test_not_an_index_and_newer_format(tmp_path):
    assert_one_line_error(funnel("search", tmp_path, "query"), "is not a funnel index")
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "funnel-index", "format_version": 99}))
    assert_one_line_error(funnel("info", tmp_path), "newer than this funnel reads")


def test_empty_query_and_bad_stages(built):
    index, _ = built
    assert_one_line_error(funnel("search", index, ""), "query 1 is empty")
    assert_one_line_error(funnel("search", index, "x", "--stages", "64:x"), "is not DIM:CANDIDATES")


def test_help_is_quick_and_lists_commands():
    result = funnel("--help")
    assert result.returncode == 0 and "index" in result.stdout and "search" in result.stdout
    check = subprocess.run(
        [sys.executable, "-c", "import funnel.cli, sys; print('torch' in sys.modules, 'faiss' in sys.modules)"],
        capture_output=True,
        text=True,
    )
    assert check.stdout.strip() == "False False", "the CLI must not import torch or faiss to show help"


def test_index_with_layers_and_search_with_layered_stages(tmp_path, small_corpus):
    built = funnel("index", small_corpus, "-o", tmp_path / "idx", "--layers", "2", "--json")
    assert built.returncode == 0, built.stderr
    assert json.loads(built.stdout)["layers"] == [2]
    found = funnel("search", tmp_path / "idx", "a game of strategy", "--stages", "2:64:20,6:full:3", "--json")
    assert found.returncode == 0, found.stderr
    assert len(json.loads(found.stdout)["hits"]) == 3
    info = json.loads(funnel("info", tmp_path / "idx", "--json").stdout)
    assert (info["layers"], info["depth"]) == ([2], 6)
    assert_one_line_error(funnel("search", tmp_path / "idx", "chess", "--stages", "3:64:20,full:3"), "not of layer 3")
    assert_one_line_error(funnel("index", small_corpus, "-o", tmp_path / "bad", "--layers", "9"), "do not exist in this 6-layer model")
