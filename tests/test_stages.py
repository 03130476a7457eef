import numpy as np
import pytest
from helpers import assert_same_ranking, vector_index
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from funnel.errors import InputError
from funnel.indexes.builder import IndexConfig
from funnel.indexes.index import Index, StoredQueries
from funnel.indexes.shortlist import make_spec
from funnel.search.exact import exact_search
from funnel.search.plan import Plan, Stage
from funnel.search.run import run_funnel
from funnel.vectors import truncate

stage_st = st.builds(
    Stage,
    dim=st.one_of(st.none(), st.integers(1, 4096)),
    candidates=st.integers(1, 10_000),
    layer=st.one_of(st.none(), st.integers(1, 48)),
)


@given(st.lists(stage_st, min_size=1, max_size=4))
def test_stages_round_trip_through_text(stages):
    assert Plan.parse(str(Plan.of(stages))) == tuple(stages)


def test_parse_examples():
    assert Plan.parse("64:200, 128:50,full:10") == (Stage(64, 200), Stage(128, 50), Stage(None, 10))
    assert Plan.parse("2:64:200") == (Stage(64, 200, layer=2),)


@pytest.mark.parametrize("text", ["64", "a:b", "1:2:3:4", "64:0", ","])
def test_bad_stage_text(text):
    with pytest.raises(InputError, match=r"stage|no stages|at least 1"):
        Plan.parse(text)


@pytest.fixture(scope="module")
def random_index(tmp_path_factory):
    rng = np.random.default_rng(7)
    # Decaying variance per dim, like a nested embedding: early dims carry most of the signal.
    vectors = rng.normal(size=(300, 48)) * np.linspace(2.0, 0.2, 48)
    config = IndexConfig(shortlists=(make_spec(8), make_spec(16, "hnsw"), make_spec(16 * 2, "binary")))
    return Index.load(vector_index(tmp_path_factory.mktemp("idx") / "random", vectors, config))


def test_shortlist_of_the_whole_corpus_is_exact_search(random_index):
    queries = np.random.default_rng(1).normal(size=(12, 48)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    result = run_funnel(random_index, queries, Plan.two_stage(8, random_index.count, 10), 10)
    assert_same_ranking(result.scores, result.positions, *exact_search(random_index, queries, 10))
    assert [t.kept for t in result.trace] == [300, 10]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_more_candidates_never_lose_recall_and_scores_are_exact(random_index, data):
    seed = data.draw(st.integers(0, 10_000))
    k = data.draw(st.integers(1, 20))
    small = data.draw(st.integers(k, 60))
    query = np.random.default_rng(seed).normal(size=(1, 48)).astype(np.float32)
    query /= np.linalg.norm(query)
    exact_scores, exact_positions = exact_search(random_index, query, k)
    narrow = run_funnel(random_index, query, Plan.two_stage(8, small, k), k)
    wide = run_funnel(random_index, query, Plan.two_stage(8, small * 4, k), k)
    truth = set(exact_positions[0])
    assert len(truth & set(wide.positions[0])) >= len(truth & set(narrow.positions[0])) - 1  # ties may swap one
    # Every final score is the exact full-dim score of that document: on the Python stages to
    # float32 precision, compiled to float16's (its copy of the rows is rounded in the model's basis).
    stages = run_funnel(random_index, query, Plan.two_stage(8, small, k), k, compiled=False)
    stored_query = random_index.stored_queries(query).vectors[0]
    for result, tolerance in ((stages, 1e-5), (narrow, 2e-4)):
        full = truncate(random_index.vectors(result.positions[0]), 48) @ stored_query
        np.testing.assert_allclose(result.scores[0], full, atol=tolerance)
    assert np.all(np.diff(narrow.scores[0]) <= 1e-7), "results come best first"


def test_three_stage_chain_and_other_shortlist_kinds(random_index):
    queries = np.random.default_rng(3).normal(size=(5, 48)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    exact = exact_search(random_index, queries, 5)
    for first in (Stage(8, 300), Stage(16, 300), Stage(32, 300)):  # flat, hnsw, binary
        result = run_funnel(random_index, queries, (first, Stage(24, 50), Stage(None, 5)), 5)
        assert_same_ranking(result.scores, result.positions, *exact)
        assert [t.dim for t in result.trace] == [first.dim, 24, 48]


def test_fewer_documents_than_candidates_pads_nothing_into_results(tmp_path):
    vectors = np.random.default_rng(0).normal(size=(7, 16))
    index = Index.load(vector_index(tmp_path / "tiny", vectors, IndexConfig(shortlists=(make_spec(8),))))
    result = run_funnel(
        index, vectors[:2].astype(np.float32) / np.linalg.norm(vectors[:2], axis=1, keepdims=True), Plan.two_stage(8, 50, 10), 10
    )
    assert result.positions.shape == (2, 7)
    assert result.positions[0, 0] == 0 and result.positions[1, 0] == 1


@pytest.mark.parametrize(
    "stages, k, message",
    [
        ((Stage(12, 100), Stage(None, 10)), 10, r"first stage scores at 12 dims but this index has shortlists at: 8, 16, 32"),
        ((Stage(8, 50), Stage(None, 100)), 10, r"keeps more candidates than stage 8:50 passes on"),
        ((Stage(8, 50), Stage(None, 5)), 10, r"k=10 but the last stage keeps only 5"),
        ((Stage(8, 50), Stage(64, 10)), 10, r"asks for 64 dims but the index has 48"),
        ((Stage(8, 50, layer=2), Stage(None, 10)), 10, r"not of layer 2: rebuild it with --layers 2"),
    ],
)
def test_plans_that_cannot_run(random_index, stages, k, message):
    with pytest.raises(InputError, match=message):
        run_funnel(random_index, np.ones((1, 48), np.float32), stages, k)


def test_exact_search_never_returns_deleted_rows(tmp_path):
    from funnel.indexes.updates import delete_documents

    vectors = np.random.default_rng(5).normal(size=(40, 16))
    path = vector_index(tmp_path / "idx", vectors, IndexConfig(shortlists=(make_spec(8),)))
    query = (vectors[:1] / np.linalg.norm(vectors[:1])).astype(np.float32)
    _, before = exact_search(Index.load(path), query, 5)
    assert before[0, 0] == 0
    delete_documents(path, ["doc-0"])
    index = Index.load(path)
    scores, after = exact_search(index, query, 5)
    assert 0 not in after[0] and list(after[0]) == list(before[0, 1:]) + [after[0, -1]]
    funnel = run_funnel(index, query, Plan.two_stage(8, 40, 5), 5)
    assert list(funnel.positions[0]) == list(after[0])


def test_rescoring_reads_prefixes_and_matches_truncated_cosine(random_index):
    rng = np.random.default_rng(11)
    positions = rng.integers(0, random_index.count, size=(3, 40))
    full = random_index.vectors(positions)
    np.testing.assert_array_equal(random_index.vectors(positions, 24), full[..., :24])
    queries = truncate(rng.normal(size=(3, 48)), 48)
    padded = np.where(np.arange(40) < 35, positions, -1)  # a short shortlist is padded with -1
    scores = random_index.rescore(StoredQueries(queries), padded, 24)  # already in the stored basis
    expected = np.einsum("qnd,qd->qn", truncate(full, 24), truncate(queries, 24))
    np.testing.assert_allclose(scores[:, :35], expected[:, :35], atol=1e-6)
    assert np.all(scores[:, 35:] == -np.inf)
