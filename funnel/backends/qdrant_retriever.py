"""Search a funnel collection in Qdrant: each plan becomes one Query API request.

A plan ``64:200,128:50,full:10`` becomes, per query::

    query(using="full", limit=10,
          prefetch=Prefetch(using="d128", limit=50,
                            prefetch=Prefetch(using="d64", limit=200)))

Qdrant runs the innermost prefetch on the ``d64`` HNSW index, then scores only the survivors with
the vectors named by each outer level: the funnel, server-side, across shards and replicas, in
one request. A batch of queries is one ``query_batch_points`` call.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from funnel.backends.qdrant import (
    QdrantLayout,
    connect,
    point_id,
    points_batch,
    qdrant_errors,
    read_layout,
    rechunk,
    to_stored_basis,
    vector_name,
)
from funnel.errors import InputError
from funnel.retriever import Hit, check_queries, choose_plan, query_batch
from funnel.search.plan import Plan, PlanLike, Stage, check_plan, resolve_k
from funnel.vectors import truncate

if TYPE_CHECKING:
    from qdrant_client import QdrantClient
    from qdrant_client.http import models as qmodels

    from funnel.corpus import Corpus
    from funnel.encoders.choose import QueryEngine, TextEncoder
    from funnel.models import Encoder


@dataclass(frozen=True)
class QdrantResult:
    """Top-k per query: ``scores`` (q, k) float32 padded with -inf, ``ids`` funnel's document ids."""

    scores: np.ndarray
    ids: list[list[str]]


class QdrantIndex:
    """A funnel collection in Qdrant: answers plans, takes additions and deletions.

    Offers the parts of :class:`~funnel.indexes.index.Index` that plan checking reads (``dim``,
    ``shortlist_dims``, ``has_shortlist``, ``check_layer``), so plans are validated by the same
    code as for a local index.
    """

    def __init__(self, client: QdrantClient, collection: str, location: str = "qdrant") -> None:
        self.client = client
        self.collection = collection
        self.location = location
        self.layout = read_layout(client, collection, location)
        if not self.layout.complete:
            raise InputError(f"the export to collection {collection!r} at {location} did not finish: run `funnel export ... --resume`")

    @classmethod
    def open(cls, location: str, collection: str) -> QdrantIndex:
        return cls(connect(location), collection, location)

    @property
    def dim(self) -> int:
        return self.layout.dim

    @property
    def shortlist_dims(self) -> list[int]:
        return list(self.layout.shortlist_dims)

    @property
    def count(self) -> int:
        """Points in the collection (exact)."""
        with qdrant_errors(self.location):
            return int(self.client.count(self.collection, exact=True).count)

    def has_shortlist(self, dim: int, layer: int | None = None) -> bool:
        return self.is_full_depth(layer) and dim in self.layout.shortlist_dims

    @property
    def has_lexical(self) -> bool:
        """A collection holds dense vectors only (no sparse BM25 vectors yet)."""
        return False

    def is_full_depth(self, layer: int | None) -> bool:
        return layer is None or (self.layout.depth > 0 and layer == self.layout.depth)

    def check_layer(self, layer: int | None) -> None:
        if not self.is_full_depth(layer):
            raise InputError(
                f"a Qdrant collection holds the full model's vectors only, not layer {layer}'s: drop the layer from the stages"
            )

    def check_query_encoder(self, name: str) -> None:
        raise InputError(
            f"a Qdrant collection keeps no query encoders, so a stage cannot name {name!r}: search the local index, "
            "or drop the encoder from the stages"
        )

    def check_plan(self, stages: Sequence[Stage], k: int) -> None:
        """InputError unless every stage's dim is stored and the plan narrows (as for a local index)."""
        check_plan(Plan.of(stages), k, self)
        for stage in stages[1:]:
            dim = stage.resolved_dim(self.dim)
            if not self.layout.stores(dim):
                have = ", ".join(map(str, (*self.layout.prefix_dims, self.dim)))
                raise InputError(
                    f"stage {stage} rescores at {dim} dims but the collection stores only {have}: export again with --rescore-dim {dim}"
                )

    def requests(self, vectors: np.ndarray, stages: Sequence[Stage], k: int, with_payload: Any) -> list[qmodels.QueryRequest]:
        """One Query API request per query vector: nested prefetches for all stages but the last."""
        from qdrant_client.http import models as qm

        vectors = to_stored_basis(self.layout, np.atleast_2d(np.asarray(vectors, dtype=np.float32)))
        if vectors.shape[1] != self.dim:
            raise InputError(f"query vectors have {vectors.shape[1]} dims but the collection holds {self.dim}-dim vectors")
        dims = [stage.resolved_dim(self.dim) for stage in stages]
        by_dim = {dim: truncate(vectors, dim) for dim in set(dims)}
        names = [vector_name(dim, self.dim) for dim in dims]
        out = []
        for row in range(len(vectors)):
            prefetch = None
            for stage, dim, name in zip(stages[:-1], dims, names):
                prefetch = qm.Prefetch(prefetch=prefetch, query=by_dim[dim][row].tolist(), using=name, limit=stage.candidates)
            out.append(
                qm.QueryRequest(
                    prefetch=prefetch,
                    query=by_dim[dims[-1]][row].tolist(),
                    using=names[-1],
                    limit=k,
                    with_payload=with_payload,
                )
            )
        return out

    def query(
        self, vectors: np.ndarray, stages: Sequence[Stage], k: int, with_payload: Any = ("id",), *, checked: bool = False
    ) -> list[list[qmodels.ScoredPoint]]:
        """The top-``k`` points for each query vector (q, dim) under the plan, best first
        (``checked``: the caller has checked the plan already)."""
        if not checked:
            self.check_plan(stages, k)
        requests = self.requests(vectors, stages, k, list(with_payload) if isinstance(with_payload, tuple) else with_payload)
        with qdrant_errors(self.location):
            return [response.points for response in self.client.query_batch_points(self.collection, requests=requests)]

    def existing(self, ids: Sequence[str]) -> set[str]:
        """Those of ``ids`` that the collection holds."""
        found: set[str] = set()
        with qdrant_errors(self.location):
            for start in range(0, len(ids), 1024):
                chunk = [point_id(i) for i in ids[start : start + 1024]]
                points = self.client.retrieve(self.collection, ids=chunk, with_payload=["id"], with_vectors=False)
                found.update(str((point.payload or {}).get("id")) for point in points)
        return found

    def add(self, documents: pa.RecordBatch | pa.Table, vectors: np.ndarray) -> int:
        """Add documents (:data:`~funnel.corpus.DOCUMENT_SCHEMA`) with normalized full vectors
        (n, dim); ids must be new to the collection. Returns how many were added."""
        ids = documents.column("id").to_pylist()
        if vectors.shape != (len(ids), self.dim):
            raise InputError(f"vectors of shape {vectors.shape} for {len(ids)} documents of dim {self.dim}")
        repeated = sorted({i for i in ids if ids.count(i) > 1}) if len(set(ids)) != len(ids) else []
        taken = sorted(self.existing(ids)) or repeated
        if taken:
            shown = ", ".join(repr(i) for i in taken[:5]) + (" …" if len(taken) > 5 else "")
            raise InputError(f"{len(taken)} ids are in the collection already or repeated ({shown}): nothing added; ids must stay unique")
        with qdrant_errors(self.location):
            stored = to_stored_basis(self.layout, vectors)  # the model's vectors, in the collection's basis
            for chunk, chunk_vectors in rechunk([(documents, stored)], self.layout.upload_batch):
                self.client.upsert(self.collection, points=points_batch(self.layout, chunk, chunk_vectors), wait=True)
        return len(ids)

    def delete(self, ids: Sequence[str], *, ignore_missing: bool = False) -> int:
        """Delete documents by id; returns how many were deleted. Ids not in the collection raise
        InputError (nothing is deleted) unless ``ignore_missing``."""
        from qdrant_client.http import models as qm

        wanted = list(dict.fromkeys(str(i) for i in ids))
        found = self.existing(wanted)
        missing = [i for i in wanted if i not in found]
        if missing and not ignore_missing:
            shown = ", ".join(repr(i) for i in missing[:5]) + (" …" if len(missing) > 5 else "")
            raise InputError(
                f"{len(missing)} of the ids are not in the collection ({shown}): nothing deleted; check them or pass ignore_missing"
            )
        if found:
            with qdrant_errors(self.location):
                self.client.delete(self.collection, points_selector=qm.PointIdsList(points=[point_id(i) for i in found]), wait=True)
        return len(found)


class QdrantRetriever:
    """:class:`~funnel.Retriever`'s search over a Qdrant collection: the same plans (stored tuned
    plan included), the same :class:`~funnel.retriever.Hit` objects.

    ``QdrantRetriever.load("http://localhost:6333", "docs").search("query", k=10)``
    """

    def __init__(self, index: QdrantIndex, encoder: TextEncoder, stages: PlanLike | None = None) -> None:
        if encoder.dim != index.dim:
            raise InputError(f"the model gives {encoder.dim}-dim vectors but the collection holds {index.dim}-dim ones")
        self.index = index
        self.encoder = encoder
        self.stages = Plan.of(stages) if stages else None  # parsed once, here
        self._torch: Encoder | None = None

    @classmethod
    def load(
        cls,
        location: str,
        collection: str,
        model: str | None = None,
        *,
        device: str | None = None,
        stages: PlanLike | None = None,
        query_encoder: QueryEngine = "auto",
    ) -> QdrantRetriever:
        """Open ``collection`` at ``location`` (a URL, or a folder of qdrant-client's embedded mode)
        with the model the index was built with (or ``model``); queries run on ``query_encoder``
        as for :meth:`funnel.Retriever.load`."""
        from funnel.encoders.choose import load_query_encoder

        index = QdrantIndex.open(location, collection)
        return cls(index, load_query_encoder(model or index.layout.model, query_encoder, device=device), stages)

    def torch_encoder(self) -> Encoder:
        """The model on the torch engine, which encodes corpora for :meth:`add`."""
        from funnel.models import Encoder

        if self._torch is None:
            self._torch = self.encoder if isinstance(self.encoder, Encoder) else Encoder.load(self.encoder.name)
        return self._torch

    def plan(self, k: int | None = None, stages: PlanLike | None = None) -> Plan:
        """The stages a search with ``k`` runs: given ones, else the retriever's, else the stored plan, else a default."""
        return self._plan_and_k(k, stages)[0]

    def _plan_and_k(self, k: int | None, stages: PlanLike | None) -> tuple[Plan, int]:
        chosen = Plan.of(stages) if stages is not None else self.stages
        k = resolve_k(k, chosen)
        # The point count only sizes the default shortlist: skip the request when a plan is at hand.
        needs_count = not chosen and not (self.index.layout.plan and self.index.layout.plan.get("k", 0) >= k)
        count = self.index.count if needs_count else 0
        return choose_plan(k, chosen, self.index.layout.plan, self.index.shortlist_dims[0], count), k

    def info(self) -> dict[str, Any]:
        """What the collection holds, under the keys of :meth:`funnel.Retriever.info` where they mean the same."""
        layout = self.index.layout
        return {
            "backend": "qdrant",
            "location": self.index.location,
            "collection": self.index.collection,
            "documents": self.index.count,
            "model": layout.model,
            "dim": layout.dim,
            "vector_dtype": layout.vector_dtype,
            "shortlists": [{"dim": dim} for dim in layout.shortlist_dims],
            "rescore_dims": list(layout.rescore_dims),
            "plan": layout.plan,
            "rotation": "none" if layout.rotation_matrix is None else "stored",
        }

    def encode_queries(self, queries: Sequence[str]) -> np.ndarray:
        check_queries(queries)
        return self.encoder.encode(list(queries), batch_size=64)

    def search_vectors(self, query_vectors: np.ndarray, k: int | None = None, stages: PlanLike | None = None) -> QdrantResult:
        """Run the plan for ready query vectors (q, dim); scores and ids as arrays and lists."""
        plan, k = self._plan_and_k(k, stages)
        results = self.index.query(query_vectors, plan, k)
        scores = np.full((len(results), k), -np.inf, dtype=np.float32)
        ids = []
        for row, points in enumerate(results):
            scores[row, : len(points)] = [point.score for point in points]
            ids.append([str((point.payload or {}).get("id")) for point in points])
        return QdrantResult(scores, ids)

    def search(self, query: str, k: int | None = None, stages: PlanLike | None = None) -> list[Hit]:
        """Top-``k`` hits for one query, best first."""
        return self.search_batch([query], k, stages)[0]

    def search_batch(self, queries: Sequence[str], k: int | None = None, stages: PlanLike | None = None) -> list[list[Hit]]:
        """Top-``k`` hits for each query, in the order of ``queries`` (one request for all)."""
        if not query_batch(queries):
            return []
        plan, k = self._plan_and_k(k, stages)
        self.index.check_plan(plan, k)  # before encoding: a bad plan costs no model time
        results = self.index.query(self.encode_queries(queries), plan, k, with_payload=True, checked=True)
        return [[_hit(point, rank) for rank, point in enumerate(points, start=1)] for points in results]

    def add_documents(self, documents: pa.RecordBatch | pa.Table, vectors: np.ndarray) -> int:
        """Add documents with their vectors made elsewhere; see :meth:`QdrantIndex.add`."""
        return self.index.add(documents, vectors)

    def add(self, corpus: str | Path | Corpus, *, batch_size: int = 64) -> int:
        """Encode the documents of ``corpus`` with the retriever's model and add them (ids must be
        new); returns how many were added."""
        from funnel.corpus import Corpus, open_corpus
        from funnel.layers import encode_corpus

        source = corpus if isinstance(corpus, Corpus) else open_corpus(corpus)
        return sum(
            self.index.add(documents, vectors) for documents, vectors in encode_corpus(source, self.torch_encoder(), batch_size=batch_size)
        )

    def delete(self, ids: Sequence[str], *, ignore_missing: bool = False) -> int:
        """Delete documents by id; see :meth:`QdrantIndex.delete`."""
        if isinstance(ids, str):
            raise InputError("delete takes a list of ids; wrap a single id in a list")
        return self.index.delete(ids, ignore_missing=ignore_missing)


def _hit(point: qmodels.ScoredPoint, rank: int) -> Hit:
    payload = point.payload or {}
    return Hit(
        id=str(payload.get("id")),
        score=float(point.score),
        rank=rank,
        text=payload.get("text", ""),
        title=payload.get("title"),
        metadata=payload.get("metadata") or {},
    )


__all__ = ["QdrantIndex", "QdrantLayout", "QdrantResult", "QdrantRetriever"]
