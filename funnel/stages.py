"""The funnel plan: a list of stages, each keeping fewer candidates at more dims, and how to run it.

The first stage shortlists from a FAISS index over its dims; each later stage rescores the
survivors of the one before with the stored full vectors truncated to its dims (re-normalized), and
the last stage's ranking gives the top-k. ``"64:200,384:10"`` reads: shortlist 200 at 64 dims,
rescore them at 384 dims, keep 10.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import numpy as np

from funnel.errors import InputError
from funnel.vectors import truncate

if TYPE_CHECKING:
    from funnel.indexes.index import Index


@dataclass(frozen=True)
class Stage:
    """One step of the funnel: score at ``dim`` dims (None: full) and keep ``candidates``.

    ``layer`` (None: the model's full depth) is the encoder depth the stage's vectors come from.
    """

    dim: int | None
    candidates: int
    layer: int | None = None

    def __post_init__(self) -> None:
        if self.candidates < 1:
            raise InputError(f"a stage must keep at least 1 candidate, not {self.candidates}")
        if self.dim is not None and self.dim < 1:
            raise InputError(f"a stage's dims must be at least 1, not {self.dim}")

    def resolved_dim(self, full_dim: int) -> int:
        return full_dim if self.dim is None else self.dim

    def __str__(self) -> str:
        dim = "full" if self.dim is None else str(self.dim)
        return f"{self.layer}:{dim}:{self.candidates}" if self.layer is not None else f"{dim}:{self.candidates}"


def parse_stage(text: str) -> Stage:
    """``DIM:CANDIDATES`` or ``LAYER:DIM:CANDIDATES``; DIM may be ``full``."""
    parts = text.strip().split(":")
    try:
        if len(parts) == 2:
            return Stage(dim=_parse_dim(parts[0]), candidates=int(parts[1]))
        if len(parts) == 3:
            return Stage(dim=_parse_dim(parts[1]), candidates=int(parts[2]), layer=int(parts[0]))
    except ValueError:
        pass
    raise InputError(f"stage {text!r} is not DIM:CANDIDATES or LAYER:DIM:CANDIDATES (e.g. 64:200 or full:10)")


def _parse_dim(text: str) -> int | None:
    return None if text.strip().lower() == "full" else int(text)


def parse_stages(text: str) -> tuple[Stage, ...]:
    """``"64:200,128:50,full:10"`` → three stages."""
    stages = tuple(parse_stage(part) for part in text.split(",") if part.strip())
    if not stages:
        raise InputError("no stages given: write them like 64:200,full:10")
    return stages


def format_stages(stages: Sequence[Stage]) -> str:
    return ",".join(map(str, stages))


def two_stage(shortlist_dim: int, shortlist_size: int, k: int) -> tuple[Stage, ...]:
    """Shortlist ``shortlist_size`` at ``shortlist_dim`` dims, rescore at full dims, keep ``k``."""
    return (Stage(dim=shortlist_dim, candidates=max(shortlist_size, k)), Stage(dim=None, candidates=k))


def validate_plan(stages: Sequence[Stage], k: int, index: "Index") -> None:
    """Check a plan against an index before searching; raises InputError saying what to change."""
    if not stages:
        raise InputError("a funnel needs at least one stage")
    if k < 1:
        raise InputError(f"k must be at least 1, not {k}")
    first = stages[0].resolved_dim(index.dim)
    if first not in index.shortlist_dims:
        have = ", ".join(map(str, index.shortlist_dims))
        raise InputError(f"the first stage scores at {first} dims but this index has shortlists at: {have}")
    for before, after in zip(stages, stages[1:]):
        if after.candidates > before.candidates:
            raise InputError(f"stage {after} keeps more candidates than stage {before} passes on: a funnel only narrows")
    for stage in stages:
        if stage.resolved_dim(index.dim) > index.dim:
            raise InputError(f"stage {stage} asks for {stage.dim} dims but the index has {index.dim}")
        if stage.layer is not None:
            raise InputError(f"stage {stage} names a layer, but this index stores only full-depth vectors")
    if stages[-1].candidates < k:
        raise InputError(f"k={k} but the last stage keeps only {stages[-1].candidates}: raise its candidates or lower k")


@dataclass(frozen=True)
class StageTrace:
    """What one stage did for a batch of queries: inputs scored, survivors, dims and seconds."""

    stage: Stage
    dim: int
    scored: int  # candidates scored per query (for the first stage: the index size)
    kept: int
    seconds: float


@dataclass(frozen=True)
class FunnelResult:
    """Top-k per query: ``scores`` (q, k) float32 and ``positions`` (q, k) int64, padded with -inf / -1."""

    scores: np.ndarray
    positions: np.ndarray
    trace: tuple[StageTrace, ...]


def run_funnel(index: "Index", queries: np.ndarray, stages: Sequence[Stage], k: int) -> FunnelResult:
    """Run the plan for normalized full-dimension ``queries`` of shape (q, index.dim)."""
    from funnel.indexes.index import top_n

    validate_plan(stages, k, index)
    queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
    trace = []
    first = stages[0]
    started = time.perf_counter()
    dim = first.resolved_dim(index.dim)
    scores, positions = index.shortlist(queries, dim, first.candidates)
    trace.append(StageTrace(first, dim, index.count, positions.shape[1], time.perf_counter() - started))
    for stage in stages[1:]:
        started = time.perf_counter()
        dim = stage.resolved_dim(index.dim)
        scores, positions = _rescore(index, queries, positions, dim)
        scores, positions = top_n(scores, positions, stage.candidates)
        trace.append(StageTrace(stage, dim, int(trace[-1].kept), positions.shape[1], time.perf_counter() - started))
    scores, positions = top_n(scores, positions, k)
    return FunnelResult(scores, positions, tuple(trace))


def _rescore(index: "Index", queries: np.ndarray, positions: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray]:
    valid = positions >= 0
    # Cosine of the truncated vectors, computed as dot / norm over the stored prefix: the same
    # scores as truncate() then dot, without reading the unused dims or writing a normalized copy.
    candidates = index.vectors(np.where(valid, positions, 0), dim)
    dots = np.einsum("qnd,qd->qn", candidates, truncate(queries, dim))
    norms = np.sqrt(np.einsum("qnd,qnd->qn", candidates, candidates))
    scores = np.divide(dots, norms, out=np.zeros_like(dots), where=norms > 0)
    return np.where(valid, scores, -np.inf).astype(np.float32), positions


def exact_search(index: "Index", queries: np.ndarray, k: int, dim: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exhaustive inner-product search over the live stored vectors at ``dim`` dims: the reference
    ranking. Returns (scores (q, k), positions (q, k)); deleted rows never appear."""
    import faiss

    dim = dim or index.dim
    live = index.live_positions()
    flat = faiss.IndexFlatIP(dim)
    for start in range(0, len(live), 65_536):
        flat.add(truncate(index.vectors(live[start : start + 65_536]), dim))
    k = min(k, max(len(live), 1))
    scores, rows = flat.search(np.ascontiguousarray(truncate(np.atleast_2d(queries), dim)), k)
    positions = np.where(rows >= 0, live[np.maximum(rows, 0)], -1)
    return scores.astype(np.float32), positions.astype(np.int64)
