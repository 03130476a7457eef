"""Exact search: every live row scored at full (or ``dim``) dims — the reference every recall is
measured against, by the tuner, the evaluation harness and the benchmarks alike, and the
``full:K`` plan, which every index can run. Deleted rows never appear, so an index with deletions
and its compacted copy give the same reference.

Where the stored vectors carry most of their energy in their first dims (a rotated index: the
rotation puts the principal axes first) and the index is large, the scan runs on FAISS's
Panorama index (arXiv 2510.00566): it scores each vector level by level over its dims and drops
it once the energy left in its remaining dims cannot lift it into the top k. The result is the
flat scan's, with fewer dims read; on a small or unrotated index the flat scan is as fast or faster.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from funnel.vectors import truncate

if TYPE_CHECKING:
    from funnel.indexes.index import Index

ADD_ROWS = 65_536
SPECTRUM_ROWS = 4_096  # rows sampled to read the energy per dim


@dataclass(frozen=True)
class ScanChoice:
    """How an exact scan runs: flat, or Panorama with ``levels`` blocks of dims of ``batch`` rows."""

    panorama: bool
    levels: int = 0
    batch: int = 0
    front_energy: float = 0.0
    """Share of the vectors' energy in the first quarter of their dims (what Panorama prunes on)."""

    @property
    def name(self) -> str:
        return f"panorama({self.levels} levels)" if self.panorama else "flat"


# Measured on 100k MiniLM vectors with held-out queries, one thread (benchmarks/results/exact-scan):
# rotated (the first quarter of the dims holds 0.73 of the energy) Panorama ran 1.9-2.5x faster than
# the flat scan, best with levels of about 32 dims and batches of 512+ rows; in the model's order
# (0.25) it ran 0.85-1.1x, so it is used only where the front holds over half the energy.
# Batches of 2048 rows: on 2026-12-06, against 512, 1.95x -> 2.20x flat at 1M static vectors
# (held-out queries, 8 levels) and 1.25x -> 1.33x at 100k MiniLM (the suite's queries, 12 levels);
# 8192 helped 1M a little more (2.25x) and cost 100k (1.20x).
PANORAMA_MIN_ROWS = 20_000
PANORAMA_MIN_DIM = 128  # below, levels are a few dims each and their bookkeeping outweighs the pruning
PANORAMA_MIN_FRONT_ENERGY = 0.5
PANORAMA_MIN_LEVELS = 4
PANORAMA_LEVEL_DIMS = 32
PANORAMA_BATCH = 2048
# Wide levels (64 dims, in batches of 8192 rows) from half a million rows, where the front holds 0.7
# of the energy. 2026-12-06, 1M static vectors (256 dims, one thread, benchmarks/results/exact-scan):
# rotated (front 0.73), held-out queries, 4 levels ran 2.5-2.7x flat where 8 ran 1.8-1.9x (the
# suite's out-of-domain queries: 1.25x against 1.37x), and batches of 8192 gained 3-5% on 2048; in
# the model's order (front 0.58) 8 levels ran 1.45-1.6x and 4 levels 1.3x. At 100k, 32-dim levels
# were as fast or faster (by 5-19%, MiniLM and static, both query sets). A likely reason: the k-th
# best score rises with the row count, so an energetic first level alone prunes more and each
# further level's bookkeeping pays less.
PANORAMA_WIDE_LEVEL_DIMS = 64
PANORAMA_WIDE_MIN_ROWS = 500_000
PANORAMA_WIDE_MIN_FRONT_ENERGY = 0.7
PANORAMA_WIDE_BATCH = 8192


def choose_scan(vectors: np.ndarray, rows: int, dim: int) -> ScanChoice:
    """Panorama or flat for an exact scan of ``rows`` rows at ``dim`` dims, from a sample of the
    stored ``vectors``' spectrum (energy per dim)."""
    step = max(1, len(vectors) // SPECTRUM_ROWS)
    sample = truncate(np.asarray(vectors[::step][:SPECTRUM_ROWS]), dim) if len(vectors) else np.zeros((0, dim), np.float32)
    energy = np.einsum("nd,nd->d", sample, sample)
    front = float(energy[: max(1, dim // 4)].sum() / energy.sum()) if energy.sum() > 0 else 0.0
    wide = (
        rows >= PANORAMA_WIDE_MIN_ROWS
        and front >= PANORAMA_WIDE_MIN_FRONT_ENERGY
        and dim // PANORAMA_WIDE_LEVEL_DIMS >= PANORAMA_MIN_LEVELS
    )
    levels = max(1, dim // (PANORAMA_WIDE_LEVEL_DIMS if wide else PANORAMA_LEVEL_DIMS))
    while dim % levels:  # levels split the dims evenly
        levels -= 1
    if rows >= PANORAMA_MIN_ROWS and dim >= PANORAMA_MIN_DIM and front >= PANORAMA_MIN_FRONT_ENERGY and levels >= PANORAMA_MIN_LEVELS:
        return ScanChoice(True, levels, PANORAMA_WIDE_BATCH if wide else PANORAMA_BATCH, front)
    return ScanChoice(False, front_energy=front)


class ExactReference:
    """A FAISS exact inner-product index over the live stored rows of ``index`` at ``dim`` dims
    (default: all), re-normalized, built once and searched many times. ``scan``: how it scans
    (default: :func:`choose_scan`); every choice returns the same top-k."""

    def __init__(self, index: Index, dim: int | None = None, scan: ScanChoice | None = None) -> None:
        import faiss

        self.index = index
        self.dim = dim or index.dim
        self.live = index.live_positions()
        first = index.segments[0].vectors if index.segments else np.zeros((0, self.dim), np.float32)
        self.scan = scan or choose_scan(first, len(self.live), self.dim)
        self.flat: Any = (
            faiss.IndexFlatIPPanorama(self.dim, self.scan.levels, self.scan.batch) if self.scan.panorama else faiss.IndexFlatIP(self.dim)
        )
        for start in range(0, len(self.live), ADD_ROWS):
            self.flat.add(np.ascontiguousarray(truncate(index.vectors(self.live[start : start + ADD_ROWS]), self.dim)))

    @property
    def count(self) -> int:
        return len(self.live)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The exact top-``k``: (scores (q, k'), positions (q, k')) with k' = min(k, live rows),
        best first. ``queries``: the model's vectors (the index maps them into its basis)."""
        return self.search_stored(self.index.stored_queries(queries).vectors, k)

    def search_stored(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`search` for query vectors already in the index's stored basis (q, index.dim)."""
        want = min(k, max(self.count, 1))
        scores, rows = self.flat.search(np.ascontiguousarray(truncate(vectors, self.dim)), want)
        positions = np.where(rows >= 0, self.live[np.maximum(rows, 0)], -1)
        return np.where(rows >= 0, scores, -np.inf).astype(np.float32), positions.astype(np.int64)


def exact_search(index: Index, queries: np.ndarray, k: int, dim: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exhaustive inner-product search over the live stored vectors at ``dim`` dims, once (build
    an :class:`ExactReference` to search it again). Returns (scores (q, k), positions (q, k))."""
    return ExactReference(index, dim).search(queries, k)
