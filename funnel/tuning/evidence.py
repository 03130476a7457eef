"""Recall of every candidate plan from one deep shortlist per dim, without running each plan.

For each calibration query the exact full-dimension top-k is the truth. A true top-k document
that survives to the last (full-dimension) stage is always in the plan's top-k, because every
document ranked above it at full dims is itself a true top-k document. So a plan's recall is the
fraction of true top-k documents that survive its earlier stages:

- two stages ``d:N,full:k``: the true document's rank in the ``d``-dim shortlist is below N;
- three stages ``d1:N1,d2:N2,full:k``: as above with N1, and among the first N1 shortlisted
  candidates fewer than N2 score higher than it at ``d2`` dims.

One shortlist of D candidates per first-stage dim therefore answers every N ≤ D by prefix.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from funnel.vectors import truncate

if TYPE_CHECKING:
    from funnel.indexes.index import Index

QUERY_CHUNK = 32
IN_MEMORY_BYTES = 1 << 30  # below this, middle-dim scores come from one matrix product, not gathers


@dataclass(frozen=True)
class DimEvidence:
    """For first-stage dim ``dim``: ``shortlist_rank`` (q, k), each true document's rank in the
    deep shortlist (``max_candidates`` if absent); ``middle_rank[d2]`` (q, k, len(prefixes)), how many of
    the first ``prefixes[i]`` candidates beat it at ``d2`` dims (``max_candidates`` if it is not among them)."""

    dim: int
    max_candidates: int
    shortlist_rank: np.ndarray
    prefixes: tuple[int, ...]
    middle_rank: dict[int, np.ndarray]

    def two_stage(self, candidates: int, rows: np.ndarray | None = None) -> np.ndarray:
        """Per-query recall (q,) of ``dim:candidates,full:k``."""
        ranks = self.shortlist_rank if rows is None else self.shortlist_rank[rows]
        return (ranks < candidates).mean(axis=1)

    def three_stage(self, prefix: int, middle_dim: int, kept: int, rows: np.ndarray | None = None) -> np.ndarray:
        """Per-query recall (q,) of ``dim:prefixes[prefix],middle_dim:kept,full:k``."""
        ranks = self.middle_rank[middle_dim][:, :, prefix]
        return ((ranks if rows is None else ranks[rows]) < kept).mean(axis=1)


def without(positions: np.ndarray, sources: np.ndarray | None, width: int) -> np.ndarray:
    """Rows of ``positions`` (q, n) with each row's source document (``sources`` (q,), -1 for
    none) removed, cut to ``width`` columns: results as if that document were not in the index."""
    if sources is None:
        return positions[:, :width]
    keep = positions != sources[:, None]
    # Stable sort moves the (at most one) removed entry to the end of its row.
    order = np.argsort(~keep, axis=1, kind="stable")
    return np.take_along_axis(positions, order, axis=1)[:, :width]


def true_ranks(shortlist: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Rank (q, k) of each ``truth`` position (q, k) in ``shortlist`` positions (q, D); D if absent."""
    max_candidates = shortlist.shape[1]
    match = shortlist[:, :, None] == truth[:, None, :]  # (q, D, k)
    found = match.any(axis=1)
    return np.where(found, match.argmax(axis=1), max_candidates)


def gather_evidence(
    index: Index,
    queries: np.ndarray,
    truth: np.ndarray,
    dim: int,
    max_candidates: int,
    prefixes: Sequence[int],
    middle_dims: Sequence[int],
    corpus: np.ndarray | None = None,
    sources: np.ndarray | None = None,
) -> DimEvidence:
    """Run one ``max_candidates``-long shortlist at ``dim`` for ``queries`` (q, full; the model's
    vectors) and score what it found.

    ``corpus``: every stored vector (count, full) float32, when it fits in memory (see
    :func:`corpus_in_memory`); middle-dim scores are then a matrix product instead of gathers.
    ``sources``: (q,) a document to leave out per query (see :func:`without`); ``truth`` must
    already leave it out.
    """
    stored = index.stored_queries(queries)  # the model's vectors into the stored basis, as run_funnel does
    queries = stored.vectors
    fetch = min(max_candidates + 1, index.count) if sources is not None else max_candidates
    _, shortlist = index.shortlist(stored, dim, fetch)
    shortlist = without(shortlist, sources, fetch - 1 if sources is not None else fetch)
    max_candidates = shortlist.shape[1]
    ranks = true_ranks(shortlist, truth)
    prefixes = tuple(p for p in prefixes if p <= max_candidates)
    middle = {d: np.full(truth.shape + (len(prefixes),), max_candidates, dtype=np.int64) for d in middle_dims}
    if middle_dims and prefixes:
        cut = np.asarray(prefixes) - 1
        truncated = {d: truncate(corpus, d) for d in middle_dims} if corpus is not None else {}
        for start in range(0, len(queries), QUERY_CHUNK):
            rows = slice(start, start + QUERY_CHUNK)
            positions = shortlist[rows]
            valid = positions >= 0
            safe = np.where(valid, positions, 0)
            vectors = index.vectors(safe) if corpus is None else None  # (c, D, full)
            rank = ranks[rows]
            present = rank < max_candidates
            for middle_dim in middle_dims:
                query_part = truncate(queries[rows], middle_dim)
                if vectors is not None:  # no corpus in memory: the gathered rows
                    scores = np.einsum("cnd,cd->cn", truncate(vectors, middle_dim), query_part)
                else:
                    scores = np.take_along_axis(query_part @ truncated[middle_dim].T, safe, axis=1)
                scores = np.where(valid, scores, -np.inf)
                own = np.take_along_axis(scores, np.minimum(rank, max_candidates - 1), axis=1)  # (c, k)
                beaten = np.cumsum(scores[:, None, :] > own[:, :, None], axis=2)[:, :, cut]  # (c, k, P)
                inside = rank[:, :, None] < np.asarray(prefixes)[None, None, :]
                middle[middle_dim][rows] = np.where(present[:, :, None] & inside, beaten, max_candidates)
    return DimEvidence(dim, max_candidates, ranks, prefixes, middle)


def corpus_in_memory(index: Index) -> np.ndarray | None:
    """Every stored vector as float32 (count, full) when that takes under :data:`IN_MEMORY_BYTES`."""
    return index.all_vectors() if index.count * index.dim * 4 <= IN_MEMORY_BYTES else None
