"""The funnel plan: a list of stages, each keeping fewer candidates at more dims, and how to run it.

The first stage shortlists from a FAISS index over its dims; each later stage rescores the
survivors of the one before with the stored full vectors truncated to its dims (re-normalized), and
the last stage's ranking gives the top-k. ``"64:200,384:10"`` reads: shortlist 200 at 64 dims,
rescore them at 384 dims, keep 10.

A stage may also name a depth: ``"2:64:200,6:384:10"`` shortlists with the model cut after 2
layers (query and documents alike) and rescores with all 6. The query's deeper vectors continue
from the hidden states of the shallower stage (:class:`LayeredQueries`), so a query costs the
layers of its deepest stage and no more.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, Union, runtime_checkable

import numpy as np

from funnel.errors import InputError
from funnel.indexes.compiled import compilable, compiled_plan
from funnel.vectors import truncate

if TYPE_CHECKING:
    from funnel.indexes.index import Index
    from funnel.layers import HiddenStates, LayeredEncoder


@dataclass(frozen=True)
class Stage:
    """One step of the funnel: score at ``dim`` dims (None: full) and keep ``candidates``.

    ``layer`` (None: the model's full depth) is the encoder depth the stage's vectors come from.
    """

    dim: int | None
    candidates: int
    layer: int | None = None

    def __post_init__(self) -> None:
        for name, value in (("candidates", self.candidates), ("dim", self.dim), ("layer", self.layer)):
            if (value is not None or name == "candidates") and not _is_whole(value):
                raise InputError(f"a stage's {name} must be a whole number, not {value!r} ({type(value).__name__})")
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


def validate_plan(stages: Sequence[Stage], k: int, index: Index) -> None:
    """Check a plan against an index before searching; raises InputError saying what to change."""
    if not stages:
        raise InputError("a funnel needs at least one stage")
    check_k(k)
    for stage in stages:
        index.check_layer(stage.layer)
    first = stages[0].resolved_dim(index.dim)
    if not index.has_shortlist(first, stages[0].layer):
        have = ", ".join(map(str, index.shortlist_dims))
        raise InputError(f"the first stage scores at {first} dims but this index has shortlists at: {have}")
    for before, after in zip(stages, stages[1:]):
        if after.candidates > before.candidates:
            raise InputError(f"stage {after} keeps more candidates than stage {before} passes on: a funnel only narrows")
    for stage in stages:
        if stage.resolved_dim(index.dim) > index.dim:
            raise InputError(f"stage {stage} asks for {stage.dim} dims but the index has {index.dim}")
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
    encode_seconds: float = 0.0
    """Query encoding this stage added (layers run beyond the previous stage's); 0 for ready vectors."""
    layers_run: int = 0
    """Transformer layers the query had been through once this stage had its vector (0: ready vectors)."""


@runtime_checkable
class QuerySource(Protocol):
    """Query vectors by depth: ``at(layer)`` gives (q, dim) normalized vectors of the model cut
    after ``layer`` layers (None: the full model)."""

    def at(self, layer: int | None) -> np.ndarray: ...


class LayeredQueries:
    """Query vectors computed on demand, each deeper one continuing from the hidden states of the
    last: asking for layer 2 then layer 6 runs 6 layers in all, not 8.
    """

    def __init__(self, encoder: LayeredEncoder, texts: Sequence[str]) -> None:
        self.encoder = encoder
        self.texts = list(texts)
        self._states: HiddenStates | None = None
        self._vectors: dict[int, np.ndarray] = {}

    @property
    def layers_run(self) -> int:
        return self._states.layers_run if self._states is not None else 0

    def at(self, layer: int | None) -> np.ndarray:
        layer = self.encoder.num_layers if layer is None else layer
        if layer not in self._vectors:
            if self._states is None:
                self._states = self.encoder.start(self.texts)
            if layer < self._states.layer:
                # Deeper states exist already; a shallower vector would need a fresh pass.
                raise InputError(f"stages must not go back to a shallower layer ({layer} after {self._states.layer})")
            self._states = self.encoder.advance(self._states, layer)
            self._vectors[layer] = self.encoder.embed(self._states)
        return self._vectors[layer]


def check_k(k: object) -> None:
    """InputError unless ``k`` is a whole number of at least 1 (a string or 2.5 is refused, not rounded)."""
    if not _is_whole(k):
        raise InputError(f"k must be a whole number, not {k!r} ({type(k).__name__})")
    if k < 1:  # type: ignore[operator]
        raise InputError(f"k must be at least 1, not {k}")


def _is_whole(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


class _ReadyQueries:
    """Vectors given by the caller: full depth as an array, or a mapping by layer."""

    def __init__(self, vectors: np.ndarray | Mapping[int | None, np.ndarray], index: Index) -> None:
        self.index = index
        if isinstance(vectors, Mapping):
            self.by_layer = {None if index.is_full_depth(k) else k: as_query_vectors(v, index.dim) for k, v in vectors.items()}
        else:
            self.by_layer = {None: as_query_vectors(vectors, index.dim)}

    def at(self, layer: int | None) -> np.ndarray:
        key = None if self.index.is_full_depth(layer) else layer
        if key not in self.by_layer:
            raise InputError(
                f"the plan needs query vectors from layer {layer}: search with query texts (Retriever.search) "
                "or pass vectors for every layer the stages name"
            )
        return self.by_layer[key]


def as_query_vectors(vectors: np.ndarray, dim: int) -> np.ndarray:
    """Query vectors as float32 (q, dim); one vector (dim,) counts as one query. InputError for
    other shapes and for NaN or infinite values (which would rank documents arbitrarily)."""
    try:
        array = np.asarray(vectors, dtype=np.float32)
    except (TypeError, ValueError):
        raise InputError(f"query vectors must be numbers in an array of shape (queries, {dim}), not {type(vectors).__name__}") from None
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2 or array.shape[1] != dim:
        raise InputError(f"query vectors have shape {array.shape}; this index wants (queries, {dim})")
    bad = np.flatnonzero(~np.isfinite(array).all(axis=1))
    if len(bad):
        raise InputError(f"query vector {int(bad[0]) + 1} holds NaN or infinite values: encode the query again")
    return array


Queries = Union[np.ndarray, Mapping, QuerySource]


@dataclass(frozen=True)
class FunnelResult:
    """Top-k per query: ``scores`` (q, k) float32 and ``positions`` (q, k) int64, padded with -inf / -1."""

    scores: np.ndarray
    positions: np.ndarray
    trace: tuple[StageTrace, ...]


def run_funnel(index: Index, queries: Queries, stages: Sequence[Stage], k: int) -> FunnelResult:
    """Run the plan. ``queries``: normalized full-model vectors (q, index.dim) as the model gives
    them (the index rotates them into its stored basis: :meth:`Index.rotate_queries`); or a mapping
    {layer: vectors} for plans whose stages name layers; or a :class:`QuerySource` such as
    :class:`LayeredQueries`, which encodes each depth when a stage first needs it.

    The trace's ``seconds`` are search time only; ``encode_seconds`` is the query encoding each
    stage added (from a LayeredQueries).
    """
    from funnel.indexes.index import top_n

    plan_key = (tuple(stages), k)
    if plan_key not in index.checked_plans:  # an index view never changes: check each plan once
        validate_plan(stages, k, index)
        index.checked_plans.add(plan_key)
    # Arrays first: a Protocol isinstance check costs more than the rest of this setup.
    source: QuerySource
    if isinstance(queries, (np.ndarray, Mapping)) or not isinstance(queries, QuerySource):
        source = _ReadyQueries(queries, index)
    else:
        source = queries
    if compilable(index, tuple(stages)):
        return _run_compiled(index, source, stages, k)
    trace: list[StageTrace] = []
    scores = positions = np.zeros((0, 0))
    rotated: dict[int | None, np.ndarray] = {}
    for number, stage in enumerate(stages):
        encode_started = time.perf_counter()
        model_vectors = source.at(stage.layer)
        encoded = time.perf_counter() - encode_started if isinstance(source, LayeredQueries) else 0.0
        layers_run = source.layers_run if isinstance(source, LayeredQueries) else 0
        started = time.perf_counter()
        # The one place queries enter the index's stored basis (a rotation fitted at index time;
        # the identity for an index in the model's order), once per depth.
        key = None if index.is_full_depth(stage.layer) else stage.layer
        if key not in rotated:
            rotated[key] = index.rotate_queries(model_vectors, stage.layer)
        vectors = rotated[key]
        dim = stage.resolved_dim(index.dim)
        if number == 0:
            scores, positions = index.shortlist(vectors, dim, stage.candidates, stage.layer)
            scored = index.count
        else:
            scores, positions = _rescore(index, vectors, positions, dim, stage.layer)
            scores, positions = top_n(scores, positions, stage.candidates)
            scored = int(trace[-1].kept)
        trace.append(StageTrace(stage, dim, scored, positions.shape[1], time.perf_counter() - started, encoded, layers_run))
    if positions.shape[1] > k:  # every stage leaves its candidates best first: only a cut remains
        scores, positions = scores[:, :k], positions[:, :k]
    return FunnelResult(scores, positions, tuple(trace))


def _run_compiled(index: Index, source: QuerySource, stages: Sequence[Stage], k: int) -> FunnelResult:
    """A two-stage plan as one FAISS call (:mod:`funnel.indexes.compiled`); the trace gives the
    call's time to the second stage, since the two stages no longer run apart."""
    from funnel.indexes.index import top_n

    first, last = stages
    encode_started = time.perf_counter()
    model_vectors = source.at(None)
    encoded = time.perf_counter() - encode_started if isinstance(source, LayeredQueries) else 0.0
    layers_run = source.layers_run if isinstance(source, LayeredQueries) else 0
    dim = first.resolved_dim(index.dim)
    plan = compiled_plan(index, dim)
    started = time.perf_counter()
    kept = min(first.candidates, index.count)
    queries = index.rotate_queries(model_vectors)
    # FAISS ranks by the inner product with the stored float16 rows, whose norms are 1 only to
    # about 1e-4: the best 2k come back as cosines and are ranked again, so the top k and their
    # scores are the Python stages'.
    scores, positions = top_n(*plan.search(queries, kept, min(max(2 * k, k + 10), kept)), k)
    seconds = time.perf_counter() - started
    trace = (
        StageTrace(first, dim, index.count, kept, 0.0, encoded, layers_run),
        StageTrace(last, index.dim, kept, positions.shape[1], seconds, 0.0, layers_run),
    )
    return FunnelResult(scores, positions, trace)


def _rescore(index: Index, queries: np.ndarray, positions: np.ndarray, dim: int, layer: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    valid = positions >= 0
    # Cosine of the truncated vectors, computed as dot / norm over the stored prefix: the same
    # scores as truncate() then dot, without reading the unused dims or writing a normalized copy.
    candidates = index.vectors(np.where(valid, positions, 0), dim, layer)
    dots = np.einsum("qnd,qd->qn", candidates, truncate(queries, dim))
    norms = np.sqrt(np.einsum("qnd,qnd->qn", candidates, candidates))
    scores = np.divide(dots, norms, out=np.zeros_like(dots), where=norms > 0)
    return np.where(valid, scores, -np.inf).astype(np.float32), positions


def exact_search(index: Index, queries: np.ndarray, k: int, dim: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exhaustive inner-product search over the live stored vectors at ``dim`` dims: the reference
    ranking. ``queries``: the model's vectors (rotated here like any search's). Returns (scores
    (q, k), positions (q, k)); deleted rows never appear."""
    import faiss

    dim = dim or index.dim
    queries = index.rotate_queries(queries)
    live = index.live_positions()
    flat = faiss.IndexFlatIP(dim)
    for start in range(0, len(live), 65_536):
        flat.add(truncate(index.vectors(live[start : start + 65_536]), dim))
    k = min(k, max(len(live), 1))
    scores, rows = flat.search(np.ascontiguousarray(truncate(np.atleast_2d(queries), dim)), k)
    positions = np.where(rows >= 0, live[np.maximum(rows, 0)], -1)
    return scores.astype(np.float32), positions.astype(np.int64)
