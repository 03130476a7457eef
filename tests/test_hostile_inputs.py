"""Hostile input, tried as a user would: every case gets one error line, a non-zero exit, and
changes nothing. The CLI cases run the real `funnel` command in a subprocess; the cases that
would need the model fail before it loads, so a wrong order shows up as a model error."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import SAMPLE, write_signed_manifest

from funnel.corpus import open_corpus
from funnel.errors import FunnelError, IndexFormatError, InputError
from funnel.indexes.builder import IndexConfig, build_index
from funnel.indexes.index import Index
from funnel.indexes.lock import LOCK_FILE, writer_lock
from funnel.indexes.manifest import MANIFEST_FILE
from funnel.indexes.updates import delete_documents
from funnel.retriever import Retriever

REPO = Path(__file__).resolve().parents[1]
MISSING_MODEL = "no-such-model-folder"  # any command that loads a model before its cheap checks fails on this


def funnel(*args: object, stdin: bytes | None = None, cwd: Path | None = None, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [*prefix, sys.executable, "-m", "funnel", *map(str, args)], capture_output=True, input=stdin, env=env, cwd=cwd, timeout=300
    )


def one_error_line(result: subprocess.CompletedProcess, *fragments: str) -> str:
    stderr = result.stderr.decode("utf-8", "replace")
    assert result.returncode == 2, (result.returncode, stderr[-2000:])
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr[-2000:]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every path below ``folder`` with its size and mtime: 'changes nothing' made checkable."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))}


@pytest.fixture(scope="module")
def sample_40(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("hostile") / "debian-40.parquet"
    pq.write_table(pq.read_table(SAMPLE).slice(0, 40), path)
    return path


@pytest.fixture(scope="module")
def built(tmp_path_factory, sample_40, encoder) -> Path:
    """A real 40-document index of the sample. Read-only: tests copy it."""
    return build_index(open_corpus(sample_40), encoder, tmp_path_factory.mktemp("hostile-index") / "idx", IndexConfig())


@pytest.fixture
def index_path(tmp_path, built) -> Path:
    path = tmp_path / "idx"
    shutil.copytree(built, path)
    return path


# 1. --overwrite never deletes what funnel did not create ----------------------------------------


def test_overwrite_refuses_the_folder_that_holds_the_corpus(tmp_path, sample_40):
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(sample_40, data / "corpus.parquet")
    (data / "notes.txt").write_text("mine")
    before = snapshot(data)
    result = funnel("index", "data/corpus.parquet", "-o", "data", "--overwrite", cwd=tmp_path)  # exactly as a user types it
    one_error_line(result, "data is a folder but not a funnel index: --overwrite replaces only an index")
    assert snapshot(data) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"], "no partial build left behind"


@pytest.mark.parametrize("target", [".", "elsewhere"])
def test_overwrite_refuses_any_folder_that_is_not_an_index(tmp_path, sample_40, target):
    work = tmp_path / "work"
    (work / "elsewhere").mkdir(parents=True)
    (work / "elsewhere" / "keep.txt").write_text("keep")
    before = snapshot(work)
    result = funnel("index", sample_40, "-o", target, "--overwrite", "--model", MISSING_MODEL, cwd=work)
    one_error_line(result, "but not a funnel index")
    assert snapshot(work) == before


def test_overwrite_refuses_a_foreign_manifest_and_an_index_holding_the_corpus(tmp_path, sample_40, built):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / MANIFEST_FILE).write_text(json.dumps({"name": "some other tool"}))
    one_error_line(funnel("index", sample_40, "-o", foreign, "--overwrite", "--model", MISSING_MODEL), "not a funnel index manifest")
    assert (foreign / MANIFEST_FILE).exists()
    inside = tmp_path / "idx"
    shutil.copytree(built, inside)
    shutil.copy(sample_40, inside / "corpus.parquet")
    one_error_line(funnel("index", inside / "corpus.parquet", "-o", inside, "--overwrite", "--model", MISSING_MODEL), "lies inside")
    assert (inside / "corpus.parquet").exists() and Index.load(inside).count == 40


def test_overwrite_refuses_files_and_paths_through_files(tmp_path, sample_40):
    a_file = tmp_path / "file.txt"
    a_file.write_text("precious")
    one_error_line(funnel("index", sample_40, "-o", a_file, "--overwrite", "--model", MISSING_MODEL), "is a file but not a funnel index")
    one_error_line(funnel("index", sample_40, "-o", a_file / "x", "--model", MISSING_MODEL), f"{a_file} is a file, not a folder")
    assert a_file.read_text() == "precious"


def test_overwrite_replaces_an_index(tmp_path, sample_40, built, encoder):
    path = tmp_path / "idx"
    shutil.copytree(built, path)
    small = tmp_path / "small.parquet"
    pq.write_table(pq.read_table(sample_40).slice(0, 5), small)
    build_index(open_corpus(small), encoder, path, IndexConfig(), overwrite=True)
    assert Index.load(path).count == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx", "small.parquet"]


# 3. the manifest is as readable as every other file ---------------------------------------------


def test_manifest_has_the_mode_of_the_other_files(index_path):
    delete_documents(index_path, ["0ad"], ignore_missing=True)
    documents = next(index_path.glob("seg-*/documents.arrow"))
    assert stat.S_IMODE((index_path / MANIFEST_FILE).stat().st_mode) == stat.S_IMODE(documents.stat().st_mode)
    assert stat.S_IMODE((index_path / MANIFEST_FILE).stat().st_mode) & 0o044, "group and others can read it"


# 4. one id rule, and a way to name any id --------------------------------------------------------


@pytest.mark.parametrize(
    ("bad_id", "why"),
    [
        (" padded ", "leading or trailing white space"),
        ("two\nlines", "control character"),
        (float("nan"), "is a float"),
        (True, "is a bool"),
        ([1, 2], "is a list"),
        ({"a": 1}, "is a dict"),
    ],
)
def test_ids_outside_the_rule_are_refused_with_the_row_named(tmp_path, bad_id, why):
    path = tmp_path / "corpus.jsonl"
    rows = [{"id": "fine", "text": "a document"}, {"id": bad_id, "text": "another document"}]
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    with pytest.raises(InputError, match=rf"row 1: .*{why}.*--skip-invalid"):
        open_corpus(path).validate()
    skipping = open_corpus(path, skip_invalid=True)
    assert skipping.validate() == 1 and sum(skipping.skipped.values()) == 1


def test_integer_ids_become_their_decimal_string(tmp_path):
    path = tmp_path / "corpus.parquet"
    pq.write_table(pa.table({"id": [7, 8], "text": ["seven", "eight"]}), path)
    assert [i for batch in open_corpus(path).batches() for i in batch.column("id").to_pylist()] == ["7", "8"]


def test_any_id_can_be_named_for_delete(tmp_path):
    """Ids the rule allows but a comma-separated list cannot name: --id takes one exactly, --ids-file any."""
    from funnel.corpus import DOCUMENT_SCHEMA
    from funnel.indexes.builder import write_index
    from funnel.vectors import normalize

    ids = ["a,b", "a", "b", 'quote"d', "ünï", "plain"]
    batch = pa.RecordBatch.from_arrays(
        [pa.array(ids), pa.array([None] * 6, pa.string()), pa.array([f"t{i}" for i in range(6)]), pa.array([None] * 6, pa.string())],
        schema=DOCUMENT_SCHEMA,
    )
    vectors = normalize(np.random.default_rng(0).normal(size=(6, 16))).astype(np.float32)
    path = write_index([(batch, vectors)], tmp_path / "idx", model="vectors-only", dim=16, config=IndexConfig(shortlists=()))
    assert funnel("delete", path, "--id", "a,b").returncode == 0
    assert sorted(Index.load(path).live_ids()) == sorted(ids[1:])
    listed = tmp_path / "ids.jsonl"
    listed.write_text('"quote\\"d"\n\n"\\u00fcn\\u00ef"\n')
    assert funnel("delete", path, "--ids-file", listed).returncode == 0
    assert sorted(Index.load(path).live_ids()) == ["a", "b", "plain"]
    assert funnel("delete", path, "--ids", " a , b ").returncode == 0  # ids hold no outer spaces, so --ids drops them
    assert Index.load(path).live_ids() == ["plain"]
    listed.write_text("plain\n")
    one_error_line(funnel("delete", path, "--ids-file", listed), "ids.jsonl:1: not a JSON string")
    assert Index.load(path).live_ids() == ["plain"]


def test_deleting_everything_does_not_suggest_compact(index_path):
    everything = Index.load(index_path).live_ids()
    result = funnel("delete", index_path, "--ids", ",".join(everything))
    assert result.returncode == 0
    assert b"compact" not in result.stderr and b"every document is deleted" in result.stderr


def test_delete_on_a_folder_that_is_not_an_index_leaves_nothing(tmp_path):
    folder = tmp_path / "plain"
    folder.mkdir()
    one_error_line(funnel("delete", folder, "--ids", "x"), "is not a funnel index")
    assert list(folder.iterdir()) == []


# 5. bad files and bad values: one line, never a traceback ---------------------------------------


def test_truncated_parquet_and_undecodable_jsonl(tmp_path, sample_40):
    truncated = tmp_path / "truncated.parquet"
    truncated.write_bytes(sample_40.read_bytes()[: sample_40.stat().st_size // 2])
    one_error_line(funnel("index", truncated, "-o", tmp_path / "a"), "is not a readable parquet file")
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes(b'{"id": "1", "text": "fine"}\n{"id": "2", "text": "caf\xe9"}\n')
    one_error_line(funnel("index", latin, "-o", tmp_path / "b"), "latin.jsonl line 2: not UTF-8")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latin.jsonl", "truncated.parquet"]


def test_binary_queries_from_a_file_stdin_or_an_argument(tmp_path, index_path):
    binary = tmp_path / "queries.bin"
    binary.write_bytes(bytes(range(256)))
    one_error_line(funnel("search", index_path, "--queries", binary, "--model", MISSING_MODEL), "is not UTF-8 text")
    one_error_line(
        funnel("search", index_path, "--queries", "-", "--model", MISSING_MODEL, stdin=b"\xff\xfe\x00bin"), "stdin are not UTF-8"
    )
    argument = os.fsdecode(b"caf\xe9")  # undecodable bytes on a command line arrive as lone surrogates
    one_error_line(funnel("search", index_path, argument, "--model", MISSING_MODEL), "query 1 is not valid UTF-8 text")


@pytest.mark.parametrize("command", ["search", "info", "verify"])
def test_a_file_where_an_index_folder_belongs(tmp_path, command):
    a_file = tmp_path / "index.txt"
    a_file.write_text("not an index")
    args = [command, a_file] + (["query"] if command == "search" else [])
    one_error_line(funnel(*args), "is a file, not an index folder")


def test_verify_catches_an_edited_shortlist_kind(index_path):
    manifest = json.loads((index_path / MANIFEST_FILE).read_text())
    manifest["shortlists"][0]["kind"] = "hnsw"
    write_signed_manifest(index_path, manifest)
    result = funnel("verify", index_path)
    assert result.returncode == 1 and b"Traceback" not in result.stderr
    assert b"which funnel does not write" in result.stderr
    manifest["shortlists"][0]["params"] = {"m": 32, "ef_construction": 80, "ef_search": 128}
    write_signed_manifest(index_path, manifest)
    result = funnel("verify", index_path)
    assert result.returncode == 1 and b"is a 64-dim IndexFlatIP, but the manifest says a 64-dim hnsw" in result.stderr


def _obeying_file_modes() -> tuple[str, ...]:
    """A command prefix under which file modes apply: root ignores them unless it runs without
    the capabilities that override them (setpriv, from util-linux)."""
    if os.geteuid() != 0:
        return ()
    setpriv = shutil.which("setpriv")
    assert setpriv, "running as root, the read-only test needs setpriv (util-linux) to give up CAP_DAC_OVERRIDE"
    return (setpriv, "--bounding-set=-dac_override,-dac_read_search,-fowner")


@pytest.mark.parametrize("command", [["delete", "--ids", "0ad"], ["compact"]])
def test_a_read_only_index_is_refused_in_one_line(tmp_path, built, command):
    path = tmp_path / "ro"
    shutil.copytree(built, path)
    (path / LOCK_FILE).unlink(missing_ok=True)
    for entry in [tmp_path, *path.rglob("*"), path]:
        entry.chmod(0o555 if entry.is_dir() else 0o444)
    before = snapshot(path)
    try:
        one_error_line(funnel(command[0], path, *command[1:], prefix=_obeying_file_modes()), "read-only")
    finally:
        for entry in [tmp_path, path, *path.rglob("*")]:
            entry.chmod(0o755 if entry.is_dir() else 0o644)
    assert snapshot(path) == before


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda r: r.search("query", k="5"), r"k must be a whole number, not '5' \(str\)"),
        (lambda r: r.search("query", k=2.5), r"k must be a whole number, not 2.5"),
        (lambda r: r.search("query", k=0), r"k must be at least 1"),
        (lambda r: r.search(123), r"query 1 is not a string \(int 123\)"),
        (lambda r: r.search_batch("one string"), r"search_batch takes a list of queries"),
        (lambda r: r.search_vectors(np.zeros((1, 2, 384)), 5), r"shape \(1, 2, 384\); this index wants \(queries, 384\)"),
        (lambda r: r.search_vectors(np.full((1, 384), np.nan), 5), r"query vector 1 holds NaN or infinite values"),
        (lambda r: r.search_vectors(np.zeros((1, 384)), "5"), r"k must be a whole number"),
    ],
)
def test_python_calls_with_bad_values(built, encoder, call, message):
    retriever = Retriever(Index.load(built), encoder)
    with pytest.raises(InputError, match=message):
        call(retriever)


# 6. cheap checks before the model loads ---------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-k", "0"], "k must be at least 1"),
        (["--stages", "64:10,full:20"], "a funnel only narrows"),
        (["--stages", "32:100,full:10"], "has shortlists at: 64"),
        (["--stages", "nonsense"], "is not DIM:CANDIDATES"),
    ],
)
def test_search_rejects_bad_options_before_loading_the_model(built, args, message):
    one_error_line(funnel("search", built, "a query", "--model", MISSING_MODEL, *args), message)


def test_add_checks_the_corpus_and_the_lock_before_the_model(tmp_path, index_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "x1", "text": ""}\n')
    one_error_line(funnel("add", index_path, bad, "--model", MISSING_MODEL), "the text is empty")
    good = tmp_path / "good.jsonl"
    good.write_text('{"id": "x2", "text": "a new package"}\n')
    with writer_lock(index_path):
        one_error_line(funnel("add", index_path, good, "--model", MISSING_MODEL), "another writer is changing")
    assert Index.load(index_path).count == 40


def test_load_of_a_missing_index_is_one_error(tmp_path):
    with pytest.raises(IndexFormatError, match="does not exist"):
        Index.load(tmp_path / "nothing")
    with pytest.raises(FunnelError):
        Retriever.load(tmp_path / "nothing")


# 2. readers never see an error because a writer is busy -----------------------------------------


def test_load_that_read_a_manifest_whose_files_are_gone_loads_the_new_version(index_path, monkeypatch):
    """The interleaving a fast writer causes: a reader reads the manifest, then two changes land
    (the second removes the files the first made garbage) before it opens the files, again and
    again under a writer that never pauses."""
    from funnel.indexes import index as index_module
    from funnel.indexes.manifest import read_manifest_stamped
    from funnel.indexes.updates import compact_index

    stale = read_manifest_stamped(index_path)
    delete_documents(index_path, ["0ad"], ignore_missing=True)
    compact_index(index_path)
    delete_documents(index_path, [Index.load(index_path).live_ids()[0]])  # the compacted-away segment is removed now
    assert not (index_path / stale[0].segments[0].name).exists()
    reads = iter([stale] * 8)  # the writer wins the race eight times in a row; the reader must not give up
    monkeypatch.setattr(index_module, "read_manifest_stamped", lambda folder: next(reads, None) or read_manifest_stamped(folder))
    loaded = Index.load(index_path)
    assert loaded.version == stale[0].generation + 3 and loaded.count == 38


def test_soak_one_writer_many_readers_no_errors_no_mixed_answers(tmp_path):
    """A short run of the soak benchmark (the committed figure is a minute): processes, real files."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.soak", "--seconds", "6", "--readers", "2"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    summary = json.loads(result.stdout[result.stdout.index("{") :])
    assert summary["errors"] == 0, summary["error_samples"]
    assert summary["mixed_answers"] == 0 and result.returncode == 0
    assert summary["writes"] >= 20 and summary["versions_seen_by_readers"] >= 5 and summary["answers"] >= 100
