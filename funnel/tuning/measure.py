"""Measurements for the tuner: exact truth, a plan's top-k, and its ms per query (recall: :mod:`funnel.agreement`)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from funnel.search.exact import ExactReference
from funnel.search.plan import Stage
from funnel.search.run import run_funnel
from funnel.tuning.evidence import without

if TYPE_CHECKING:
    from funnel.indexes.index import Index

RESCORE_BUDGET = 4_000_000  # floats gathered per batch of queries when rescoring (16 MB)


class TuningReference:
    """The exact reference (:class:`funnel.search.exact.ExactReference`: live rows only) as the
    tuner asks it: positions only, each query's source document left out, and its ms per query."""

    def __init__(self, index: Index) -> None:
        self.exact = ExactReference(index)
        self.count = self.exact.count
        self.index = index

    def search(self, queries: np.ndarray, k: int, sources: np.ndarray | None = None) -> np.ndarray:
        """Positions (q, min(k, count)) of the exact top-k, best first; leaving out ``sources`` (q,).
        ``queries``: the model's vectors."""
        extra = 0 if sources is None else 1
        _, positions = self.exact.search(queries, min(k + extra, self.count))
        return without(positions, sources, min(k, self.count - extra))

    def ms_per_query(self, queries: np.ndarray, k: int) -> float:
        return _per_query_ms(lambda row: self.search(queries[row : row + 1], k), len(queries))


def run_plan(
    index: Index,
    queries: np.ndarray,
    stages: Sequence[Stage],
    k: int,
    sources: np.ndarray | None = None,
    texts: Sequence[str] | None = None,
) -> np.ndarray:
    """Top-k positions (q, k) of a plan, in batches small enough to keep rescoring memory bounded.

    With ``sources`` (q,), each query's source document is left out, as if it were not indexed:
    every stage keeps one candidate more and the source is removed from the result. ``texts``:
    the queries' texts, for plans that add BM25 candidates.
    """
    if sources is not None:
        wider = tuple(replace(s, candidates=min(s.candidates + 1, index.count)) for s in stages[:-1])
        found = run_plan(index, queries, (*wider, replace(stages[-1], candidates=stages[-1].candidates + 1)), k + 1, texts=texts)
        return without(found, sources, k)
    widest = max(stage.passes_on for stage in stages)
    batch = max(1, min(64, RESCORE_BUDGET // max(1, widest * index.dim)))
    parts = [
        run_funnel(
            index, queries[start : start + batch], stages, k, texts=None if texts is None else texts[start : start + batch]
        ).positions
        for start in range(0, len(queries), batch)
    ]
    return np.concatenate(parts) if parts else np.zeros((0, k), dtype=np.int64)


def plan_ms_per_query(index: Index, queries: np.ndarray, stages: Sequence[Stage], k: int, texts: Sequence[str] | None = None) -> float:
    """Mean wall-clock ms of one search, queries sent one at a time (as a service would);
    ``texts``: the queries' texts, for plans that add BM25 candidates (their search is timed too)."""
    return _per_query_ms(
        lambda row: run_funnel(index, queries[row : row + 1], stages, k, texts=None if texts is None else [texts[row]]), len(queries)
    )


def _per_query_ms(search: Callable[[int], object], count: int) -> float:
    """Mean ms of ``search(row)`` over rows 0..count-1, after one call to warm caches and lazy imports."""
    search(0)
    started = time.perf_counter()
    for row in range(count):
        search(row)
    return 1000.0 * (time.perf_counter() - started) / max(1, count)
