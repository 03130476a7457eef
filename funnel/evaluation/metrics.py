"""IR metrics on a run and qrels, computed with numpy and matching trec_eval / pytrec_eval.

Metric names are written as users write them (ranx style): ``name@k`` or plain ``name`` for no
cutoff, case-insensitive.

=================  ==============================================  ==========================
name               value for one query                             trec_eval measure
=================  ==============================================  ==========================
``ndcg@k``         DCG of the top k over the ideal DCG of the top  ``ndcg_cut_k`` (``ndcg``)
                   k judgements
``mrr@k``          1 / rank of the first relevant document in the  ``recip_rank`` on the run
                   top k, 0 if none                                cut to k
``map@k``          sum of precision at each relevant rank <= k,    ``map_cut_k`` (``map``)
                   over the number of relevant documents
``recall@k``       relevant documents in the top k over all        ``recall_k``
                   relevant documents                              (``set_recall``)
``precision@k``    relevant documents in the top k over k          ``P_k`` (``set_P``)
``hit_rate@k``     1 if a relevant document is in the top k        ``success_k``
=================  ==============================================  ==========================

Conventions, each one trec_eval's (checked against pytrec_eval to 1e-6 in the tests):

- **Ranking.** A query's documents are ranked by score descending; equal scores are ranked by
  document id *descending* as strings compared by code point (trec_eval's ``strcmp``), so ``"9"``
  comes before ``"10"``. Scores are compared as float32, as trec_eval stores them: two scores that
  round to the same float32 (``1.0`` and ``1.0 + 1e-9``) are a tie. The run's own order is never
  used.
- **Relevance.** Binary measures (all but nDCG) count a document as relevant when its judged level
  is at least ``relevance_level`` (default 1); unjudged documents are not relevant.
- **Gains.** nDCG uses the judged level itself as a linear gain (negative levels count as 0) and a
  ``log2(rank + 1)`` discount; the ideal ranking sorts every judgement of the query by gain and is
  cut at the same k. ``relevance_level`` does not change nDCG, as in trec_eval.
- **No cutoff.** Without ``@k`` a measure uses the whole ranking; ``precision`` then divides by
  the number of documents retrieved (``set_P``).
- **Queries with judgements but none relevant** are evaluated and score 0 on every measure; they
  count in the mean, as in pytrec_eval. A query whose qrels entry is empty is not a judged query.
- **Queries in the run but not in the qrels** are ignored (listed in ``unjudged_queries``).
- **Queries in the qrels with no run entry** follow ``missing``: ``"skip"`` (default, pytrec_eval's
  behaviour) leaves them out of the means; ``"zero"`` scores them 0, the stricter choice when a
  system fails to answer. Either way they are listed in ``missing_queries``. A query present in the
  run with no documents is an empty ranking and scores 0, as in pytrec_eval.
- **Means** are arithmetic means over the evaluated queries.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from funnel.errors import InputError
from funnel.readers import Qrels, examples

Run = dict[str, dict[str, float]]
"""Query id -> document id -> score (higher is better)."""

Missing = Literal["skip", "zero"]

METRIC_NAMES: tuple[str, ...] = ("ndcg", "mrr", "map", "recall", "precision", "hit_rate")

_METRIC_PATTERN = re.compile(r"^([a-z_]+)(?:@(\d+))?$")


@dataclass(frozen=True)
class Metric:
    """One measure and its cutoff; ``k=None`` means the whole ranking."""

    name: str
    k: int | None = None

    def __post_init__(self) -> None:
        if self.name not in METRIC_NAMES:
            raise InputError(
                f"unknown metric {self.name!r}: use one of {', '.join(METRIC_NAMES)}, optionally with a cutoff such as ndcg@10"
            )
        if self.k is not None and self.k < 1:
            raise InputError(f"metric {self.name}@{self.k}: the cutoff k must be at least 1")

    def __str__(self) -> str:
        return self.name if self.k is None else f"{self.name}@{self.k}"


def parse_metric(text: str) -> Metric:
    """Parse a metric name as users write it (``"ndcg@10"``, ``"MRR@10"``, ``"map"``).

    Raises InputError naming the accepted names when ``text`` is not one of them.
    """
    match = _METRIC_PATTERN.match(text.strip().lower())
    if match is None or match.group(1) not in METRIC_NAMES:
        raise InputError(f"unknown metric {text!r}: use one of {', '.join(METRIC_NAMES)}, optionally with a cutoff such as ndcg@10")
    cutoff = match.group(2)
    return Metric(match.group(1), None if cutoff is None else int(cutoff))


def parse_metrics(texts: Iterable[str | Metric]) -> tuple[Metric, ...]:
    """Parse several metric names, keeping their order and dropping repeats.

    A single string is one name (``"ndcg@10"``), not a sequence of characters.
    """
    if isinstance(texts, (str, Metric)):
        texts = [texts]
    parsed: list[Metric] = []
    for text in texts:
        metric = text if isinstance(text, Metric) else parse_metric(text)
        if metric not in parsed:
            parsed.append(metric)
    if not parsed:
        raise InputError("no metrics given: name at least one, such as ndcg@10")
    return tuple(parsed)


@dataclass(frozen=True)
class EvaluationResult:
    """Per-query values and their means for a set of metrics.

    ``per_query[query_id][metric]`` and ``means[metric]`` are keyed by canonical metric names
    (``str(Metric)``, e.g. ``"ndcg@10"``), in the order the metrics were asked for. Queries appear
    in qrels order. ``missing_queries`` are judged queries the run lacks (skipped or scored 0 as
    ``missing`` said); ``unjudged_queries`` are run queries absent from the qrels (ignored).
    """

    metrics: tuple[str, ...]
    per_query: dict[str, dict[str, float]]
    means: dict[str, float]
    missing: Missing
    missing_queries: tuple[str, ...]
    unjudged_queries: tuple[str, ...]

    @property
    def num_queries(self) -> int:
        """Number of queries the means are taken over."""
        return len(self.per_query)


def evaluate_run(
    run: Mapping[str, Mapping[str, float]],
    qrels: Mapping[str, Mapping[str, int]],
    metrics: Iterable[str | Metric],
    *,
    missing: Missing = "skip",
    relevance_level: int = 1,
) -> EvaluationResult:
    """Evaluate ``run`` against ``qrels`` with trec_eval's conventions (see the module docstring).

    Raises InputError for an unknown metric, a ``missing`` other than "skip" or "zero", a
    ``relevance_level`` below 1, a NaN score, qrels without any judged query, or when no query is
    left to evaluate (the run and the qrels share no query id).
    """
    parsed = parse_metrics(metrics)
    if relevance_level < 1:
        # trec_eval tells unjudged documents (never relevant) from judged level-0 ones; this code
        # reads both as level 0, which agrees only while level 0 is not relevant.
        raise InputError(f"relevance_level={relevance_level}: use 1 or more")
    if missing not in ("skip", "zero"):
        raise InputError(f"missing={missing!r}: use 'skip' (pytrec_eval's choice) or 'zero'")
    # pytrec_eval treats a query with an empty judgement dict as not judged at all.
    judged = [query_id for query_id, judgements in qrels.items() if judgements]
    if not judged:
        raise InputError("the qrels hold no judged query: nothing to evaluate against")

    names = tuple(str(metric) for metric in parsed)
    per_query: dict[str, dict[str, float]] = {}
    missing_queries: list[str] = []
    for query_id in judged:
        if query_id in run:
            values = _evaluate_query(query_id, run[query_id], qrels[query_id], parsed, relevance_level)
            per_query[query_id] = dict(zip(names, values))
        else:
            missing_queries.append(query_id)
            if missing == "zero":
                per_query[query_id] = dict.fromkeys(names, 0.0)
    if not per_query:
        raise InputError(
            f"the run and the qrels share no query id (run: {examples(run)}; qrels: {examples(judged)}): check that both use the same ids"
        )
    judged_set = set(judged)
    unjudged = tuple(query_id for query_id in run if query_id not in judged_set)
    means = {name: float(np.mean([values[name] for values in per_query.values()])) for name in names}
    return EvaluationResult(names, per_query, means, missing, tuple(missing_queries), unjudged)


def run_from_arrays(
    query_ids: Sequence[str],
    doc_ids: np.ndarray | Sequence[Sequence[str]] | Sequence[Sequence[int]],
    scores: np.ndarray | Sequence[Sequence[float]],
    *,
    corpus_ids: Sequence[str] | None = None,
) -> Run:
    """Turn ranked arrays into a Run; row i of ``doc_ids`` and ``scores`` is ``query_ids[i]``'s.

    ``doc_ids`` and ``scores`` have shape (n_queries, k), or are ragged sequences of equal row
    lengths. With ``corpus_ids``, ``doc_ids`` holds integer rows into it and negative rows (FAISS
    pads short results with -1) are dropped; without it, ``doc_ids`` holds document ids.
    Raises InputError on mismatched lengths, out-of-range rows or a document ranked twice.
    """
    if len(doc_ids) != len(query_ids) or len(scores) != len(query_ids):
        raise InputError(
            f"run_from_arrays: {len(query_ids)} query ids but {len(doc_ids)} rows of doc ids "
            f"and {len(scores)} rows of scores; give one row of each per query"
        )
    run: Run = {}
    for query_id, id_row, score_row in zip(query_ids, doc_ids, scores):
        if len(id_row) != len(score_row):
            raise InputError(f"run_from_arrays: query {query_id!r} has {len(id_row)} doc ids but {len(score_row)} scores")
        if query_id in run:
            raise InputError(f"run_from_arrays: query id {query_id!r} appears twice")
        run[query_id] = _ranking_row(query_id, id_row, score_row, corpus_ids)
    return run


def _ranking_row(
    query_id: str,
    id_row: Sequence[str] | Sequence[int] | np.ndarray,
    score_row: Sequence[float] | np.ndarray,
    corpus_ids: Sequence[str] | None,
) -> dict[str, float]:
    """One query's {doc id: score}, resolving corpus rows and dropping FAISS's -1 padding."""
    ranking: dict[str, float] = {}
    for doc, score in zip(id_row, score_row):
        if corpus_ids is not None:
            row = int(doc)
            if row < 0:
                continue
            if row >= len(corpus_ids):
                raise InputError(
                    f"run_from_arrays: query {query_id!r} names corpus row {row}, but the corpus has {len(corpus_ids)} documents"
                )
            doc = corpus_ids[row]
        doc_id = str(doc)
        if doc_id in ranking:
            raise InputError(f"run_from_arrays: query {query_id!r} ranks document {doc_id!r} twice")
        ranking[doc_id] = float(score)
    return ranking


def _evaluate_query(
    query_id: str,
    ranking: Mapping[str, float],
    judgements: Mapping[str, int],
    metrics: Sequence[Metric],
    relevance_level: int,
) -> list[float]:
    """All metric values for one judged query, in the order of ``metrics``."""
    levels = _ranked_levels(query_id, ranking, judgements)
    relevant = levels >= relevance_level
    num_relevant = sum(1 for level in judgements.values() if level >= relevance_level)
    # Negative levels gain nothing, in the run and in the ideal ranking alike (as pytrec_eval).
    gains = np.maximum(levels, 0.0)
    ideal_gains = np.sort(np.maximum(np.fromiter(judgements.values(), float), 0.0))[::-1]
    return [_metric_value(metric, relevant, num_relevant, gains, ideal_gains) for metric in metrics]


def _ranked_levels(query_id: str, ranking: Mapping[str, float], judgements: Mapping[str, int]) -> np.ndarray:
    """Judged levels (0 when unjudged) of the run's documents in trec_eval's rank order."""
    doc_ids = list(ranking)
    # trec_eval keeps scores as C floats: scores equal in float32 are ties, broken by doc id.
    # Beyond float32's range a score becomes ±inf there too, so the overflow is expected.
    with np.errstate(over="ignore"):
        scores = np.fromiter(ranking.values(), np.float64, len(doc_ids)).astype(np.float32)
    if np.isnan(scores).any():
        bad = doc_ids[int(np.flatnonzero(np.isnan(scores))[0])]
        raise InputError(f"query {query_id!r}: document {bad!r} has a NaN score; scores must be numbers")
    # lexsort's last key is primary: ascending (score, doc id), reversed, is trec_eval's order of
    # score descending then doc id descending.
    order: np.ndarray | list[int] = np.lexsort((np.array(doc_ids, dtype=str), scores))[::-1] if doc_ids else []
    return np.array([judgements.get(doc_ids[i], 0) for i in order], dtype=float)


def _metric_value(
    metric: Metric,
    relevant: np.ndarray,
    num_relevant: int,
    gains: np.ndarray,
    ideal_gains: np.ndarray,
) -> float:
    """One measure for one query from its ranked relevance flags and gains."""
    k = len(relevant) if metric.k is None else metric.k
    top = relevant[:k]
    hits = int(top.sum())
    if metric.name == "precision":
        # No cutoff: divide by the documents retrieved (set_P); a cutoff divides by k (P_k).
        denominator = len(relevant) if metric.k is None else metric.k
        return hits / denominator if denominator else 0.0
    if metric.name == "hit_rate":
        return 1.0 if hits else 0.0
    if metric.name == "ndcg":
        # Gains, not the relevance threshold: a query with only level-1 judgements still has an
        # nDCG at relevance_level=2, as in trec_eval.
        return _ndcg(gains, ideal_gains, metric.k)
    if num_relevant == 0:
        return 0.0
    if metric.name == "recall":
        return hits / num_relevant
    if metric.name == "mrr":
        first = np.flatnonzero(top)
        return 1.0 / (int(first[0]) + 1) if len(first) else 0.0
    if metric.name == "map":
        ranks = np.flatnonzero(top) + 1
        return float(np.sum(np.arange(1, len(ranks) + 1) / ranks)) / num_relevant
    raise AssertionError(f"unhandled metric {metric}")  # Metric.__post_init__ rules this out


def _ndcg(gains: np.ndarray, ideal_gains: np.ndarray, k: int | None) -> float:
    """nDCG with linear gains and log2(rank + 1) discounts; 0 when the ideal DCG is 0."""
    ideal = _dcg(ideal_gains if k is None else ideal_gains[:k])
    if ideal <= 0.0:
        return 0.0
    return _dcg(gains if k is None else gains[:k]) / ideal


def _dcg(gains: np.ndarray) -> float:
    """Discounted cumulative gain of gains in rank order."""
    discounts = np.log2(np.arange(2, len(gains) + 2))
    return float(np.sum(gains / discounts))


__all__ = [
    "METRIC_NAMES",
    "EvaluationResult",
    "Metric",
    "Missing",
    "Qrels",
    "Run",
    "evaluate_run",
    "parse_metric",
    "parse_metrics",
    "run_from_arrays",
]
