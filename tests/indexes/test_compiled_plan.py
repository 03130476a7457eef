"""Two-stage plans run as one FAISS call (IndexRefine) rank as the Python stages do, and only
where they apply."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import assert_same_ranking, documents, vector_index

from funnel.indexes.builder import IndexConfig
from funnel.indexes.index import Index
from funnel.indexes.shortlist import KIND_INFO, make_spec
from funnel.search.exact import exact_search
from funnel.search.plan import Plan
from funnel.search.run import run_funnel, view_state

KINDS = ("flat", "hnsw", "sq8", "hnsw-sq8", "ivf", "pq-fastscan", "ivf-pq-fastscan", "opq-fastscan", "model-pq-fastscan")


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
    dim = 64 if KIND_INFO[kind].model_basis else 16  # a model-basis kind codes whole vectors
    index = Index.load(
        vector_index(tmp_path / kind, vectors, IndexConfig(shortlists=(make_spec(dim, kind),), vector_dtype=dtype, rotation="pca"))
    )
    stages = Plan.parse(f"{dim}:120,full:20")
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


@pytest.mark.parametrize(
    ("kind", "dim", "rotation", "maps"),
    [("flat", 64, "none", 0), ("flat", 16, "none", 1), ("opq-fastscan", 64, "pca", 1), ("model-pq-fastscan", 64, "pca", 0)],
)
def test_the_query_goes_through_one_linear_map_at_most(tmp_path, vectors, queries, kind, dim, rotation, maps):
    """A compiled plan takes the model's query: the rotation into the stored basis, the cut to the
    shortlist's dims and OPQ's own rotation are one matrix product in FAISS (none where the
    shortlist takes the model's vector as it is), and it still ranks as the Python stages do."""
    import faiss

    index = Index.load(vector_index(tmp_path / kind, vectors, IndexConfig(shortlists=(make_spec(dim, kind),), rotation=rotation)))
    assert (index.rotation() is not None) == (rotation == "pca")
    plan = Plan.parse(f"{dim}:200,full:10")
    found = run_funnel(index, queries, plan, 10)
    (compiled,) = view_state(index).compiled.values()
    base = faiss.downcast_index(compiled.refine.base_index)
    transforms = base.chain.size() if type(base).__name__ == "IndexPreTransform" else 0
    assert transforms == maps  # model-pq-fastscan: its way back to the model's basis meets the query's way in
    if maps:  # OPQ's rotation is folded in: what is left behind the map is the bare PQ
        assert type(faiss.downcast_index(base.index)).__name__ in {"IndexFlat", "IndexFlatIP", "IndexPQFastScan"}
    python = run_funnel(index, queries, plan, 10, compiled=False)
    assert_same_ranking(found.scores, found.positions, python.scores, python.positions, tolerance=1e-3)
    direct = compiled.search(np.ascontiguousarray(queries), 200, 10)  # the model's vectors, not rotated by the caller
    assert_same_ranking(*direct, python.scores, python.positions, tolerance=1e-3)


def test_a_compiled_plan_pads_what_the_index_cannot_fill(tmp_path, vectors, queries):
    index = Index.load(vector_index(tmp_path / "small", vectors[:6], IndexConfig(shortlists=(make_spec(16),), rotation="pca")))
    found = run_funnel(index, queries[:2], Plan.parse("16:10,full:10"), 10)
    assert view_state(index).compiled
    assert (found.positions[:, 6:] == -1).all() and np.isneginf(found.scores[:, 6:]).all()
    assert sorted(found.positions[0, :6]) == list(range(6)) and np.isfinite(found.scores[:, :6]).all()
    one = run_funnel(index, queries[:1], Plan.parse("16:10,full:10"), 10)
    np.testing.assert_array_equal(one.positions, found.positions[:1])
    assert np.isneginf(one.scores[0, 6:]).all()


def test_a_plan_follows_a_shortlist_replaced_in_memory(tmp_path, vectors, queries):
    """Index.add_shortlist swaps the shortlist a compiled plan wraps: the same plan and k, run
    again, search the new one (as benchmarks comparing kinds on one view do)."""
    index = Index.load(vector_index(tmp_path / "swap", vectors, IndexConfig(shortlists=(make_spec(16),), rotation="pca")))
    plan = Plan.parse("16:40,full:10")
    run_funnel(index, queries, plan, 10)
    index.add_shortlist(16, "pq-fastscan", pq_m=2)  # a coarse code: a different shortlist of 40
    found = run_funnel(index, queries, plan, 10)
    python = run_funnel(index, queries, plan, 10, compiled=False)
    assert_same_ranking(found.scores, found.positions, python.scores, python.positions, tolerance=1e-3)


def test_whether_a_plan_compiles_follows_a_shortlist_replaced_in_memory(tmp_path, vectors, queries):
    """A binary shortlist runs the Python stages; replacing it with a float one at the same dim
    makes the same plan and k compile (the recall-latency suite once timed a model-pq-fastscan
    plan on the Python stages because a binary family had checked that plan first), and back."""
    from funnel.search.run import view_state

    index = Index.load(vector_index(tmp_path / "swap", vectors, IndexConfig(shortlists=(make_spec(64, "binary"),), rotation="pca")))
    plan = Plan.parse("64:200,full:10")
    run_funnel(index, queries, plan, 10)
    assert view_state(index).checked[(plan, 10)] is None
    for kind in ("pq-fastscan", "binary", "flat"):
        index.add_shortlist(64, kind)
        found = run_funnel(index, queries, plan, 10)
        assert (view_state(index).checked[(plan, 10)] is None) == (kind == "binary")
        python = run_funnel(index, queries, plan, 10, compiled=False)
        assert_same_ranking(found.scores, found.positions, python.scores, python.positions, tolerance=1e-3)


def test_model_basis_codes_are_whole_vectors_and_survive_updates(tmp_path, vectors, queries):
    """model-pq-fastscan undoes the index's rotation in front of its codes: refused at a prefix
    (one line, before any work), and segments that add and compact write code the model's basis
    too, so the compiled plan still ranks as the Python stages on every segment."""
    import faiss

    from funnel.errors import InputError
    from funnel.indexes.updates import add_documents, compact_index

    with pytest.raises(InputError, match="codes whole vectors in the model's basis: build it at 64 dims, not 16"):
        vector_index(tmp_path / "prefix", vectors, IndexConfig(shortlists=(make_spec(16, "model-pq-fastscan"),), rotation="pca"))
    assert not (tmp_path / "prefix").exists()
    path = vector_index(tmp_path / "index", vectors[:1000], IndexConfig(shortlists=(make_spec(64, "model-pq-fastscan"),), rotation="pca"))
    extra = (vectors[1000:] / np.linalg.norm(vectors[1000:], axis=1, keepdims=True)).astype(np.float32)
    add_documents(path, [(documents(len(extra), 1000), extra)])
    plan = Plan.parse("64:200,full:10")
    two = Index.load(path)  # two segments: the Python stages, over the added segment's codes too
    assert len(two.segments) == 2
    for segment in two.segments:  # each segment's codes sit behind the way back to the model's basis
        undo = faiss.downcast_VectorTransform(faiss.downcast_index(segment.shortlists[64][1]).chain.at(0))
        np.testing.assert_allclose(faiss.vector_to_array(undo.A).reshape(64, 64), two.rotation(), atol=1e-6)
    _, exact_positions = exact_search(two, queries, 10)
    found = run_funnel(two, queries, plan, 10)
    assert np.mean([len(set(a) & set(b)) for a, b in zip(found.positions, exact_positions)]) >= 9.5
    compact_index(path)
    index = Index.load(path)
    assert len(index.segments) == 1 and index.count == len(vectors)
    found = run_funnel(index, queries, plan, 10)
    (compiled,) = view_state(index).compiled.values()
    assert type(faiss.downcast_index(compiled.refine.base_index)).__name__ == "IndexPQFastScan"  # no matrix product
    python = run_funnel(index, queries, plan, 10, compiled=False)
    assert_same_ranking(found.scores, found.positions, python.scores, python.positions, tolerance=1e-3)
    assert np.mean([len(set(a) & set(b)) for a, b in zip(found.positions, exact_positions)]) >= 9.5
