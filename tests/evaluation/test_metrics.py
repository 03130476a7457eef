"""Metrics cross-checked against pytrec_eval (trec_eval) to 1e-6 on real and random runs."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import pytrec_eval
from hypothesis import given, settings
from hypothesis import strategies as st

from funnel.errors import InputError
from funnel.evaluation.datasets import BeirDataset
from funnel.evaluation.metrics import (
    METRIC_NAMES,
    Metric,
    Qrels,
    Run,
    evaluate_run,
    parse_metric,
    parse_metrics,
    run_from_arrays,
)

ALL_METRICS = [f"{name}@{k}" for name in METRIC_NAMES for k in (1, 3, 10, 100)] + list(METRIC_NAMES)


def pytrec_per_query(run: Run, qrels: Qrels, metric: str, relevance_level: int = 1) -> dict[str, float]:
    """The trec_eval value of ``metric`` for each query pytrec_eval evaluates."""
    parsed = parse_metric(metric)
    k = parsed.k
    if parsed.name == "mrr":
        # trec_eval's recip_rank has no cutoff: cut the run to k first in trec_eval's order
        # (float32 score descending, then doc id descending).
        if k is not None:
            run = {q: dict(sorted(docs.items(), key=lambda kv: (np.float32(kv[1]), kv[0]), reverse=True)[:k]) for q, docs in run.items()}
        measure, key = "recip_rank", "recip_rank"
    elif parsed.name == "hit_rate" and k is None:
        measure, key = "num_rel_ret", "num_rel_ret"
    else:
        trec_name = {
            "ndcg": ("ndcg_cut", "ndcg"),
            "map": ("map_cut", "map"),
            "recall": ("recall", "set_recall"),
            "precision": ("P", "set_P"),
            "hit_rate": ("success", None),
        }[parsed.name]
        if k is None:
            measure = key = trec_name[1]
        else:
            measure, key = f"{trec_name[0]}.{k}", f"{trec_name[0]}_{k}"
    evaluator = pytrec_eval.RelevanceEvaluator(qrels, {measure}, relevance_level=relevance_level)
    values = {q: measures[key] for q, measures in evaluator.evaluate(run).items()}
    if parsed.name == "hit_rate" and k is None:
        values = {q: float(value > 0) for q, value in values.items()}
    return values


def assert_matches_pytrec(run: Run, qrels: Qrels, metrics: list[str], relevance_level: int = 1) -> None:
    result = evaluate_run(run, qrels, metrics, relevance_level=relevance_level)
    for metric in metrics:
        name = str(parse_metric(metric))
        expected = pytrec_per_query(run, qrels, metric, relevance_level)
        assert set(result.per_query) == set(expected), metric
        got = {q: values[name] for q, values in result.per_query.items()}
        for query_id, value in expected.items():
            assert got[query_id] == pytest.approx(value, abs=1e-6), (metric, query_id)
        assert result.means[name] == pytest.approx(np.mean(list(expected.values())), abs=1e-6)


# --- real runs -------------------------------------------------------------------------------


def test_cranfield_tfidf_run_matches_pytrec_eval(cranfield: BeirDataset, cranfield_run: Run) -> None:
    assert_matches_pytrec(cranfield_run, cranfield.qrels, ALL_METRICS)


def test_cranfield_tfidf_run_is_a_real_ranking(cranfield: BeirDataset, cranfield_run: Run) -> None:
    result = evaluate_run(cranfield_run, cranfield.qrels, ["ndcg@10", "recall@100"])
    # TF-IDF on Cranfield sits near 0.3-0.4 nDCG@10; a broken run or metric would not.
    assert 0.25 < result.means["ndcg@10"] < 0.5
    assert result.num_queries == len(cranfield.queries)


def test_run_with_many_ties_matches_pytrec_eval(cranfield: BeirDataset, cranfield_run: Run) -> None:
    # One decimal leaves a handful of distinct scores per query: ties decide most ranks.
    tied = {q: {d: round(s, 1) for d, s in docs.items()} for q, docs in cranfield_run.items()}
    assert any(len(set(docs.values())) < len(docs) / 5 for docs in tied.values())
    assert_matches_pytrec(tied, cranfield.qrels, ALL_METRICS)


def test_graded_relevance_level_two_matches_pytrec_eval(cranfield: BeirDataset, cranfield_run: Run) -> None:
    assert_matches_pytrec(cranfield_run, cranfield.qrels, ALL_METRICS, relevance_level=2)


def test_queries_without_relevant_documents_score_zero_like_pytrec_eval(cranfield: BeirDataset, cranfield_run: Run) -> None:
    qrels = copy.deepcopy(cranfield.qrels)
    # Judge the top documents of three queries non-relevant (level 0) and drop their relevant ones.
    for query_id in ("1", "2", "3"):
        qrels[query_id] = {doc: 0 for doc in list(cranfield_run[query_id])[:5]}
    assert_matches_pytrec(cranfield_run, qrels, ALL_METRICS)
    result = evaluate_run(cranfield_run, qrels, ["ndcg@10", "mrr@10"])
    assert result.per_query["1"] == {"ndcg@10": 0.0, "mrr@10": 0.0}
    assert result.num_queries == len(cranfield.queries)


def test_scifact_binary_qrels_with_seeded_random_scores(scifact: BeirDataset) -> None:
    rng = np.random.default_rng(7)
    run: Run = {}
    for query_id, judgements in scifact.qrels.items():
        # Judged documents plus unjudged ones, scored at random on a coarse grid to force ties.
        docs = list(judgements) + list(rng.choice(scifact.corpus_ids, size=30, replace=False))
        run[query_id] = {doc: float(rng.integers(0, 8)) for doc in docs}
    assert_matches_pytrec(run, scifact.qrels, ALL_METRICS)


def test_scifact_tfidf_run_on_a_slice(scifact: BeirDataset, scifact_run: Run) -> None:
    assert_matches_pytrec(scifact_run, scifact.qrels, ALL_METRICS)
    # A slice made mostly of judged documents is easy: the score is high but not perfect.
    assert 0.5 < evaluate_run(scifact_run, scifact.qrels, ["ndcg@10"]).means["ndcg@10"] < 0.95


# --- conventions, pinned on small hand-made cases ---------------------------------------------


def test_ties_rank_by_doc_id_descending_as_strings() -> None:
    # Equal scores: trec_eval ranks "9" > "2" > "10" (strcmp, descending), whatever the run order.
    qrels = {"q": {"10": 1}}
    for order in (["10", "2", "9"], ["9", "10", "2"]):
        result = evaluate_run({"q": dict.fromkeys(order, 1.0)}, qrels, ["mrr"])
        assert result.means["mrr"] == pytest.approx(1 / 3)


def test_scores_equal_in_float32_are_ties_like_trec_eval() -> None:
    # 1.0 + 1e-9 rounds to 1.0 in float32, so doc id order ("b" before "a") decides.
    qrels = {"q": {"a": 1}}
    tied = {"q": {"a": 1.0 + 1e-9, "b": 1.0}}
    apart = {"q": {"a": 1.0 + 1e-6, "b": 1.0}}
    assert evaluate_run(tied, qrels, ["mrr"]).means["mrr"] == 0.5
    assert evaluate_run(apart, qrels, ["mrr"]).means["mrr"] == 1.0
    assert_matches_pytrec(tied, qrels, ["mrr"])


def test_mrr_at_10_ignores_a_first_hit_below_rank_10() -> None:
    run = {"q": {f"d{i:02d}": float(-i) for i in range(20)}}
    result = evaluate_run(run, {"q": {"d12": 1}}, ["mrr@10", "mrr"])
    assert result.means == {"mrr@10": 0.0, "mrr": pytest.approx(1 / 13)}


def test_ndcg_uses_linear_gains_and_cuts_the_ideal_ranking() -> None:
    qrels = {"q": {"a": 1, "b": 3, "c": 2, "d": 4}}
    run = {"q": {"a": 3.0, "b": 2.0, "c": 1.0}}
    dcg = 1 + 3 / np.log2(3) + 2 / 2
    ideal = 4 + 3 / np.log2(3) + 2 / 2
    assert evaluate_run(run, qrels, ["ndcg@3"]).means["ndcg@3"] == pytest.approx(dcg / ideal)


def test_missing_queries_are_skipped_by_default_or_scored_zero() -> None:
    qrels = {"q1": {"a": 1}, "q2": {"b": 1}, "q3": {}}
    run = {"q1": {"a": 1.0}, "extra": {"a": 1.0}}
    skipped = evaluate_run(run, qrels, ["recall@10"])
    assert skipped.means == {"recall@10": 1.0}
    assert skipped.missing_queries == ("q2",)
    assert skipped.unjudged_queries == ("extra",)
    zeroed = evaluate_run(run, qrels, ["recall@10"], missing="zero")
    assert zeroed.means == {"recall@10": 0.5}
    assert zeroed.per_query["q2"] == {"recall@10": 0.0}
    # A qrels entry without judgements is no judged query, as in pytrec_eval.
    assert "q3" not in zeroed.per_query and zeroed.missing_queries == ("q2",)


def test_a_query_with_an_empty_ranking_scores_zero_like_pytrec_eval() -> None:
    qrels = {"q1": {"a": 1}, "q2": {"b": 2}}
    run: Run = {"q1": {"a": 1.0}, "q2": {}}
    assert_matches_pytrec(run, qrels, ALL_METRICS)
    assert evaluate_run(run, qrels, ["ndcg@10"]).per_query["q2"] == {"ndcg@10": 0.0}


def test_result_keeps_metric_order_and_canonical_names() -> None:
    result = evaluate_run({"q": {"a": 1.0}}, {"q": {"a": 1}}, ["NDCG@10", " mrr@10", "ndcg@10", "map"])
    assert result.metrics == ("ndcg@10", "mrr@10", "map")
    assert list(result.means) == ["ndcg@10", "mrr@10", "map"]


# --- property test: random small runs against pytrec_eval -------------------------------------

# Ids chosen so that string order differs from numeric order and from byte-naive expectations.
DOC_IDS = ["1", "2", "9", "10", "a", "B", "b", "é", "d10", "d9"]
QUERY_IDS = ["q1", "q2", "q3"]


@st.composite
def run_and_qrels(draw: st.DrawFn) -> tuple[Run, Qrels, int]:
    levels = st.integers(min_value=-1, max_value=3)
    qrels = {
        q: draw(st.dictionaries(st.sampled_from(DOC_IDS), levels, max_size=6))
        for q in draw(st.lists(st.sampled_from(QUERY_IDS), min_size=1, unique=True))
    }
    # Coarse scores make ties common; the float scores keep the general case in play.
    scores = st.one_of(st.sampled_from([0.0, 0.5, 1.0, 2.0]), st.floats(-10, 10, allow_nan=False, allow_infinity=False))
    run_queries = draw(st.lists(st.sampled_from(QUERY_IDS + ["unjudged"]), min_size=1, unique=True))
    run = {q: draw(st.dictionaries(st.sampled_from(DOC_IDS), scores, max_size=8)) for q in run_queries}
    return run, qrels, draw(st.sampled_from([1, 2]))


# derandomize: the same examples on every machine. pytrec_eval's C code hung on an example a fresh
# clone's random draw produced (CI would time out), so the examples are fixed, not drawn anew.
@settings(max_examples=100, deadline=None, derandomize=True)
@given(run_and_qrels(), st.sampled_from([1, 2, 3, 5, None]))
def test_random_runs_match_pytrec_eval(case: tuple[Run, Qrels, int], k: int | None) -> None:
    run, qrels, relevance_level = case
    metrics = [name if k is None else f"{name}@{k}" for name in METRIC_NAMES]
    evaluated = {q for q, judged in qrels.items() if judged and q in run}
    if not evaluated:
        with pytest.raises(InputError):
            evaluate_run(run, qrels, metrics, relevance_level=relevance_level)
        return
    assert_matches_pytrec(run, qrels, metrics, relevance_level)


@settings(max_examples=30, deadline=None, derandomize=True)
@given(run_and_qrels())
def test_missing_zero_mean_counts_every_judged_query(case: tuple[Run, Qrels, int]) -> None:
    run, qrels, _ = case
    judged = [q for q, judgements in qrels.items() if judgements]
    if not judged:
        return
    zeroed = evaluate_run(run, qrels, ["ndcg@3"], missing="zero")
    assert list(zeroed.per_query) == judged
    total = sum(values["ndcg@3"] for values in zeroed.per_query.values())
    assert zeroed.means["ndcg@3"] == pytest.approx(total / len(judged))


# --- metric names --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ndcg@10", Metric("ndcg", 10)),
        ("MRR@10", Metric("mrr", 10)),
        (" recall@100 ", Metric("recall", 100)),
        ("map", Metric("map")),
        ("precision@10", Metric("precision", 10)),
        ("hit_rate@1", Metric("hit_rate", 1)),
    ],
)
def test_parse_metric(text: str, expected: Metric) -> None:
    assert parse_metric(text) == expected
    assert str(parse_metric(str(expected))) == str(expected)


@pytest.mark.parametrize("text", ["ndgc@10", "ndcg@", "ndcg@ten", "ndcg@10@5", "p@10", ""])
def test_unknown_metric_names_say_which_are_accepted(text: str) -> None:
    with pytest.raises(
        InputError,
        match=r"unknown metric .*: use one of ndcg, mrr, map, recall, "
        r"precision, hit_rate, optionally with a cutoff such as ndcg@10",
    ):
        parse_metric(text)


def test_cutoff_must_be_positive() -> None:
    with pytest.raises(InputError, match=r"metric ndcg@0: the cutoff k must be at least 1"):
        parse_metric("ndcg@0")


def test_a_single_name_is_one_metric() -> None:
    assert parse_metrics("ndcg@10") == (Metric("ndcg", 10),)
    assert evaluate_run({"q": {"a": 1.0}}, {"q": {"a": 1}}, "mrr@10").means == {"mrr@10": 1.0}


def test_no_metrics_is_an_error() -> None:
    with pytest.raises(InputError, match="no metrics given"):
        parse_metrics([])


# --- errors from evaluate_run ---------------------------------------------------------------


def test_disjoint_query_ids_are_an_error_not_a_zero() -> None:
    with pytest.raises(InputError, match=r"the run and the qrels share no query id \(run: 1; qrels: '1'\)"):
        evaluate_run({1: {"a": 1.0}}, {"1": {"a": 1}}, ["ndcg@10"])  # type: ignore[dict-item]


def test_empty_qrels_are_an_error() -> None:
    with pytest.raises(InputError, match="the qrels hold no judged query"):
        evaluate_run({"q": {"a": 1.0}}, {"q": {}}, ["ndcg@10"])


def test_nan_scores_are_an_error() -> None:
    with pytest.raises(InputError, match=r"query 'q': document 'b' has a NaN score"):
        evaluate_run({"q": {"a": 1.0, "b": float("nan")}}, {"q": {"a": 1}}, ["ndcg@10"])


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"missing": "ignore"}, r"missing='ignore': use 'skip' \(pytrec_eval's choice\) or 'zero'"),
        ({"relevance_level": 0}, r"relevance_level=0: use 1 or more"),
    ],
)
def test_bad_options_are_errors(options: dict, message: str) -> None:
    with pytest.raises(InputError, match=message):
        evaluate_run({"q": {"a": 1.0}}, {"q": {"a": 1}}, ["ndcg@10"], **options)


# --- run_from_arrays -------------------------------------------------------------------------


def test_run_from_arrays_with_doc_ids() -> None:
    run = run_from_arrays(["q1", "q2"], np.array([["a", "b"], ["c", "a"]]), np.array([[0.9, 0.5], [0.7, 0.1]]))
    assert run == {"q1": {"a": 0.9, "b": 0.5}, "q2": {"c": 0.7, "a": 0.1}}
    assert all(isinstance(score, float) for docs in run.values() for score in docs.values())


def test_run_from_arrays_resolves_corpus_rows_and_drops_faiss_padding() -> None:
    rows = np.array([[2, 0, -1], [1, -1, -1]], dtype=np.int64)
    scores = np.array([[0.9, 0.5, -np.inf], [0.3, -np.inf, -np.inf]], dtype=np.float32)
    run = run_from_arrays(["q1", "q2"], rows, scores, corpus_ids=["d0", "d1", "d2"])
    assert run == {"q1": {"d2": pytest.approx(0.9), "d0": 0.5}, "q2": {"d1": pytest.approx(0.3)}}


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ((["q1"], [["a"], ["b"]], [[1.0], [2.0]]), {}, r"run_from_arrays: 1 query ids but 2 rows of doc ids and 2 rows of scores"),
        ((["q1"], [["a", "b"]], [[1.0]]), {}, r"query 'q1' has 2 doc ids but 1 scores"),
        ((["q1"], [[0, 3]], [[1.0, 0.5]]), {"corpus_ids": ["d0", "d1"]}, r"query 'q1' names corpus row 3, but the corpus has 2 documents"),
        ((["q1"], [["a", "a"]], [[1.0, 0.5]]), {}, r"query 'q1' ranks document 'a' twice"),
        ((["q1", "q1"], [["a"], ["b"]], [[1.0], [0.5]]), {}, r"query id 'q1' appears twice"),
    ],
)
def test_run_from_arrays_errors(args: tuple, kwargs: dict, message: str) -> None:
    with pytest.raises(InputError, match=message):
        run_from_arrays(*args, **kwargs)
