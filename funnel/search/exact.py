"""Exact search: every live row scored at full (or ``dim``) dims — the reference every recall is
measured against, by the tuner, the evaluation harness and the benchmarks alike. Deleted rows
never appear, so an index with deletions and its compacted copy give the same reference."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from funnel.vectors import truncate

if TYPE_CHECKING:
    from funnel.indexes.index import Index

ADD_ROWS = 65_536


class ExactReference:
    """A FAISS flat inner-product index over the live stored rows of ``index`` at ``dim`` dims
    (default: all), built once and searched many times."""

    def __init__(self, index: Index, dim: int | None = None) -> None:
        import faiss

        self.index = index
        self.dim = dim or index.dim
        self.live = index.live_positions()
        self.flat: Any = faiss.IndexFlatIP(self.dim)
        for start in range(0, len(self.live), ADD_ROWS):
            self.flat.add(np.ascontiguousarray(truncate(index.vectors(self.live[start : start + ADD_ROWS]), self.dim)))

    @property
    def count(self) -> int:
        return len(self.live)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The exact top-``k``: (scores (q, k'), positions (q, k')) with k' = min(k, live rows),
        best first. ``queries``: the model's vectors (the index maps them into its basis)."""
        stored = self.index.stored_queries(queries)
        want = min(k, max(self.count, 1))
        scores, rows = self.flat.search(np.ascontiguousarray(truncate(stored.vectors, self.dim)), want)
        positions = np.where(rows >= 0, self.live[np.maximum(rows, 0)], -1)
        return scores.astype(np.float32), positions.astype(np.int64)


def exact_search(index: Index, queries: np.ndarray, k: int, dim: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exhaustive inner-product search over the live stored vectors at ``dim`` dims, once (build
    an :class:`ExactReference` to search it again). Returns (scores (q, k), positions (q, k))."""
    return ExactReference(index, dim).search(queries, k)
