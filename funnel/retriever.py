"""Retriever: load an index with its model and search it with a funnel of stages."""

from __future__ import annotations

import functools
import logging
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from funnel.encoders.choose import QueryEngine, TextEncoder, load_cut_encoder, load_query_encoder, measured_precision, prepare_query_graph
from funnel.encoders.onnx_engine import OnnxEncoder
from funnel.errors import InputError, ModelError
from funnel.indexes.builder import IndexConfig
from funnel.indexes.index import Index
from funnel.models import Encoder
from funnel.search.plan import Plan, PlanLike, Stage, check_k, resolve_k
from funnel.search.run import CutQueries, EncodedQueries, FunnelResult, LayeredQueries, ModelQueries, StageTrace, check_once, run_funnel

log = logging.getLogger("funnel")

if TYPE_CHECKING:
    from funnel.corpus import Corpus
    from funnel.layers import LayeredEncoder
    from funnel.tuning.tuner import TunedPlan

DEFAULT_SHORTLIST = 200


@dataclass(frozen=True)
class Hit:
    """One search result."""

    id: str
    score: float
    rank: int
    text: str
    title: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TracedSearch:
    """Hits for each query with what produced them: the plan run, each stage's trace, the
    seconds spent encoding the queries (all depths together) and the index version searched."""

    hits: list[list[Hit]]
    plan: tuple[Stage, ...]
    trace: tuple[StageTrace, ...]
    encode_seconds: float
    version: int


@runtime_checkable
class Searcher(Protocol):
    """The public surface every retriever offers: :class:`Retriever` (a local index),
    :class:`~funnel.backends.qdrant_retriever.QdrantRetriever` (a Qdrant collection) and
    :class:`~funnel.remote.RemoteRetriever` (a ``funnel serve`` server). The same plan gives the
    same hits on each, as far as the store allows (tests/test_searchers.py)."""

    def search(self, query: str, k: int | None = None, stages: PlanLike | None = None) -> list[Hit]: ...

    def search_batch(self, queries: Sequence[str], k: int | None = None, stages: PlanLike | None = None) -> list[list[Hit]]: ...

    def info(self) -> dict[str, Any]: ...


class Retriever:
    """Search an index: ``Retriever.load("indexes/docs").search("query", k=10)``.

    Thread-safe: searches may run concurrently from many threads, and each search answers from
    one version of the index. A retriever keeps the version it loaded while writers add, delete
    or compact; :meth:`reload_if_changed` (or :meth:`refresh`) moves it to the newest version,
    and searches already running finish on the version they started with.
    """

    def __init__(self, index: Index, encoder: TextEncoder, stages: PlanLike | None = None) -> None:
        if encoder.dim != index.dim:
            raise InputError(f"the model gives {encoder.dim}-dim vectors but the index holds {index.dim}-dim ones")
        self.index = index
        self.encoder = encoder
        self.stages = Plan.of(stages) if stages else None  # parsed once, here
        self._reload_lock = threading.Lock()
        self._layered: LayeredEncoder | None = None
        self._cut_encoders: dict[int, OnnxEncoder] = {}  # graphs of the model cut after a layer, by depth
        self._cut_lock = threading.Lock()
        self._students: dict[tuple[Path, str], TextEncoder] = {}  # stored query encoders by (index, folder)
        self._torch: Encoder | None = encoder if isinstance(encoder, Encoder) else None
        self._failed_stamp: tuple[int, ...] | None = None

    def refresh(self) -> Index:
        """Load the index folder's current version and search it from now on; returns it."""
        with self._reload_lock:
            self.index = self._load_current()
            return self.index

    def reload_if_changed(self) -> bool:
        """Load the newest version if a writer changed the index since it was loaded (a cheap stat
        otherwise); returns whether it reloaded.

        A version that fails to load raises once and keeps this retriever on the version it has;
        it is not tried again (each try would check every byte) until the folder changes again.
        """
        if self._is_current(self.index.stamp_on_disk()):
            return False
        with self._reload_lock:
            stamp = self.index.stamp_on_disk()
            if self._is_current(stamp):  # another thread reloaded (or failed) meanwhile
                return False
            try:
                self.index = self._load_current()
            except Exception:
                self._failed_stamp = stamp
                raise
            return True

    def _is_current(self, stamp: tuple[int, ...]) -> bool:
        return stamp == self.index.stamp or stamp == self._failed_stamp

    def _load_current(self) -> Index:
        index = Index.load(self.index.path)
        if index.dim != self.encoder.dim:
            raise InputError(f"the index at {index.path} now holds {index.dim}-dim vectors but the model gives {self.encoder.dim}")
        return index

    @classmethod
    def build(
        cls,
        corpus: str | Path | Corpus,
        path: str | Path,
        *,
        model: str | Encoder | None = None,
        config: IndexConfig = IndexConfig(),
        overwrite: bool = False,
        resume: bool = False,
        show_progress: bool | None = None,
    ) -> Retriever:
        """Encode ``corpus`` once, write an index folder at ``path`` and return a retriever over it.

        Args:
            corpus: a .parquet or .jsonl file, a BEIR folder, or a :func:`~funnel.open_corpus`
                result (to name other columns or skip invalid rows).
            path: the index folder to write (built beside it and renamed into place).
            model: a model folder or a loaded :class:`~funnel.Encoder` [default: the offline MiniLM].
            config: shortlist dims and kinds, storage type, stored layers (:class:`~funnel.IndexConfig`).
            overwrite: replace an existing index at ``path`` (never anything that is not an index).
            resume: continue an interrupted build of the same corpus.
            show_progress: a progress bar while encoding [default: when stderr is a terminal, as the CLI].

        Example::

            retriever = Retriever.build("examples/debian-300.parquet", "indexes/debian-300")
            retriever.search("play a puzzle game over the network", k=3)
        """
        from funnel.corpus import Corpus, open_corpus
        from funnel.indexes.builder import build_index

        source = corpus if isinstance(corpus, Corpus) else open_corpus(corpus)
        source.validate()  # a bad row fails before the model loads
        encoder = model if isinstance(model, Encoder) else Encoder.load(model)
        built = build_index(
            source, encoder, path, config, overwrite=overwrite, resume=resume, show_progress=_progress_wanted(show_progress)
        )
        prepare_query_graph(encoder)  # so that Retriever.load of this index starts without torch
        return cls(Index.load(built), encoder)

    def add(self, corpus: str | Path | Corpus, *, show_progress: bool | None = None) -> int:
        """Encode the documents of ``corpus`` and add them (ids must be new); returns how many were
        added. This retriever moves to the new version; other readers see it on reload.
        ``show_progress``: a progress bar [default: when stderr is a terminal]."""
        from funnel.corpus import Corpus, open_corpus
        from funnel.indexes.updates import add_corpus

        source = corpus if isinstance(corpus, Corpus) else open_corpus(corpus)
        before = self.index.count
        manifest = add_corpus(self.index.path, source, self.torch_encoder(), show_progress=_progress_wanted(show_progress))
        self.refresh()
        return manifest.count - before

    def delete(self, ids: Sequence[str], *, ignore_missing: bool = False) -> int:
        """Delete documents by id (exactly as stored); returns how many were deleted. Ids not in
        the index raise InputError and delete nothing, unless ``ignore_missing``."""
        from funnel.indexes.updates import delete_documents

        if isinstance(ids, str):
            raise InputError("delete takes a list of ids; wrap a single id in a list")
        deleted = delete_documents(self.index.path, ids, ignore_missing=ignore_missing)
        self.refresh()
        return deleted

    def compact(self) -> None:
        """Rewrite the live documents into one segment, dropping deleted rows (positions change, ids do not)."""
        from funnel.indexes.updates import compact_index

        compact_index(self.index.path)
        self.refresh()

    @classmethod
    def load(
        cls,
        path: str | Path,
        model: str | None = None,
        *,
        device: str | None = None,
        stages: PlanLike | None = None,
        query_encoder: QueryEngine = "auto",
    ) -> Retriever:
        """Open the index at ``path`` with the model it was built with (or ``model``). Queries run
        on ``query_encoder`` (see :func:`funnel.encoders.load_query_encoder`): by default the
        model's ONNX graph on CPU, without importing torch."""
        index = Index.load(path)
        return cls(index, index_query_encoder(index, model, query_encoder, device=device), stages)

    def torch_encoder(self) -> Encoder:
        """The model on the torch engine, for what the ONNX engine does not do (encoding corpora
        into an index, layered stages, tuning): the retriever's own encoder when it is one."""
        if self._torch is None:
            self._torch = Encoder.load(self.encoder.name)
        return self._torch

    def plan(self, k: int | None = None, stages: PlanLike | None = None, index: Index | None = None) -> Plan:
        """The stages a search with ``k`` runs: given ones, else the retriever's, else the index's default."""
        return self._plan_and_k(k, stages, index or self.index)[0]

    def _plan_and_k(self, k: int | None, stages: PlanLike | None, index: Index) -> tuple[Plan, int]:
        given = Plan.of(stages) if stages is not None else self.stages
        k = resolve_k(k, given)
        return choose_plan(k, given, index.manifest.plan, index.shortlist_dims[0], index.count), k

    def info(self) -> dict[str, Any]:
        """What the loaded version holds (``funnel info --json`` without the file sizes)."""
        from funnel.indexes.summary import manifest_summary

        index = self.index
        return {"index": str(index.path), "loaded_version": index.version, **manifest_summary(index.manifest)}

    def tune(
        self,
        target_recall: float = 0.99,
        k: int = 10,
        queries: Sequence[str] | np.ndarray | str | Path | None = None,
        *,
        save: bool = True,
        **options: Any,
    ) -> TunedPlan:
        """Choose the cheapest plan whose top-``k`` agrees with exact search at ``target_recall``
        (see :func:`funnel.tuning.tune`; ``options`` are :class:`~funnel.tuning.TuneOptions` fields),
        and with ``save`` store it in the index manifest as the default plan for searches."""
        from funnel.tuning import TuneOptions, tune
        from funnel.tuning.calibration import resolve_queries
        from funnel.tuning.query_precision import measure_query_precision
        from funnel.tuning.store import save_plan

        if "dims" in options and options["dims"] is not None:
            options["dims"] = tuple(options["dims"])
        settings = TuneOptions(**options)
        encoder = self.torch_encoder()
        calibration = resolve_queries(self.index, encoder, queries, settings.calibration_size, settings.seed)
        result = tune(self.index, encoder, target_recall, k, calibration, settings)
        decision = measure_query_precision(self.index, encoder.name, Plan.of(result.stages), k, calibration.texts, target_recall)
        result = replace(result, query_encoder=decision)
        if save:
            self.index.manifest = save_plan(self.index.path, result.to_manifest())
        return result

    def encode_queries(self, queries: Sequence[str]) -> np.ndarray:
        """Normalized full-dimension query vectors, shape (len(queries), dim)."""
        check_queries(queries)
        return self.encoder.encode(list(queries), batch_size=64)

    def search_vectors(self, query_vectors: np.ndarray, k: int | None = None, stages: PlanLike | None = None) -> FunnelResult:
        """Run the funnel for ready query vectors (q, dim); arrays for machines. Positions refer to
        ``self.index`` as it was when the call started (see :meth:`reload_if_changed`). Without
        texts there are no BM25 candidates: a default plan that adds them runs its dense part
        (a plan given with ``+bm25:N`` is refused)."""
        index = self.index
        plan, k = self._plan_and_k(k, stages, index)
        if stages is None and plan.is_lexical:
            plan = plan.dense()
        return run_funnel(index, query_vectors, plan, k)

    def search(self, query: str, k: int | None = None, stages: PlanLike | None = None) -> list[Hit]:
        """Top-``k`` hits for one query, best first. ``k``: when not given, what the plan's last
        stage keeps, else 10 (:func:`funnel.search.plan.resolve_k`)."""
        return self.search_batch([query], k, stages)[0]

    def search_batch(self, queries: Sequence[str], k: int | None = None, stages: PlanLike | None = None) -> list[list[Hit]]:
        """Top-``k`` hits for each query, in the order of ``queries``."""
        if not query_batch(queries):
            return []
        return self.search_batch_traced(queries, k, stages).hits

    def search_batch_traced(self, queries: Sequence[str], k: int | None = None, stages: PlanLike | None = None) -> TracedSearch:
        """:meth:`search_batch` with the plan it ran and per-stage timings (for servers and reports)."""
        if isinstance(queries, str) or not queries:
            raise InputError("search_batch_traced takes a non-empty list of queries")
        check_queries(queries)
        index = self.index  # one version for the whole call, even if another thread reloads
        plan, k = self._plan_and_k(k, stages, index)
        check_once(index, plan, k)  # before encoding: a bad k or plan costs nothing
        started = time.perf_counter()
        source = self._query_source(queries, plan, index)
        encoded = time.perf_counter() - started  # full-depth encoding; layered sources encode per stage
        result = run_funnel(index, source, plan, k, texts=queries)
        hits = [self._hits(index, scores, positions) for scores, positions in zip(result.scores, result.positions)]
        return TracedSearch(hits, tuple(plan), result.trace, encoded + sum(t.encode_seconds for t in result.trace), index.version)

    def _query_source(self, queries: Sequence[str], plan: Sequence[Stage], index: Index) -> np.ndarray | EncodedQueries:
        """Full-model vectors for a plan at full depth; for a plan that names shallower layers or
        stored query encoders, query vectors that run each source only when a stage needs it:
        the query encoders on their own engines; graphs of the model cut after each layer on the
        ONNX engine (exported on first use), else torch's LayeredQueries (the torch engine, or a
        model whose cut graphs cannot be exported)."""
        shallow = sorted({int(stage.layer or 0) for stage in plan if not index.is_full_depth(stage.layer)})
        names = sorted({stage.encoder for stage in plan if stage.encoder is not None})
        if not shallow and not names:
            return self.encode_queries(queries)
        check_queries(queries)
        students = {name: self._student(index, name) for name in names}
        if not shallow:
            return ModelQueries(self.encoder, queries, index.depth, students)
        if isinstance(self.encoder, OnnxEncoder):
            try:
                for depth in shallow:  # exported (or refused) now, before any query runs
                    self._cut_encoder(depth)
                return CutQueries(self._cut_encoder, queries, index.depth, students)
            except ModelError as exc:
                log.warning("layered queries run on torch: %s", exc)
        if self._layered is None:
            from funnel.layers import LayeredEncoder

            self._layered = LayeredEncoder(self.torch_encoder())
        return LayeredQueries(self._layered, queries, students)

    def _student(self, index: Index, name: str) -> TextEncoder:
        """The query encoder ``name`` stored in ``index``, opened (and checked) once per stored folder."""
        from funnel.indexes.query_encoders import open_query_encoder

        entry = index.manifest.query_encoder(name)
        key = (index.path, entry.folder if entry is not None else name)
        found = self._students.get(key)
        if found is None:
            with self._cut_lock:  # the lock of every engine opened on first use
                found = self._students.get(key)
                if found is None:
                    found = self._students[key] = open_query_encoder(index, name)
        return found

    def _cut_encoder(self, depth: int | None) -> TextEncoder:
        """The query encoder of the model cut after ``depth`` layers (None: the retriever's own)."""
        if depth is None:
            return self.encoder
        with self._cut_lock:  # one export at a time: two would share a staging folder
            found = self._cut_encoders.get(depth)
            if found is None:
                found = self._cut_encoders[depth] = load_cut_encoder(self.encoder.name, depth, encoder=self._torch)
            return found

    @staticmethod
    def _hits(index: Index, scores: np.ndarray, positions: np.ndarray) -> list[Hit]:
        keep = positions >= 0
        documents = index.documents([int(p) for p in positions[keep]])
        return [
            Hit(id=doc["id"], score=float(score), rank=rank, text=doc["text"], title=doc["title"], metadata=doc["metadata"])
            for rank, (score, doc) in enumerate(zip(scores[keep], documents), start=1)
        ]


def index_query_encoder(index: Index, model: str | None = None, engine: QueryEngine = "auto", *, device: str | None = None) -> TextEncoder:
    """The query encoder for ``index``: ``engine`` on ``model`` (default: the index's), where
    ``auto`` takes the 8-bit graph only if the index's tuning measured it as good enough."""
    return load_query_encoder(model or index.manifest.model, engine, device=device, auto_precision=measured_precision(index.manifest.plan))


def choose_plan(k: int, chosen: PlanLike | None, stored: dict[str, Any] | None, shortlist_dim: int, count: int) -> Plan:
    """The plan a search with ``k`` runs: ``chosen``, else a stored (tuned) plan made for at
    least ``k`` results, else a shortlist of max(200, 20·k) at ``shortlist_dim`` rescored at full
    dims. Shared by every backend."""
    check_k(k)
    if chosen:
        return Plan.of(chosen)
    if stored and stored.get("k", 0) >= k:
        return stored_plan(stored["stages"])
    return Plan.two_stage(shortlist_dim, min(max(DEFAULT_SHORTLIST, 20 * k), max(count, 1)), k)


@functools.lru_cache(maxsize=64)
def stored_plan(text: str) -> Plan:
    """A manifest's tuned plan, parsed once per process (not on every search that uses it)."""
    return Plan.parse(text)


def query_batch(queries: Sequence[str]) -> Sequence[str]:
    """The ``queries`` of a ``search_batch`` call, checked to be a list rather than one string;
    the same rule for every retriever kind (local, remote, Qdrant)."""
    if isinstance(queries, str) or not isinstance(queries, Sequence):
        raise InputError(f"search_batch takes a list of queries (strings), not a {type(queries).__name__}; use search() for one")
    return queries


def check_queries(queries: Sequence[str]) -> None:
    for number, query in enumerate(queries, start=1):
        if not isinstance(query, str):
            raise InputError(f"query {number} is not a string ({type(query).__name__} {query!r:.40}): give text to search for")
        if not query.strip():
            raise InputError(f"query {number} is empty: give some text to search for")
        if "\x00" in query:
            raise InputError(f"query {number} holds a NUL byte: give text, not binary data")
        try:
            query.encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates: undecodable bytes from a command line or file
            raise InputError(f"query {number} is not valid UTF-8 text: give text, not binary data") from None


def _progress_wanted(show_progress: bool | None) -> bool:
    """An explicit choice, else a bar only where a person watches (stderr is a terminal)."""
    return sys.stderr.isatty() if show_progress is None else show_progress
