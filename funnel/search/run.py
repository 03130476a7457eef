"""Running a plan: the Python stages, or one FAISS call where the plan allows it.

A plan whose stages name layers encodes each query only as deep as the stage at hand needs: on
torch each deeper vector continues from the hidden states of the shallower stage
(:class:`LayeredQueries`), so a query costs the layers of its deepest stage; on ONNX Runtime each
depth runs a graph of the model cut after that layer (:class:`CutQueries`). Each
index view keeps what searching it has learned — the plans already checked against it and its
compiled two-stage plans — here, beside the search code, not in the index: the view's state is
dropped with the view.
"""

from __future__ import annotations

import math
import threading
import time
import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, Union, runtime_checkable

import numpy as np

from funnel.errors import InputError
from funnel.indexes.index import top_n
from funnel.search.compiled import CompiledTwoStage, compilable
from funnel.search.exact import ExactReference
from funnel.search.fusion import reciprocal_rank_fusion
from funnel.search.plan import Plan, PlanLike, Stage, check_plan

if TYPE_CHECKING:
    from funnel.encoders.choose import TextEncoder
    from funnel.indexes.index import Index, StoredQueries
    from funnel.indexes.lexical import LexicalIndex
    from funnel.layers import HiddenStates, LayeredEncoder


@dataclass(eq=False)
class ViewState:
    """What searches have learned about one index view: its files never change once loaded, its
    shortlists only through :meth:`Index.add_shortlist <funnel.indexes.index.Index.add_shortlist>`,
    which drops what was learned of them (``shortlist_changes``)."""

    checked: dict[tuple[Plan, int], CompiledRun | None] = field(default_factory=dict)
    """Each plan and k already checked against the view, with its compiled run (None where the
    plan runs the Python stages)."""
    compiled: dict[int, CompiledTwoStage] = field(default_factory=dict)
    """Compiled two-stage plans by the dim of the shortlist they wrap."""
    shortlist_changes: int = 0
    """The view's :attr:`~funnel.indexes.index.Index.shortlist_changes` that ``checked`` and ``compiled`` describe."""
    compile_plans: bool = True
    exact: ExactReference | None = None
    """The exact scan a plan starting at full dims runs where no full-dim shortlist is stored."""
    lock: threading.Lock = field(default_factory=threading.Lock)


_STATES: weakref.WeakKeyDictionary[Index, ViewState] = weakref.WeakKeyDictionary()
_STATES_LOCK = threading.Lock()


def view_state(index: Index) -> ViewState:
    """The search state of ``index``, made on first use and dropped with the view."""
    state = _STATES.get(index)
    if state is None:
        with _STATES_LOCK:
            state = _STATES.get(index)
            if state is None:
                state = _STATES[index] = ViewState(shortlist_changes=index.shortlist_changes)
    if state.shortlist_changes != index.shortlist_changes:
        # A shortlist was replaced: a plan checked on the old one may compile now, or no longer.
        with state.lock:
            if state.shortlist_changes != index.shortlist_changes:
                state.checked, state.compiled = {}, {}
                state.shortlist_changes = index.shortlist_changes
    return state


def check_once(index: Index, plan: Plan, k: int, state: ViewState | None = None) -> CompiledRun | None:
    """:func:`~funnel.search.plan.check_plan` the first time ``plan`` and ``k`` meet this view
    (once is enough until :meth:`Index.add_shortlist <funnel.indexes.index.Index.add_shortlist>`
    replaces a shortlist, see :class:`ViewState`); returns the plan's compiled run, None where it
    runs the Python stages. ``state``: the view's, where the caller has it already."""
    state = view_state(index) if state is None else state
    key = (plan, k)
    if key in state.checked:
        return state.checked[key]
    check_plan(plan, k, index)
    found = state.checked[key] = CompiledRun.of(index, plan, k) if compilable(index, plan) else None
    return found


def compile_plans(index: Index, enabled: bool) -> None:
    """Run two-stage plans on ``index`` as one FAISS call where they allow it (the default), or
    keep every plan on the Python stages (same ranking; for comparisons, and to save the
    in-memory copy of the vectors a compiled plan makes)."""
    view_state(index).compile_plans = enabled


def compiled_plan(index: Index, dim: int) -> CompiledTwoStage:
    """The view's compiled two-stage plan over its ``dim``-dim shortlist, built once."""
    state = view_state(index)
    found = state.compiled.get(dim)
    if found is None:
        with state.lock:
            found = state.compiled.get(dim)
            if found is None:
                found = state.compiled[dim] = CompiledTwoStage.build(index, dim)
    return found


def exact_scan(index: Index) -> ExactReference:
    """The view's exact full-dimension scan (Panorama where it pays), built once."""
    state = view_state(index)
    if state.exact is None:
        with state.lock:
            if state.exact is None:
                state.exact = ExactReference(index)
    return state.exact


def scans_exactly(index: Index, dim: int, layer: int | None, *, final: bool) -> bool:
    """Whether a first stage at ``dim`` dims and ``layer`` runs the exact scan rather than a stored
    shortlist: at full dims and depth, where the index stores no shortlist there, or where the
    stage is also the last (``final``) and the stored one scores approximately — so ``full:K``
    alone is exact search on every index."""
    if dim != index.dim or not index.is_full_depth(layer):
        return False
    stored = index.segments[0].shortlists.get(dim) if index.segments else None
    return stored is None or (final and stored[0].kind != "flat")


def first_stage(index: Index, queries: StoredQueries, dim: int, n: int, *, final: bool) -> tuple[np.ndarray, np.ndarray]:
    """The first stage's top-``n``: the exact scan where :func:`scans_exactly`, else the shortlist stored at ``dim``."""
    if scans_exactly(index, dim, queries.layer, final=final):
        return exact_scan(index).search_stored(queries.vectors, n)
    return index.shortlist(queries, dim, n)


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


QuerySpec = Union[int, str, None]
"""Which query vector a stage scores with (:attr:`Stage.queries`): the model cut after a layer
(int), a query encoder the index stores (its name), or the full model (None)."""


@runtime_checkable
class QuerySource(Protocol):
    """Query vectors by source: ``at(layer)`` gives (q, dim) normalized vectors of the model cut
    after ``layer`` layers (None: the full model), ``at(name)`` those of the named query encoder."""

    def at(self, source: QuerySpec) -> np.ndarray: ...


class EncodedQueries(ABC):
    """Query vectors encoded from ``texts`` as the stages ask for them: by depth (the subclass's
    :meth:`at_depth`), or by a query encoder of ``students`` (name -> encoder), each encoded once;
    the search counts the time and the transformer layers each stage's request added
    (``layers_run``; a query encoder runs none of the model's)."""

    def __init__(self, texts: Sequence[str], students: Mapping[str, TextEncoder] | None = None) -> None:
        self.texts = list(texts)
        self.students = dict(students or {})
        self._by_student: dict[str, np.ndarray] = {}

    @property
    @abstractmethod
    def layers_run(self) -> int: ...

    @abstractmethod
    def at_depth(self, layer: int | None) -> np.ndarray: ...

    def at(self, source: QuerySpec) -> np.ndarray:
        if not isinstance(source, str):
            return self.at_depth(source)
        if source not in self._by_student:
            encoder = self.students.get(source)
            if encoder is None:
                raise InputError(f"the plan names the query encoder {source!r}, which these queries were not given")
            self._by_student[source] = encoder.encode(self.texts)
        return self._by_student[source]


class ModelQueries(EncodedQueries):
    """The full model's query vectors, encoded when a stage first needs them: a plan whose
    stages all name query encoders never runs the model."""

    def __init__(self, encoder: TextEncoder, texts: Sequence[str], depth: int, students: Mapping[str, TextEncoder] | None = None) -> None:
        super().__init__(texts, students)
        self.encoder = encoder
        self.depth = depth  # the model's layers, which its vectors cost
        self._vectors: np.ndarray | None = None

    @property
    def layers_run(self) -> int:
        return self.depth if self._vectors is not None else 0

    def at_depth(self, layer: int | None) -> np.ndarray:
        if self._vectors is None:  # the retriever gives layered sources to plans that name layers
            self._vectors = self.encoder.encode(self.texts)
        return self._vectors


class LayeredQueries(EncodedQueries):
    """Query vectors computed on demand (torch), each deeper one continuing from the hidden
    states of the last: asking for layer 2 then layer 6 runs 6 layers in all, not 8.
    """

    def __init__(self, encoder: LayeredEncoder, texts: Sequence[str], students: Mapping[str, TextEncoder] | None = None) -> None:
        super().__init__(texts, students)
        self.encoder = encoder
        self._states: HiddenStates | None = None
        self._vectors: dict[int, np.ndarray] = {}

    @property
    def layers_run(self) -> int:
        return self._states.layers_run if self._states is not None else 0

    def at_depth(self, layer: int | None) -> np.ndarray:
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


class CutQueries(EncodedQueries):
    """Query vectors from ONNX graphs of the model cut after each layer a stage names
    (:func:`funnel.encoders.choose.load_cut_encoder`), each depth encoded when a stage first
    needs it: a plan that stops at layer 2 runs 2 layers; one that goes on to the full model
    runs the full graph after the cut one (no continuation: 2 + 6 layers, on an engine about 3×
    torch's speed)."""

    def __init__(
        self,
        graphs: Callable[[int | None], TextEncoder],
        texts: Sequence[str],
        depth: int,
        students: Mapping[str, TextEncoder] | None = None,
    ) -> None:
        super().__init__(texts, students)
        self.graphs = graphs  # depth (None: the full model) -> its encoder
        self.depth = depth
        self._vectors: dict[int, np.ndarray] = {}

    @property
    def layers_run(self) -> int:
        return sum(self._vectors)

    def at_depth(self, layer: int | None) -> np.ndarray:
        depth = self.depth if layer is None else layer
        if depth not in self._vectors:
            self._vectors[depth] = self.graphs(None if depth == self.depth else depth).encode(self.texts)
        return self._vectors[depth]


class _ReadyQueries:
    """Vectors given by the caller: full depth as an array, or a mapping by layer (and by the
    name of a query encoder, for stages that name one)."""

    def __init__(self, vectors: np.ndarray | Mapping[QuerySpec, np.ndarray], index: Index) -> None:
        self.index = index
        if isinstance(vectors, Mapping):
            self.by_layer = {source_key(index, k): as_query_vectors(v, index.dim) for k, v in vectors.items()}
        else:
            self.by_layer = {None: as_query_vectors(vectors, index.dim)}

    def at(self, source: QuerySpec) -> np.ndarray:
        key = source_key(self.index, source)
        if key not in self.by_layer:
            where = f"the query encoder {source!r}" if isinstance(source, str) else f"layer {source}"
            raise InputError(
                f"the plan needs query vectors from {where}: search with query texts (Retriever.search) "
                "or pass vectors for every layer and query encoder the stages name"
            )
        return self.by_layer[key]


def source_key(index: Index, source: QuerySpec) -> QuerySpec:
    """One key per query vector a plan may use on ``index``: a query encoder's name, a shallower
    layer, or None for the full model (its depth written out or not)."""
    return source if isinstance(source, str) or not index.is_full_depth(source) else None


def as_query_vectors(vectors: np.ndarray, dim: int) -> np.ndarray:
    """Query vectors as float32 (q, dim); one vector (dim,) counts as one query. InputError for
    other shapes and for NaN or infinite values (which would rank documents arbitrarily)."""
    try:
        array = vectors if isinstance(vectors, np.ndarray) and vectors.dtype == np.float32 else np.asarray(vectors, dtype=np.float32)
    except (TypeError, ValueError):
        raise InputError(f"query vectors must be numbers in an array of shape (queries, {dim}), not {type(vectors).__name__}") from None
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2 or array.shape[1] != dim:
        raise InputError(f"query vectors have shape {array.shape}; this index wants (queries, {dim})")
    # The sum of squares is finite iff every value is, unless it overflows: then the exact check decides.
    if not math.isfinite(np.vdot(array, array)) and not np.isfinite(array).all():
        bad = int(np.flatnonzero(~np.isfinite(array).all(axis=1))[0])
        raise InputError(f"query vector {bad + 1} holds NaN or infinite values: encode the query again")
    return array


Queries = Union[np.ndarray, Mapping, QuerySource]


@dataclass(frozen=True)
class FunnelResult:
    """Top-k per query: ``scores`` (q, k) float32 and ``positions`` (q, k) int64, padded with -inf / -1."""

    scores: np.ndarray
    positions: np.ndarray
    trace: tuple[StageTrace, ...]


def run_funnel(
    index: Index, queries: Queries, plan: PlanLike, k: int, *, compiled: bool | None = None, texts: Sequence[str] | None = None
) -> FunnelResult:
    """Run the plan. ``queries``: normalized full-model vectors (q, index.dim) as the model gives
    them (the index maps them into its stored basis: :meth:`Index.stored_queries`); or a mapping
    {layer or query encoder name: vectors} for plans whose stages name layers or query encoders;
    or a :class:`QuerySource` such as :class:`EncodedQueries` (:class:`ModelQueries`,
    :class:`LayeredQueries`, :class:`CutQueries`), which encodes each source when a stage first
    needs it.

    ``compiled``: run a two-stage plan as one FAISS call where it allows it (None: the view's
    setting, see :func:`compile_plans`); False keeps the Python stages (same ranking).

    ``texts``: the query texts, for a plan whose first stage adds BM25 candidates (``+bm25:N``);
    an EncodedQueries brings its own.

    The trace's ``seconds`` are search time only; ``encode_seconds`` is the query encoding each
    stage added (from an EncodedQueries).
    """
    plan = Plan.of(plan)
    state = view_state(index)
    run = check_once(index, plan, k, state)
    if run is not None and (state.compile_plans if compiled is None else compiled):
        return run(index, queries)
    source = _query_source(queries, index)
    trace: list[StageTrace] = []
    scores = positions = lexical = np.zeros((0, 0))
    stored: dict[QuerySpec, StoredQueries] = {}
    for number, stage in enumerate(plan):
        encode_started = time.perf_counter()
        model_vectors = source.at(stage.queries)
        encoded = time.perf_counter() - encode_started if isinstance(source, EncodedQueries) else 0.0
        layers_run = source.layers_run if isinstance(source, EncodedQueries) else 0
        started = time.perf_counter()
        key = source_key(index, stage.queries)
        if key not in stored:  # into the index's stored basis once per source
            stored[key] = index.stored_queries(model_vectors, stage.layer)
        vectors = stored[key]
        dim = stage.resolved_dim(index.dim)
        if number == 0:
            scores, positions = first_stage(index, vectors, dim, stage.candidates, final=len(plan) == 1)
            if stage.lexical:
                lexical = _lexical_of(index).search(_query_texts(texts, source, len(positions)), stage.lexical)[1]
                positions = union_candidates(positions, lexical)
                scores = np.zeros(positions.shape, np.float32)  # the next stage scores the union (check_plan: there is one)
            scored = index.count
        else:
            scores = index.rescore(vectors, positions, dim)
            if stage.fusion:  # hybrid: the dense order of every candidate, fused with BM25's
                scores, positions = reciprocal_rank_fusion([top_n(scores, positions, positions.shape[1])[1], lexical], stage.candidates)
            else:
                scores, positions = top_n(scores, positions, stage.candidates)
            scored = int(trace[-1].kept)
        trace.append(StageTrace(stage, dim, scored, positions.shape[1], time.perf_counter() - started, encoded, layers_run))
    if positions.shape[1] > k:  # every stage leaves its candidates best first: only a cut remains
        scores, positions = scores[:, :k], positions[:, :k]
    return FunnelResult(scores, positions, tuple(trace))


def union_candidates(dense: np.ndarray, lexical: np.ndarray) -> np.ndarray:
    """Per query, the dense candidates (q, n) in their order, then the lexical ones (q, m) not
    among them: positions (q, n + m), padded with -1."""
    out = np.full((len(dense), dense.shape[1] + lexical.shape[1]), -1, np.int64)
    for row, (ours, theirs) in enumerate(zip(dense, lexical)):
        ours = ours[ours >= 0]
        merged = np.concatenate([ours, theirs[(theirs >= 0) & ~np.isin(theirs, ours)]])
        out[row, : len(merged)] = merged
    return out


def _lexical_of(index: Index) -> LexicalIndex:
    if index.lexical is None:  # check_plan refuses such plans first
        raise InputError("this index keeps no lexical index: rebuild it with `funnel index --lexical`")
    return index.lexical


def _query_texts(texts: Sequence[str] | None, source: QuerySource, queries: int) -> Sequence[str]:
    if texts is None and isinstance(source, EncodedQueries):
        texts = source.texts
    if texts is None:
        raise InputError("a plan with bm25 candidates needs the query texts: search with texts (Retriever.search), not vectors alone")
    if isinstance(texts, str) or len(texts) != queries:
        raise InputError(f"give one query text per query vector ({queries}) for the bm25 candidates, as a list")
    return texts


def _query_source(queries: Queries, index: Index) -> QuerySource:
    # Arrays first: a Protocol isinstance check costs more than the rest of this setup.
    if isinstance(queries, (np.ndarray, Mapping)) or not isinstance(queries, QuerySource):
        return _ReadyQueries(queries, index)
    return queries


@dataclass(frozen=True)
class CompiledRun:
    """A checked two-stage plan and k on one view, run as one FAISS call
    (:mod:`funnel.search.compiled`): everything that does not depend on the queries is settled
    once, so a query pays the FAISS call. The trace gives the call's time to the second stage,
    since the two stages no longer run apart."""

    first: Stage
    last: Stage
    dim: int
    count: int
    kept: int
    k: int
    ready_trace: StageTrace
    """The first stage's trace for ready vectors (nothing encoded), the same for every search."""

    @classmethod
    def of(cls, index: Index, plan: Plan, k: int) -> CompiledRun:
        first, last = plan
        dim, kept = first.resolved_dim(index.dim), min(first.candidates, index.count)
        return cls(first, last, dim, index.count, kept, k, StageTrace(first, dim, index.count, kept, 0.0))

    def __call__(self, index: Index, queries: Queries) -> FunnelResult:
        if isinstance(queries, np.ndarray) and self.first.encoder is None:  # ready vectors: no source, no layers to time
            model_vectors, layers_run = as_query_vectors(queries, index.dim), 0
            first = self.ready_trace
        else:
            source = _query_source(queries, index)
            encode_started = time.perf_counter()
            model_vectors = source.at(self.first.encoder)
            encoded = time.perf_counter() - encode_started if isinstance(source, EncodedQueries) else 0.0
            layers_run = source.layers_run if isinstance(source, EncodedQueries) else 0
            first = StageTrace(self.first, self.dim, self.count, self.kept, 0.0, encoded, layers_run)
        compiled = compiled_plan(index, self.dim)
        started = time.perf_counter()
        # The compiled plan maps model vectors into the stored basis itself (one FAISS product).
        scores, positions = compiled.search(np.ascontiguousarray(model_vectors), self.kept, self.k)
        second = StageTrace(self.last, index.dim, self.kept, positions.shape[1], time.perf_counter() - started, 0.0, layers_run)
        return FunnelResult(scores, positions, (first, second))
