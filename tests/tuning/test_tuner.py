"""The tuner: plans that meet the target on queries it never saw, reproducibly, exact when they must be."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import vector_index

from funnel.agreement import recall_against
from funnel.errors import InputError
from funnel.indexes.builder import IndexConfig
from funnel.indexes.index import Index
from funnel.indexes.shortlist import make_spec
from funnel.search.plan import Plan
from funnel.search.run import run_funnel
from funnel.tuning import TuneOptions, tune
from funnel.tuning.evidence import gather_evidence
from funnel.tuning.measure import TuningReference, run_plan
from funnel.tuning.search_space import nice_counts

DIM = 48
SCALE = np.linspace(2.0, 0.2, DIM)  # decaying variance per dim, like a nested embedding


def nested_vectors(rng: np.random.Generator, count: int) -> np.ndarray:
    return rng.normal(size=(count, DIM)) * SCALE


@pytest.fixture(scope="module")
def index(tmp_path_factory) -> Index:
    rng = np.random.default_rng(3)
    path = vector_index(
        tmp_path_factory.mktemp("tune") / "nested",
        nested_vectors(rng, 2000),
        IndexConfig(shortlists=(make_spec(8), make_spec(16))),
        batch=500,
    )
    return Index.load(path)


@pytest.fixture(scope="module")
def calibration() -> np.ndarray:
    return nested_vectors(np.random.default_rng(11), 300)


@pytest.fixture(scope="module")
def test_queries() -> np.ndarray:
    return nested_vectors(np.random.default_rng(12), 300)


@pytest.fixture(scope="module")
def tuned(index, calibration):
    return tune(index, None, 0.95, 10, calibration, TuneOptions(seed=5, timing_queries=10))


def test_tuned_plan_meets_the_target_on_unseen_queries(index, tuned, test_queries):
    assert not tuned.is_exact and tuned.notes == ()
    truth = TuningReference(index).search(test_queries.astype(np.float32) / np.linalg.norm(test_queries, axis=1, keepdims=True), 10)
    found = run_plan(index, test_queries / np.linalg.norm(test_queries, axis=1, keepdims=True), tuned.stages, 10)
    assert recall_against(found, truth).mean() >= 0.95
    # Given queries are the distribution served: no margin on top of the lower bound.
    assert tuned.chosen.recall_holdout >= 0.95 and tuned.recall_fit_lower >= 0.95
    assert tuned.selection.endswith("lower bound of fit-half recall ≥ 0.95")
    assert tuned.calibration == {"source": "given: 300 query vectors", "queries": 300, "fit": 150, "holdout": 150, "seed": 5}


def test_tuned_plan_is_cheaper_than_a_wide_enough_fixed_multiplier(tuned):
    names = [b.name for b in tuned.baselines]
    assert names == ["×4 rescore multiplier", "×10 rescore multiplier"]
    assert tuned.chosen.flops < tuned.exact.flops
    # A cheaper fixed multiplier at the same dim keeps fewer candidates, so it finds less.
    assert all(b.estimated_us >= tuned.chosen.estimated_us or b.recall_fit < tuned.chosen.recall_fit for b in tuned.baselines)


def test_an_explicit_margin_raises_the_bar(index, calibration, tuned):
    wider = tune(index, None, 0.95, 10, calibration, TuneOptions(seed=5, timing_queries=10, margin=0.0125))
    assert wider.selection.endswith("lower bound of fit-half recall ≥ 0.9625") and wider.recall_fit_lower >= 0.9625
    assert wider.chosen.estimated_us >= tuned.chosen.estimated_us


def test_same_seed_same_plan(index, calibration, tuned):
    again = tune(index, None, 0.95, 10, calibration, TuneOptions(seed=5, timing_queries=10))
    assert again.stages == tuned.stages
    assert again.chosen.recall_fit == tuned.chosen.recall_fit and again.chosen.recall_holdout == tuned.chosen.recall_holdout


def test_select_by_measured_ms_picks_a_timed_candidate(index, calibration):
    plan = tune(index, None, 0.9, 10, calibration[:60], TuneOptions(select="measured", measure=3, timing_queries=5, max_stages=2))
    assert plan.stages_text in {c.stages for c in plan.candidates}
    assert plan.selection.startswith("cheapest by measured ms/query")
    assert all(len(c.stages.split(",")) == 2 for c in plan.candidates)


def test_prefix_recall_matches_running_each_plan(index, calibration):
    queries = calibration[:40] / np.linalg.norm(calibration[:40], axis=1, keepdims=True)
    truth = TuningReference(index).search(queries, 10)
    prefixes = nice_counts(10, 400)
    gathered = gather_evidence(index, queries, truth, 8, 400, prefixes, [16, 32])
    evidence = gather_evidence(index, queries, truth, 8, 400, prefixes, [16, 32], corpus=index.all_vectors())
    for middle in (16, 32):
        np.testing.assert_array_equal(gathered.middle_rank[middle], evidence.middle_rank[middle])
    for n in (10, 50, 200, 400):
        measured = recall_against(run_plan(index, queries, Plan.parse(f"8:{n},full:10"), 10), truth)
        np.testing.assert_allclose(evidence.two_stage(n), measured)
    for p, n1 in enumerate(prefixes):
        if n1 in (100, 400):
            for middle, n2 in ((16, 30), (32, 50)):
                measured = recall_against(run_plan(index, queries, Plan.parse(f"8:{n1},{middle}:{n2},full:10"), 10), truth)
                np.testing.assert_allclose(evidence.three_stage(p, middle, n2), measured)


def test_tiny_index_gets_an_exact_plan_and_says_why(tmp_path):
    rng = np.random.default_rng(0)
    small = Index.load(vector_index(tmp_path / "tiny", nested_vectors(rng, 20), IndexConfig(shortlists=(make_spec(8),))))
    plan = tune(small, None, 0.9, 10, options=TuneOptions(timing_queries=5))
    assert plan.is_exact and plan.stages_text == "full:10"
    assert "only 20 documents" in plan.notes[0]
    assert plan.chosen.recall_holdout == 1.0
    assert plan.calibration["source"] == "corpus: sampled documents' own vectors (no model), each left out of its own query's results"


def test_target_one_is_exact(index, calibration):
    plan = tune(index, None, 1.0, 10, calibration[:20], TuneOptions(timing_queries=3))
    assert plan.is_exact and plan.stages_text == "full:10"
    assert "1.0 can only be promised by exact search" in plan.notes[0]
    assert plan.chosen.recall_holdout == 1.0


@pytest.mark.parametrize("target", [0, 1.5, -0.1])
def test_bad_targets(index, target):
    with pytest.raises(InputError, match=r"target recall must be above 0 and at most 1 \(e.g. 0.99\)"):
        tune(index, None, target, 10)


def test_bad_options(index):
    with pytest.raises(InputError, match="select must be one of estimate, measured"):
        TuneOptions(select="fast")
    with pytest.raises(InputError, match="no shortlist index"):
        tune(index, None, 0.9, 10, options=TuneOptions(dims=(12,), calibration_size=10))
    with pytest.raises(InputError, match="need a model"):
        tune(index, None, 0.9, 10, ["a query"])


def test_a_flat_full_dim_shortlist_wins_where_exact_search_is_cheapest(tmp_path, calibration):
    rng = np.random.default_rng(4)
    config = IndexConfig(shortlists=(make_spec(8), make_spec(DIM)))
    with_full = Index.load(vector_index(tmp_path / "full", nested_vectors(rng, 1000), config, batch=500))
    plan = tune(with_full, None, 0.95, 10, calibration[:80], TuneOptions(timing_queries=5))
    assert plan.stages_text == "full:10" and plan.chosen.recall_holdout == 1.0


def test_leaving_a_source_document_out_matches_an_index_without_it(tmp_path, index):
    from funnel.tuning.evidence import without

    assert without(np.array([[5, 3, 9], [1, 2, 4]]), np.array([3, 7]), 2).tolist() == [[5, 9], [1, 2]]
    assert index.rotation() is None, "auto keeps the order of vectors that already nest"
    vectors = index.all_vectors()
    sources = np.array([0, 7, 1999])
    queries = vectors[sources] + 0.05 * nested_vectors(np.random.default_rng(2), 3)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    stages = Plan.parse("8:60,16:20,full:10")
    left_out = run_plan(index, queries, stages, 10, sources)
    for row, source in enumerate(sources):
        rest = np.delete(np.arange(len(vectors)), source)
        # The vectors are as stored in an index that kept the model's order: keep it here too.
        smaller = Index.load(
            vector_index(tmp_path / f"minus-{source}", vectors[rest], IndexConfig(shortlists=(make_spec(8),), rotation="none"), batch=500)
        )
        found = run_plan(smaller, queries[row : row + 1], stages, 10)[0]
        np.testing.assert_array_equal(rest[found], left_out[row])
    truth = TuningReference(index).search(queries, 10, sources)
    assert not np.isin(sources, truth).any() and truth.shape == (3, 10)


@pytest.mark.parametrize("kind", ["sq8", "pq-fastscan", "hnsw-sq8"])
def test_quantized_shortlists_are_tuned_to_the_target_too(tmp_path, calibration, test_queries, kind):
    """The evidence comes from the quantized index itself, so its coarser ranking costs a longer
    shortlist, not recall."""
    vectors = nested_vectors(np.random.default_rng(3), 2000)
    quantized = Index.load(vector_index(tmp_path / kind, vectors, IndexConfig(shortlists=(make_spec(16, kind),)), batch=500))
    plan = tune(quantized, None, 0.95, 10, calibration, TuneOptions(seed=5, timing_queries=10, max_stages=2))
    assert plan.stages[0].dim == 16 and not plan.is_exact
    unit = test_queries / np.linalg.norm(test_queries, axis=1, keepdims=True)
    truth = TuningReference(quantized).search(unit.astype(np.float32), 10)
    assert recall_against(run_plan(quantized, unit, plan.stages, 10), truth).mean() >= 0.95


def test_the_exact_plan_is_one_full_dim_stage_on_any_index(tmp_path):
    """Before, an index without a flat shortlist got an exact plan that walked a whole graph
    (8:300,full:10); now every index scans its full vectors for full:k, equal to exact search."""
    from funnel.search.exact import exact_search
    from funnel.tuning.tuner import exact_stages

    vectors = nested_vectors(np.random.default_rng(4), 300)
    only_graph = Index.load(vector_index(tmp_path / "graph", vectors, IndexConfig(shortlists=(make_spec(8, "hnsw"),))))
    assert [str(s) for s in exact_stages(only_graph, 10)] == ["full:10"]
    queries = vectors[:5] / np.linalg.norm(vectors[:5], axis=1, keepdims=True)
    found = run_funnel(only_graph, queries.astype(np.float32), exact_stages(only_graph, 10), 10)
    scores, positions = exact_search(only_graph, queries.astype(np.float32), 10)
    np.testing.assert_array_equal(found.positions, positions)
    np.testing.assert_allclose(found.scores, scores, atol=1e-6)
