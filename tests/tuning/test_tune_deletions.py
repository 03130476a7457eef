"""The tuner on an index with deleted rows: the same reference, queries and plan as on its
compacted copy (deleted rows are neither truth nor calibration queries)."""

from __future__ import annotations

import shutil

import numpy as np
from helpers import vector_index

from funnel.indexes.builder import IndexConfig
from funnel.indexes.index import Index
from funnel.indexes.shortlist import make_spec
from funnel.indexes.updates import compact_index, delete_documents
from funnel.search.exact import ExactReference
from funnel.search.run import compile_plans
from funnel.tuning import TuneOptions, tune

SCALE = np.exp(-np.arange(48) / 6.0)  # strongly nested: a short prefix finds the neighbours


def test_the_tuned_plan_with_deletions_equals_the_one_on_the_compacted_copy(tmp_path):
    rng = np.random.default_rng(7)
    # Large enough that a funnel beats exact search on the Python stages, which an index with
    # deletions runs (its compacted copy is kept on them too, so both face the same costs).
    vectors = rng.normal(size=(20_000, 48)) * SCALE
    path = vector_index(tmp_path / "index", vectors, IndexConfig(shortlists=(make_spec(8), make_spec(16))), batch=5000)
    # Delete the documents nearest to many others: the ones an exact reference with dead rows would rank first.
    hubs = np.argsort(-np.linalg.norm(vectors, axis=1))[:300]
    delete_documents(path, [f"doc-{int(i)}" for i in hubs])
    compacted = tmp_path / "compacted"
    shutil.copytree(path, compacted)
    compact_index(compacted)
    deleted, packed = Index.load(path), Index.load(compacted)
    compile_plans(packed, False)
    queries = (rng.normal(size=(40, 48)) * SCALE).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    ids_deleted, ids_packed = deleted.ids(), packed.ids()
    _, found_deleted = ExactReference(deleted).search(queries, 10)
    _, found_packed = ExactReference(packed).search(queries, 10)
    assert [[ids_deleted[p] for p in row] for row in found_deleted] == [[ids_packed[p] for p in row] for row in found_packed]
    options = TuneOptions(seed=3, timing_queries=5, calibration_size=200)
    on_deleted = tune(deleted, None, 0.9, 10, None, options)
    on_packed = tune(packed, None, 0.9, 10, None, options)
    assert on_deleted.stages == on_packed.stages and not on_deleted.is_exact
    assert on_deleted.chosen.recall_holdout == on_packed.chosen.recall_holdout
