"""Retriever: load an index with its model and search it with a funnel of stages."""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from funnel.errors import InputError
from funnel.indexes.index import Index
from funnel.models import Encoder
from funnel.stages import FunnelResult, LayeredQueries, Stage, parse_stages, run_funnel, two_stage

if TYPE_CHECKING:
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


class Retriever:
    """Search an index: ``Retriever.load("indexes/docs").search("query", k=10)``.

    Thread-safe: searches may run concurrently from many threads, and each search answers from
    one version of the index. A retriever keeps the version it loaded while writers add, delete
    or compact; :meth:`reload_if_changed` (or :meth:`refresh`) moves it to the newest version,
    and searches already running finish on the version they started with.
    """

    def __init__(self, index: Index, encoder: Encoder, stages: Sequence[Stage] | str | None = None) -> None:
        if encoder.dim != index.dim:
            raise InputError(f"the model gives {encoder.dim}-dim vectors but the index holds {index.dim}-dim ones")
        self.index = index
        self.encoder = encoder
        self.stages = parse_stages(stages) if isinstance(stages, str) else (tuple(stages) if stages else None)
        self._reload_lock = threading.Lock()
        self._layered: "LayeredEncoder | None" = None

    def refresh(self) -> Index:
        """Load the index folder's current version and search it from now on; returns it."""
        with self._reload_lock:
            self.index = self._load_current()
            return self.index

    def reload_if_changed(self) -> bool:
        """Load the newest version if a writer changed the index since it was loaded (a cheap stat
        otherwise); returns whether it reloaded."""
        if not self.index.changed_on_disk():
            return False
        with self._reload_lock:
            if not self.index.changed_on_disk():  # another thread reloaded meanwhile
                return False
            self.index = self._load_current()
            return True

    def _load_current(self) -> Index:
        index = Index.load(self.index.path)
        if index.dim != self.encoder.dim:
            raise InputError(f"the index at {index.path} now holds {index.dim}-dim vectors but the model gives {self.encoder.dim}")
        return index

    @classmethod
    def load(
        cls, path: str | Path, model: str | None = None, *, device: str | None = None, stages: Sequence[Stage] | str | None = None
    ) -> "Retriever":
        """Open the index at ``path`` with the model it was built with (or ``model``)."""
        index = Index.load(path)
        return cls(index, Encoder.load(model or index.manifest.model, device=device), stages)

    def plan(self, k: int, stages: Sequence[Stage] | str | None = None, index: Index | None = None) -> tuple[Stage, ...]:
        """The stages a search with ``k`` runs: given ones, else the retriever's, else the index's default."""
        index = index or self.index
        return choose_plan(k, stages if stages is not None else self.stages, index.manifest.plan, index.shortlist_dims[0], index.count)

    def tune(
        self, target_recall: float = 0.99, k: int = 10, queries: Sequence[str] | np.ndarray | str | Path | None = None,
        *, save: bool = True, **options: Any,
    ) -> "TunedPlan":
        """Choose the cheapest plan whose top-``k`` agrees with exact search at ``target_recall``
        (see :func:`funnel.tuning.tune`; ``options`` are :class:`~funnel.tuning.TuneOptions` fields),
        and with ``save`` store it in the index manifest as the default plan for searches."""
        from funnel.tuning import TuneOptions, tune
        from funnel.tuning.store import save_plan

        if "dims" in options and options["dims"] is not None:
            options["dims"] = tuple(options["dims"])
        result = tune(self.index, self.encoder, target_recall, k, queries, TuneOptions(**options))
        if save:
            self.index.manifest = save_plan(self.index.path, result.to_manifest())
        return result

    def encode_queries(self, queries: Sequence[str]) -> np.ndarray:
        """Normalized full-dimension query vectors, shape (len(queries), dim)."""
        _check_queries(queries)
        return self.encoder.encode(list(queries), batch_size=64)

    def search_vectors(self, query_vectors: np.ndarray, k: int = 10, stages: Sequence[Stage] | str | None = None) -> FunnelResult:
        """Run the funnel for ready query vectors (q, dim); arrays for machines. Positions refer to
        ``self.index`` as it was when the call started (see :meth:`reload_if_changed`)."""
        index = self.index
        return run_funnel(index, query_vectors, self.plan(k, stages, index), k)

    def search(self, query: str, k: int = 10, stages: Sequence[Stage] | str | None = None) -> list[Hit]:
        """Top-``k`` hits for one query, best first."""
        return self.search_batch([query], k, stages)[0]

    def search_batch(self, queries: Sequence[str], k: int = 10, stages: Sequence[Stage] | str | None = None) -> list[list[Hit]]:
        """Top-``k`` hits for each query, in the order of ``queries``."""
        if isinstance(queries, str):
            raise InputError("search_batch takes a list of queries; use search() for one")
        if not queries:
            return []
        index = self.index  # one version for the whole call, even if another thread reloads
        plan = self.plan(k, stages, index)
        result = run_funnel(index, self._query_source(queries, plan, index), plan, k)
        return [self._hits(index, scores, positions) for scores, positions in zip(result.scores, result.positions)]

    def _query_source(self, queries: Sequence[str], plan: Sequence[Stage], index: Index) -> "np.ndarray | LayeredQueries":
        """Full-model vectors for a plan at full depth; for a plan that names shallower layers, a
        LayeredQueries that runs each query only as deep as the stage at hand needs."""
        shallow = [stage.layer for stage in plan if not index.is_full_depth(stage.layer)]
        if not shallow:
            return self.encode_queries(queries)
        _check_queries(queries)
        if self._layered is None:
            from funnel.layers import LayeredEncoder

            self._layered = LayeredEncoder(self.encoder)
        return LayeredQueries(self._layered, queries)

    @staticmethod
    def _hits(index: Index, scores: np.ndarray, positions: np.ndarray) -> list[Hit]:
        keep = positions >= 0
        documents = index.documents([int(p) for p in positions[keep]])
        return [
            Hit(id=doc["id"], score=float(score), rank=rank, text=doc["text"], title=doc["title"], metadata=doc["metadata"])
            for rank, (score, doc) in enumerate(zip(scores[keep], documents), start=1)
        ]


def choose_plan(
    k: int, chosen: Sequence[Stage] | str | None, stored: dict[str, Any] | None, shortlist_dim: int, count: int
) -> tuple[Stage, ...]:
    """The stages a search with ``k`` runs: ``chosen`` ones, else a stored (tuned) plan made for at
    least ``k`` results, else a two-stage funnel from ``shortlist_dim``. Shared by every backend."""
    if isinstance(chosen, str):
        return parse_stages(chosen)
    if chosen:
        return tuple(chosen)
    if stored and stored.get("k", 0) >= k:
        return parse_stages(stored["stages"])
    return two_stage(shortlist_dim, min(max(DEFAULT_SHORTLIST, 20 * k), max(count, 1)), k)


def _check_queries(queries: Sequence[str]) -> None:
    for number, query in enumerate(queries):
        if not isinstance(query, str) or not query.strip():
            raise InputError(f"query {number + 1} is empty: give some text to search for")
