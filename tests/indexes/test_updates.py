"""add, delete and compact: ids stay unique, deleted documents never come back, searches keep k
results, old files go only when no manifest needs them, and one writer at a time."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import assert_same_ranking, documents
from index_helpers import unit_rows

from funnel.errors import InputError
from funnel.indexes.index import Index
from funnel.indexes.lock import IndexBusyError, writer_lock
from funnel.indexes.manifest import read_manifest
from funnel.indexes.updates import add_documents, compact_index, delete_documents
from funnel.indexes.verify import verify_index
from funnel.search.plan import Plan
from funnel.search.run import run_funnel

REPO = Path(__file__).resolve().parents[2]
PLAN = Plan.two_stage(64, 40, 10)


def exact_live(index: Index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Reference: exhaustive full-dim (scores, positions) over live documents only."""
    live = index.live_positions()
    scores = queries @ index.vectors(live).T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, axis=1), live[order]


def search_ids(index: Index, queries: np.ndarray, stages=PLAN, k: int = 10) -> list[list[str]]:
    result = run_funnel(index, queries, stages, k)
    ids = index.ids()
    return [[ids[p] for p in row if p >= 0] for row in result.positions]


def test_add_then_search_finds_new_documents(index_copy, query_vectors):
    before = Index.load(index_copy)
    add_documents(index_copy, [(documents(len(query_vectors), 1000), query_vectors)])
    after = Index.load(index_copy)
    assert (after.count, after.rows, len(after.segments), after.version) == (170, 170, 2, before.version + 1)
    # Each query's own vector is now a document: it must come first.
    assert [row[0] for row in search_ids(after, query_vectors)] == [f"doc-{1000 + i}" for i in range(len(query_vectors))]
    assert before.count == 150, "a loaded version does not change under a writer"
    assert verify_index(index_copy).ok


def test_add_refuses_ids_already_in_the_index_or_repeated(index_copy):
    existing = Index.load(index_copy).ids()[7]
    clash = pa.RecordBatch.from_pylist([{"id": existing, "title": None, "text": "x", "metadata": None}], schema=documents(1).schema)
    with pytest.raises(InputError, match=rf"id '{existing}' is already in the index: ids must be unique"):
        add_documents(index_copy, [(clash, unit_rows(1))])
    with pytest.raises(InputError, match=r"id 'doc-0' appears twice in the documents to add"):
        add_documents(index_copy, [(documents(2), unit_rows(2)), (documents(2), unit_rows(2))])
    assert read_manifest(index_copy).generation == 0
    assert sorted(p.name for p in index_copy.iterdir()) == [".build.json", ".lock", "lexical-000000", "manifest.json", "seg-000000"], (
        "a failed add leaves nothing"
    )


def test_delete_hides_documents_and_keeps_k_results(index_copy, query_vectors):
    index = Index.load(index_copy)
    ids = index.ids()
    top = search_ids(index, query_vectors, Plan.two_stage(64, 10, 10))
    doomed = sorted({i for row in top for i in row[:5]})  # the best hits of every query
    assert delete_documents(index_copy, doomed) == len(doomed)
    after = Index.load(index_copy)
    assert after.count == 150 - len(doomed) and after.rows == 150
    # A shortlist of exactly 10 still yields 10 live results: deletions are over-fetched.
    for row in search_ids(after, query_vectors, Plan.two_stage(64, 10, 10)):
        assert len(row) == 10 and not set(row) & set(doomed)
    result = run_funnel(after, query_vectors, Plan.two_stage(64, 150, 10), 10)
    assert_same_ranking(result.scores, result.positions, *exact_live(after, query_vectors, 10))
    assert set(after.live_ids()) == set(ids) - set(doomed)


def test_delete_unknown_ids_deletes_nothing_unless_asked(index_copy):
    known = Index.load(index_copy).ids()[0]
    with pytest.raises(
        InputError, match=r"1 of the ids are not in the index \('nope'\): nothing deleted; check them or pass --ignore-missing"
    ):
        delete_documents(index_copy, [known, "nope"])
    assert Index.load(index_copy).count == 150
    assert delete_documents(index_copy, [known, "nope"], ignore_missing=True) == 1
    assert delete_documents(index_copy, [known], ignore_missing=True) == 0, "deleting twice is a no-op"


def test_deleted_id_can_be_added_again(index_copy, query_vectors):
    victim = Index.load(index_copy).ids()[5]
    delete_documents(index_copy, [victim])
    batch = pa.RecordBatch.from_pylist([{"id": victim, "title": None, "text": "new text", "metadata": None}], schema=documents(1).schema)
    add_documents(index_copy, [(batch, query_vectors[:1])])
    index = Index.load(index_copy)
    assert index.count == 150 and index.live_ids().count(victim) == 1
    [hit] = search_ids(index, query_vectors[:1], k=1)
    assert hit == [victim] and index.documents([index.rows - 1])[0]["text"] == "new text"


def test_compact_keeps_results_and_drops_deleted_rows(index_copy, query_vectors):
    add_documents(index_copy, [(documents(40, 500), unit_rows(40, seed=3))])
    doomed = Index.load(index_copy).ids()[::3]
    delete_documents(index_copy, doomed)
    before = Index.load(index_copy)
    expected = search_ids(before, query_vectors, Plan.two_stage(64, 190, 10))
    compact_index(index_copy)
    after = Index.load(index_copy)
    assert (after.count, after.rows, len(after.segments), after.manifest.tombstones) == (before.count, before.count, 1, ())
    assert search_ids(after, query_vectors, Plan.two_stage(64, 190, 10)) == expected
    assert after.live_ids() == before.live_ids()
    np.testing.assert_array_equal(after.all_vectors(), before.vectors(before.live_positions()))
    assert verify_index(index_copy).ok
    assert compact_index(index_copy).generation == after.version, "compacting a compact index changes nothing"


def test_old_files_go_one_change_later(index_copy):
    delete_documents(index_copy, [Index.load(index_copy).ids()[0]])
    compact_index(index_copy)  # needs seg-000001 only; seg-000000 and its tombstone are kept for readers of the last version
    names = sorted(p.name for p in index_copy.iterdir())
    assert "seg-000000" in names and "seg-000001" in names
    add_documents(index_copy, [(documents(3, 900), unit_rows(3))])
    names = sorted(p.name for p in index_copy.iterdir())
    assert names == [".build.json", ".lock", "lexical-000002", "lexical-000003", "manifest.json", "seg-000001", "seg-000002"]


def test_orphans_of_a_crashed_add_are_ignored_then_removed(index_copy):
    (index_copy / ".seg-000001.tmp").mkdir()
    (index_copy / "seg-000001").mkdir()  # renamed into place, but the manifest was never swapped
    assert Index.load(index_copy).count == 150
    manifest = add_documents(index_copy, [(documents(2, 900), unit_rows(2))])
    assert [s.name for s in manifest.segments] == ["seg-000000", "seg-000002"]
    assert not (index_copy / ".seg-000001.tmp").exists() and not (index_copy / "seg-000001").exists()


def test_one_writer_at_a_time(index_copy):
    with writer_lock(index_copy):
        with pytest.raises(IndexBusyError, match=r"another writer holds the lock on .*index \(.*\.lock\): wait for it to finish"):
            add_documents(index_copy, [(documents(1, 900), unit_rows(1))])
        with pytest.raises(IndexBusyError, match="another writer holds the lock"):
            delete_documents(index_copy, ["doc-1"], ignore_missing=True)
        with pytest.raises(IndexBusyError, match="another writer holds the lock"):
            compact_index(index_copy)
        assert Index.load(index_copy).count == 150, "readers never wait for the lock"
    add_documents(index_copy, [(documents(1, 900), unit_rows(1))])


def test_add_refuses_vectors_of_the_wrong_dim(index_copy):
    with pytest.raises(ValueError, match="vectors of shape"):
        add_documents(index_copy, [(documents(2, 900), unit_rows(2, dim=64))])


@pytest.mark.slow
def test_cli_add_delete_compact(tmp_path, cranfield_index, cranfield_docs):
    import shutil

    index = tmp_path / "cli"
    shutil.copytree(cranfield_index, index)
    extra = tmp_path / "more.parquet"
    pq.write_table(pa.table({"id": ["new-1", "new-2"], "text": ["supersonic flow over a wedge", "boundary layer transition"]}), extra)
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}

    def funnel(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "funnel", *args], env=env, capture_output=True, text=True, timeout=300)

    added = funnel("add", str(index), str(extra), "--quiet")
    assert added.returncode == 0 and "added 2 documents" in added.stdout, added.stderr[-2000:]
    deleted = funnel("delete", str(index), "--ids", f"new-1,{cranfield_docs[0]['_id']}")
    assert deleted.returncode == 0 and "deleted 2 documents" in deleted.stdout and "150 remain" in deleted.stdout
    compacted = funnel("compact", str(index))
    assert compacted.returncode == 0 and "150 documents in 1 segment, 2 deleted rows dropped" in compacted.stdout
    assert sorted(Index.load(index).ids()) == sorted([d["_id"] for d in cranfield_docs[1:]] + ["new-2"])
