"""Two-stage plans run as one FAISS call (IndexRefine) rank as the Python stages do, and only
where they apply."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import assert_same_ranking, vector_index

from funnel.indexes.builder import IndexConfig
from funnel.indexes.index import Index
from funnel.indexes.shortlist import make_spec
from funnel.search.exact import exact_search
from funnel.search.plan import Plan
from funnel.search.run import run_funnel, view_state

KINDS = ("flat", "hnsw", "sq8", "hnsw-sq8", "ivf", "pq-fastscan", "ivf-pq-fastscan", "opq-fastscan")


@pytest.fixture(scope="module")
def vectors() -> np.ndarray:
    rng = np.random.default_rng(7)
    return rng.normal(size=(1500, 64)) * np.linspace(2.0, 0.3, 64)


@pytest.fixture(scope="module")
def queries() -> np.ndarray:
    rows = np.random.default_rng(8).normal(size=(25, 64)) * np.linspace(2.0, 0.3, 64)
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_compiled_plan_ranks_as_the_python_stages(tmp_path, vectors, queries, kind, dtype):
    index = Index.load(
        vector_index(tmp_path / kind, vectors, IndexConfig(shortlists=(make_spec(16, kind),), vector_dtype=dtype, rotation="pca"))
    )
    stages = Plan.parse("16:120,full:20")
    compiled = run_funnel(index, queries, stages, 10)
    assert view_state(index).compiled, "the plan should have run compiled"
    python = run_funnel(index, queries, stages, 10, compiled=False)
    assert_same_ranking(compiled.scores, compiled.positions, python.scores, python.positions, tolerance=1e-3)
    assert [t.stage for t in compiled.trace] == list(stages) and compiled.trace[1].scored == 120


def test_compiled_plan_matches_exact_search_when_the_shortlist_is_everything(tmp_path, vectors, queries):
    index = Index.load(vector_index(tmp_path / "all", vectors, IndexConfig(shortlists=(make_spec(16),))))
    found = run_funnel(index, queries, Plan.parse(f"16:{len(vectors)},full:10"), 10)
    scores, positions = exact_search(index, queries, 10)
    assert view_state(index).compiled
    assert_same_ranking(found.scores, found.positions, scores, positions, tolerance=1e-3)


def test_other_plans_and_deleted_rows_run_the_python_stages(tmp_path, vectors, queries):
    from funnel.indexes.updates import delete_documents

    path = vector_index(tmp_path / "index", vectors, IndexConfig(shortlists=(make_spec(16), make_spec(32))))
    index = Index.load(path)
    run_funnel(index, queries, Plan.parse("16:200,32:50,full:10"), 10)  # three stages
    run_funnel(index, queries, Plan.parse("16:200,32:10"), 10)  # last stage below full dims
    assert not view_state(index).compiled
    truth = run_funnel(index, queries, Plan.parse("16:200,full:10"), 10).positions
    assert view_state(index).compiled
    delete_documents(path, [f"doc-{int(truth[0, 0])}"])
    after = Index.load(path)
    found = run_funnel(after, queries, Plan.parse("16:200,full:10"), 10)
    assert not view_state(after).compiled and int(truth[0, 0]) not in found.positions[0]
