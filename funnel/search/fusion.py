"""Hybrid ranking: fusing the ranked lists of several retrievers (dense and BM25) into one."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

RRF_K = 60
"""The rank offset of reciprocal-rank fusion (Cormack et al., 2009): what Qdrant and Elasticsearch use."""


def reciprocal_rank_fusion(rankings: Sequence[np.ndarray], k: int, offset: int = RRF_K) -> tuple[np.ndarray, np.ndarray]:
    """Fuse per-query rankings (each (q, n_i) positions, best first, padded with -1) by
    reciprocal rank: a document scores the sum of 1 / (offset + rank) over the lists it is in
    (rank from 1). Returns (scores (q, k) float32, positions (q, k) int64), best first (ties by
    lower position), padded with 0 / -1."""
    queries = len(rankings[0])
    scores = np.zeros((queries, k), np.float32)
    positions = np.full((queries, k), -1, np.int64)
    for row in range(queries):
        fused: dict[int, float] = {}
        for ranking in rankings:
            for rank, position in enumerate(ranking[row][ranking[row] >= 0].tolist(), start=1):
                fused[position] = fused.get(position, 0.0) + 1.0 / (offset + rank)
        best = sorted(fused.items(), key=lambda item: (-item[1], item[0]))[:k]
        for column, (position, score) in enumerate(best):
            positions[row, column], scores[row, column] = position, score
    return scores, positions
