"""Query encoders stored with an index: trained by `funnel train --query-encoder`, named by plans,
searched with the documents' vectors untouched, reported by `funnel eval`, checked like every file."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from funnel.cli import app
from funnel.errors import IndexFormatError, InputError
from funnel.indexes.index import Index
from funnel.indexes.manifest import read_manifest
from funnel.indexes.query_encoders import open_query_encoder, store_query_encoder
from funnel.retriever import Retriever
from funnel.search.plan import Plan
from funnel.search.run import run_funnel

QUERY = "play a puzzle game over the network"
NAME = "layers-1"


def cli(*args: str):
    """The command in this process (its errors come back as exceptions, see ``funnel``)."""
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "250", "NO_COLOR": "1"})


def funnel(*args: str) -> subprocess.CompletedProcess[str]:
    """The command as a user runs it: its errors are one line and exit code 2."""
    return subprocess.run([sys.executable, "-m", "funnel", *args], capture_output=True, text=True, timeout=300, env=os.environ)


def assert_one_line_error(result: subprocess.CompletedProcess[str], message: str) -> None:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and message in lines[0], result.stderr[-2000:]


@pytest.fixture(scope="module")
def student_index(sample_index, tmp_path_factory) -> Path:
    """The debian-300 index with a 1-layer query encoder, trained on spans of its documents for
    one epoch (a few steps: enough to differ from the model, not to be good). Read-only."""
    path = tmp_path_factory.mktemp("students") / "debian-300"
    shutil.copytree(sample_index, path)
    result = cli("train", "--query-encoder", "layers:1", "--index", str(path), "--epochs", "1", "--quiet")
    assert result.exit_code == 0, result.output
    assert f"query encoder '{NAME}'" in result.output and f"--stages {NAME}:full:10" in result.output
    return path


def exact_top(index: Index, vectors: np.ndarray, k: int) -> list[list[str]]:
    documents = index.to_model_basis(index.all_vectors())  # the model's own vectors, as the index built them
    ids = index.ids()
    return [[ids[p] for p in np.argsort(-row, kind="stable")[:k]] for row in vectors @ documents.T]


def test_a_stored_query_encoder_runs_the_search_and_the_documents_keep_the_models_vectors(student_index):
    index = Index.load(student_index)
    before = read_manifest(student_index)
    entry = before.query_encoder(NAME)
    assert entry is not None and entry.kind == "layers-1" and (student_index / entry.folder).is_dir()
    assert 0 < entry.training["held_out_cosine"] < 1 and entry.training["steps"] > 0
    student = open_query_encoder(index, NAME)
    retriever = Retriever.load(student_index)
    hits = retriever.search(QUERY, k=5, stages=f"{NAME}:full:5")
    assert [hit.id for hit in hits] == exact_top(index, student.encode([QUERY]), 5)[0]
    model = retriever.search(QUERY, k=5, stages="full:5")
    assert [hit.score for hit in hits] != [hit.score for hit in model], "the student's vector, not the model's, scored the documents"


def test_a_two_stage_plan_on_the_student_compiles_to_the_same_ranking(student_index):
    index = Index.load(student_index)
    vectors = {NAME: open_query_encoder(index, NAME).encode([QUERY, "a library for xml"])}
    plan = Plan.parse(f"{NAME}:64:100,{NAME}:full:5")
    compiled = run_funnel(index, vectors, plan, 5, compiled=True)
    stages = run_funnel(index, vectors, plan, 5, compiled=False)
    np.testing.assert_array_equal(compiled.positions, stages.positions)
    # float16 precision: the compiled plan's copy of the rows is rounded in the model's basis
    np.testing.assert_allclose(compiled.scores, stages.scores, atol=1e-4)
    # Ready vectors must name the encoder: the model's vectors are not the student's.
    with pytest.raises(InputError, match="query encoder 'layers-1'"):
        run_funnel(index, vectors[NAME], plan, 5)


def test_a_plan_may_shortlist_with_the_student_and_rescore_with_the_model(student_index):
    retriever = Retriever.load(student_index)
    traced = retriever.search_batch_traced([QUERY], k=5, stages=f"{NAME}:64:100,full:5")
    assert len(traced.hits[0]) == 5 and traced.trace[0].encode_seconds > 0 and traced.trace[1].encode_seconds > 0
    only_student = retriever.search_batch_traced([QUERY], k=5, stages=f"{NAME}:64:100,{NAME}:full:5")
    assert only_student.trace[1].encode_seconds == 0, "the student encodes once per search"


def test_a_student_plan_searches_without_torch(student_index):
    script = (
        "import sys, json; from funnel import Retriever;"
        f"hits = Retriever.load({str(student_index)!r}).search({QUERY!r}, k=3, stages={NAME + ':64:50,' + NAME + ':full:3'!r});"
        "print(json.dumps([len(hits), [m for m in ('torch', 'sentence_transformers') if m in sys.modules]]))"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=os.environ)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout) == [3, []]


@pytest.mark.parametrize(
    ("stages", "message"),
    [
        ("nope:full:5", "no query encoder named 'nope' (it has: layers-1)"),
        ("Nope:full:5", "no query encoder named 'nope'"),
        ("full:64:100,full:5", "is not a query encoder name"),
        ("bm25:full:5", "is not a query encoder name"),
        ("x_y:full:5", "is not a query encoder name"),
    ],
)
def test_a_plan_naming_an_encoder_the_index_lacks_is_one_clear_line(student_index, stages, message):
    assert_one_line_error(funnel("search", str(student_index), QUERY, "--stages", stages), message)


def test_funnel_info_and_eval_report_the_student_beside_the_model(student_index, data_dir, tmp_path):
    info = json.loads(cli("info", str(student_index), "--json").output)
    assert [entry["name"] for entry in info["query_encoders"]] == [NAME]
    assert "text_files" not in info["query_encoders"][0], "no local paths in what a server may show"
    debian = data_dir / "debian"
    out = tmp_path / "eval"
    result = cli(
        "eval", "--index", str(student_index), "--queries", str(debian / "queries.jsonl"), "--qrels", str(debian / "qrels" / "test.tsv"),
        "--stages", f"{NAME}:64:100,{NAME}:full:10", "--encode-sample", "5", "--repeats", "1", "--no-plot", "-o", str(out), "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    rows = {row["name"]: row for row in report["rows"]}
    assert {"exact", f"{NAME}:64:100,{NAME}:full:10", f"{NAME}:full:100"} <= rows.keys()
    student_ms = report["encoding"]["students"][NAME]
    assert student_ms > 0 and rows[f"{NAME}:full:100"]["encode_ms"] == pytest.approx(student_ms)
    assert rows["exact"]["encode_ms"] == pytest.approx(report["encoding"]["layer_ms"]["6"])
    assert rows[f"{NAME}:full:100"]["exact_kept"] < 1.0, "the student's queries rank on their own"


def test_a_name_is_replaced_only_when_asked_and_the_old_files_go(student_index, tmp_path):
    path = tmp_path / "index"
    shutil.copytree(student_index, path)
    old = read_manifest(path).query_encoder(NAME)
    assert old is not None
    refused = funnel("train", "--query-encoder", "layers:1", "--index", str(path), "--epochs", "1", "--quiet")
    assert_one_line_error(refused, "already has a query encoder named 'layers-1'")
    assert read_manifest(path).query_encoder(NAME) == old, "a refused run changes nothing"

    def copy_of_old(folder: Path) -> None:
        shutil.copytree(path / old.folder, folder)

    replaced = store_query_encoder(path, NAME, "layers-1", copy_of_old, {"note": "copy"}, overwrite=True)
    entry = replaced.query_encoder(NAME)
    assert entry is not None and entry.folder != old.folder and len(replaced.query_encoders) == 1
    store_query_encoder(path, "second", "layers-1", copy_of_old, {}, overwrite=False)  # the next change collects the garbage
    assert not (path / old.folder).exists() and (path / entry.folder).is_dir()
    assert Retriever.load(path).search(QUERY, k=3, stages="second:full:3")


def test_a_store_that_fails_leaves_the_index_as_it_was(student_index, tmp_path):
    path = tmp_path / "index"
    shutil.copytree(student_index, path)
    before = (path / "manifest.json").read_bytes()

    def half_written(folder: Path) -> None:
        folder.mkdir()
        (folder / "model.onnx").write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        store_query_encoder(path, "broken", "layers-1", half_written, {})
    assert (path / "manifest.json").read_bytes() == before
    assert Index.load(path).manifest.query_encoder("broken") is None
    store_query_encoder(
        path, "fine", "layers-1", lambda folder: shutil.copytree(path / read_manifest(path).query_encoders[0].folder, folder), {}
    )
    assert not [p for p in path.iterdir() if p.name.startswith("query-broken")], "the half-written folder was collected"


def test_a_damaged_student_is_refused_not_used(student_index, tmp_path):
    path = tmp_path / "index"
    shutil.copytree(student_index, path)
    entry = read_manifest(path).query_encoder(NAME)
    assert entry is not None
    graph = path / entry.folder / "model.onnx"
    data = bytearray(graph.read_bytes())
    data[len(data) // 2] ^= 0xFF  # the middle: past the sampled check, not past the full one
    graph.write_bytes(bytes(data))
    with pytest.raises(IndexFormatError, match="does not match its checksum"):
        Retriever.load(path).search(QUERY, k=3, stages=f"{NAME}:full:3")
    verified = funnel("verify", str(path))
    assert verified.returncode != 0 and "model.onnx does not match its checksum" in verified.stderr
    assert Retriever.load(path).search(QUERY, k=3, stages="full:3"), "the model's own plans still run"


def test_changes_to_the_documents_keep_the_student(student_index, tmp_path):
    path = tmp_path / "index"
    shutil.copytree(student_index, path)
    retriever = Retriever.load(path)
    first = retriever.search(QUERY, k=3, stages=f"{NAME}:full:3")[0].id
    retriever.delete([first])
    retriever.compact()
    assert read_manifest(path).query_encoder(NAME) is not None
    assert first not in [hit.id for hit in retriever.search(QUERY, k=3, stages=f"{NAME}:full:3")]


def test_a_static_student_encodes_on_numpy(sample_index, tmp_path):
    path = tmp_path / "index"
    shutil.copytree(sample_index, path)
    texts = tmp_path / "summaries.txt"
    texts.write_text("\n".join(f"tool number {i} for the network" for i in range(50)) + "\n")
    result = cli(
        "train", "--query-encoder", "static", "--index", str(path), str(texts), "--epochs", "1", "--max-texts", "800", "--quiet",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    entry = read_manifest(path).query_encoder("static")
    assert entry is not None and entry.kind == "static" and entry.training["texts"] == 300
    from funnel.encoders.static_engine import StaticEncoder

    student = open_query_encoder(Index.load(path), "static")
    assert isinstance(student, StaticEncoder)
    assert entry.training["student_ms"] < entry.training["model_ms"]
    assert Retriever.load(path).search(QUERY, k=3, stages="static:64:100,static:full:3")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--query-encoder", "static"], "give --index INDEX"),
        (["--query-encoder", "layers:x", "--index", "IDX"], "is not one funnel trains"),
        (["--query-encoder", "layers:6", "--index", "IDX"], "a student cut from it keeps fewer"),
        (["--query-encoder", "static", "--index", "IDX", "--name", "full"], "is not a query encoder name"),
        (["--query-encoder", "static", "--index", "IDX", "missing.txt"], "missing.txt is not a file of texts"),
        ([], "give training data and --output DIR"),
    ],
)
def test_bad_query_encoder_runs_fail_before_training_with_one_line(student_index, tmp_path, args, message):
    path = tmp_path / "index"
    shutil.copytree(student_index, path)
    before = (path / "manifest.json").read_bytes()
    assert_one_line_error(funnel("train", *[str(path) if arg == "IDX" else arg for arg in args], "--quiet"), message)
    assert (path / "manifest.json").read_bytes() == before


def test_spans_know_their_document_and_a_ranked_student_trains(sample_index, tmp_path):
    from funnel.training.query_encoder import QueryEncoderConfig, training_texts

    index = Index.load(sample_index)
    texts_file = tmp_path / "t.txt"
    texts_file.write_text("a tool for the network\nplay chess\n")
    texts, sources = training_texts(index, QueryEncoderConfig(index=sample_index, texts=(texts_file,), spans_per_document=1))
    assert len(texts) == len(sources) and (sources == -1).sum() == 2
    bodies = {int(p): doc["text"] for p, doc in zip(index.live_positions(), index.documents(list(index.live_positions())))}
    for text, source in list(zip(texts, sources))[:30]:
        assert source == -1 or text.split()[-1] in (bodies[int(source)] + " " + str(index.documents([int(source)])[0]["title"]))
    path = tmp_path / "index"
    shutil.copytree(sample_index, path)
    result = cli(
        "train", "--query-encoder", "layers:1", "--index", str(path), "--epochs", "1", "--rank-weight", "0.5", "--name", "ranked", "--quiet"
    )
    assert result.exit_code == 0, result.output
    entry = read_manifest(path).query_encoder("ranked")
    assert entry is not None and entry.training["rank_weight"] == 0.5
