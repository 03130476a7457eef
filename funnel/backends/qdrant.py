"""A funnel index in a Qdrant collection: the layout, the connection, and the upload with resume.

One point per document, with one named vector per stored prefix dim and one for the full vector:

- ``d64``, ``d128``, …: the stored vectors truncated to that many dims and re-normalized (the same
  vectors funnel's own shortlist indexes hold). Dims a plan shortlists from get an HNSW index,
  optionally quantized (scalar int8 or binary); dims only rescored keep no index.
- ``full``: the stored full vector (float16 where the index stores float16), on disk, no index:
  it is only ever read for the candidates of a rescoring stage.

The payload is the document: ``id`` (funnel's id; Qdrant's point id is a UUID derived from it),
``title``, ``text`` and ``metadata``. The collection's metadata holds the :class:`QdrantLayout`,
so a retriever knows the model, the dims and the tuned plan without the index folder.

qdrant-client is imported here only: ``import funnel`` never loads it.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from funnel.errors import FunnelError, InputError
from funnel.vectors import truncate

if TYPE_CHECKING:
    from qdrant_client import QdrantClient
    from qdrant_client.http import models as qmodels

    from funnel.indexes.index import Index

FULL_VECTOR = "full"
METADATA_KEY = "funnel"
QUANTIZATIONS = ("none", "scalar", "binary")
# Point ids are UUIDs derived from funnel's string ids, so an upload repeated after a crash
# overwrites the same points instead of adding copies, and a delete by id needs no lookup table.
ID_NAMESPACE = uuid.UUID("6f0e5c1e-2a47-4d0b-9a58-1c0f3b8a9e21")


class QdrantError(FunnelError):
    """Qdrant is unreachable, refuses a request, or holds a collection funnel cannot use."""


@dataclass(frozen=True)
class QdrantLayout:
    """What a collection holds, stored in its metadata: the model, the dims with an HNSW index
    (``shortlist_dims``), the dims stored only for rescoring, and the plan searches default to."""

    model: str
    dim: int
    shortlist_dims: tuple[int, ...]
    rescore_dims: tuple[int, ...] = ()
    quantization: str = "none"
    vector_dtype: str = "float16"
    depth: int = 0
    plan: dict[str, Any] | None = None
    model_metadata: dict[str, Any] = field(default_factory=dict)
    upload_batch: int = 256
    complete: bool = False
    """False while an export is under way: a retriever refuses the collection, ``resume`` continues it."""
    rotation: str | None = None
    """The index's orthogonal rotation (float32, row-major, base64) when its vectors are stored
    rotated: queries and added documents are mapped into that basis (see :func:`to_stored_basis`)."""
    source: dict[str, Any] | None = None
    """What an export was made from: the index's version, live count and a digest of its live ids.
    A resumed export must come from the same, or it would mix two versions of the index."""

    @functools.cached_property
    def rotation_matrix(self) -> np.ndarray | None:
        if self.rotation is None:
            return None
        matrix = np.frombuffer(base64.b64decode(self.rotation), dtype=np.float32)
        if matrix.size != self.dim * self.dim:
            raise QdrantError(f"the collection's rotation holds {matrix.size} numbers, not {self.dim}×{self.dim}: export the index again")
        return matrix.reshape(self.dim, self.dim)

    def __post_init__(self) -> None:
        if self.quantization not in QUANTIZATIONS:
            raise InputError(f"quantization {self.quantization!r} is not supported: choose {', '.join(QUANTIZATIONS)}")
        if not self.shortlist_dims:
            raise InputError("a Qdrant collection needs at least one shortlist dim")
        for dim in (*self.shortlist_dims, *self.rescore_dims):
            if not 1 <= dim <= self.dim:
                raise InputError(f"dim {dim} does not fit the model's {self.dim} dims: choose 1..{self.dim}")
        if self.upload_batch < 1:
            raise InputError(f"upload batch must be at least 1, not {self.upload_batch}")
        object.__setattr__(self, "shortlist_dims", tuple(sorted(set(self.shortlist_dims))))
        object.__setattr__(self, "rescore_dims", tuple(sorted(set(self.rescore_dims) - set(self.shortlist_dims))))

    @property
    def prefix_dims(self) -> tuple[int, ...]:
        """Dims stored as their own truncated vector (the full dim is the ``full`` vector)."""
        return tuple(sorted(d for d in {*self.shortlist_dims, *self.rescore_dims} if d != self.dim))

    def stores(self, dim: int) -> bool:
        return dim == self.dim or dim in self.prefix_dims

    def to_metadata(self) -> dict[str, Any]:
        return {METADATA_KEY: asdict(self)}

    @classmethod
    def from_metadata(cls, metadata: dict[str, Any] | None, where: str) -> QdrantLayout:
        data = (metadata or {}).get(METADATA_KEY)
        if not isinstance(data, dict):
            raise QdrantError(
                f"{where} was not written by funnel (no '{METADATA_KEY}' metadata): export an index to it with `funnel export`"
            )
        try:
            return cls(**{**data, "shortlist_dims": tuple(data["shortlist_dims"]), "rescore_dims": tuple(data.get("rescore_dims", ()))})
        except (TypeError, KeyError) as exc:
            raise QdrantError(f"{where} has funnel metadata this version cannot read ({exc})") from None


def vector_name(dim: int, full_dim: int) -> str:
    """The named vector holding the ``dim``-dim prefix: ``d64``, …, or ``full``."""
    return FULL_VECTOR if dim == full_dim else f"d{dim}"


def point_id(doc_id: str) -> str:
    """Qdrant's point id for funnel's document id (a UUID5: stable across runs and machines)."""
    return str(uuid.uuid5(ID_NAMESPACE, doc_id))


def to_stored_basis(layout: QdrantLayout, vectors: np.ndarray) -> np.ndarray:
    """Vectors of the model (q, dim) in the basis the collection's vectors are stored in: rotated
    like the exported index's (:meth:`funnel.indexes.index.Index.stored_queries`), or unchanged
    where the index keeps the model's order. Every query and every added document goes through here."""
    rotation = layout.rotation_matrix
    return vectors if rotation is None else np.asarray(vectors, dtype=np.float32) @ rotation


@contextmanager
def qdrant_errors(location: str) -> Iterator[None]:
    """Turn qdrant-client's transport and API failures into one QdrantError line."""
    from qdrant_client.http.exceptions import ApiException, ResponseHandlingException

    try:
        yield
    except ResponseHandlingException as exc:  # the request never got an answer
        raise QdrantError(f"cannot reach Qdrant at {location}: {_first_line(exc)}") from None
    except ApiException as exc:
        raise QdrantError(f"Qdrant at {location} failed: {_first_line(exc)}") from None
    except (ConnectionError, TimeoutError) as exc:
        raise QdrantError(f"cannot reach Qdrant at {location}: {_first_line(exc)}") from None
    except Exception as exc:  # grpc.RpcError and friends: a transport error, whatever its class
        if type(exc).__module__.split(".")[0] in {"grpc", "httpx", "httpcore"}:
            raise QdrantError(f"cannot reach Qdrant at {location}: {_first_line(exc)}") from None
        raise


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def connect(location: str, *, timeout: int = 30) -> QdrantClient:
    """A client for ``location``: an ``http(s)://`` URL (a Qdrant server or cluster), ``:memory:``,
    or a folder (qdrant-client's embedded local mode). Checks that it answers."""
    try:
        from qdrant_client import QdrantClient
    except ImportError:
        raise InputError("the Qdrant backend needs qdrant-client: pip install 'funnel[qdrant]'") from None
    if location.startswith(("http://", "https://")):
        client = QdrantClient(url=location, timeout=timeout, check_compatibility=False)  # get_collections below is the check
    elif location == ":memory:":
        client = QdrantClient(":memory:")
    else:
        folder = Path(location).expanduser()
        if folder.exists() and not folder.is_dir():
            raise InputError(f"{folder} is a file: give a Qdrant URL (http://host:6333), :memory: or a folder for embedded mode")
        try:
            client = QdrantClient(path=str(folder))
        except RuntimeError as exc:  # the folder is locked by another client
            raise QdrantError(f"cannot open the embedded Qdrant at {folder}: {_first_line(exc)}") from None
    with qdrant_errors(location):
        client.get_collections()
    return client


def read_layout(client: QdrantClient, collection: str, location: str) -> QdrantLayout:
    """The layout of an existing funnel collection; QdrantError if it is missing or not funnel's."""
    with qdrant_errors(location):
        if not client.collection_exists(collection):
            names = ", ".join(sorted(c.name for c in client.get_collections().collections)) or "none"
            raise QdrantError(f"no collection {collection!r} at {location} (collections there: {names})")
        info = client.get_collection(collection)
    where = f"collection {collection!r} at {location}"
    layout = QdrantLayout.from_metadata(info.config.metadata, where)
    vectors = info.config.params.vectors
    sizes = {name: params.size for name, params in vectors.items()} if isinstance(vectors, dict) else {}
    expected = {vector_name(d, layout.dim): d for d in (*layout.prefix_dims, layout.dim)}
    wrong = {name: sizes.get(name) for name, dim in expected.items() if sizes.get(name) != dim}
    if wrong:
        shown = ", ".join(f"{name}: {size} (expected {expected[name]})" for name, size in wrong.items())
        raise QdrantError(f"{where} has mismatched vectors ({shown}): export the index again with --overwrite")
    return layout


def _vectors_config(layout: QdrantLayout, hnsw_m: int, ef_construct: int) -> dict[str, qmodels.VectorParams]:
    from qdrant_client.http import models as qm

    def params(dim: int) -> qm.VectorParams:
        shortlists = dim in layout.shortlist_dims
        full = dim == layout.dim
        quantization: Any = None
        if shortlists and layout.quantization == "scalar":
            quantization = qm.ScalarQuantization(scalar=qm.ScalarQuantizationConfig(type=qm.ScalarType.INT8, always_ram=True))
        elif shortlists and layout.quantization == "binary":
            quantization = qm.BinaryQuantization(binary=qm.BinaryQuantizationConfig(always_ram=True))
        return qm.VectorParams(
            size=dim,
            distance=qm.Distance.COSINE,
            # m=0 builds no graph: a rescoring stage scores only the candidates it is handed.
            hnsw_config=qm.HnswConfigDiff(m=hnsw_m if shortlists else 0, ef_construct=ef_construct),
            quantization_config=quantization,
            on_disk=full and not shortlists,
            datatype=qm.Datatype.FLOAT16 if full and layout.vector_dtype == "float16" else None,
        )

    return {vector_name(dim, layout.dim): params(dim) for dim in (*layout.prefix_dims, layout.dim)}


@dataclass(frozen=True)
class ExportOptions:
    """How to write a collection.

    Args:
        collection: the collection's name.
        quantization: none, scalar (int8) or binary, on the shortlist vectors (HNSW search only).
        rescore_dims: extra prefix dims stored without an index, for middle stages of a plan.
        batch_size: points per upload request.
        hnsw_m / ef_construct: HNSW graph settings of the shortlist vectors.
        shards: shard count for a cluster (None: the server's default).
        overwrite: replace an existing collection; resume: continue an interrupted export.
    """

    collection: str
    quantization: str = "none"
    rescore_dims: tuple[int, ...] = ()
    batch_size: int = 256
    hnsw_m: int = 16
    ef_construct: int = 100
    shards: int | None = None
    overwrite: bool = False
    resume: bool = False


@dataclass(frozen=True)
class ExportSummary:
    collection: str
    location: str
    points: int
    uploaded: int
    resumed_from: int
    layout: QdrantLayout


def layout_of_index(index: Index, options: ExportOptions) -> QdrantLayout:
    """The collection layout for a funnel index: its shortlist dims get HNSW, its tuned plan travels."""
    manifest = index.manifest
    return QdrantLayout(
        model=manifest.model,
        dim=manifest.dim,
        shortlist_dims=tuple(index.shortlist_dims),
        rescore_dims=_plan_dims(manifest.plan, options),
        quantization=options.quantization,
        vector_dtype=manifest.vector_dtype,
        depth=manifest.depth,
        plan=manifest.plan,
        model_metadata=manifest.model_metadata,
        upload_batch=options.batch_size,
        rotation=_encoded_rotation(index),
        source=index_source(index),
    )


def index_source(index: Index) -> dict[str, Any]:
    """The identity of the index version being exported (see :attr:`QdrantLayout.source`)."""
    digest = hashlib.sha256()
    for doc_id in index.live_ids():
        digest.update(doc_id.encode("utf-8") + b"\0")
    return {"version": index.version, "count": index.count, "live_ids_sha256": digest.hexdigest()}


def _encoded_rotation(index: Index) -> str | None:
    rotation = index.rotation(None)
    return None if rotation is None else base64.b64encode(np.ascontiguousarray(rotation, dtype=np.float32).tobytes()).decode("ascii")


def _plan_dims(plan: dict[str, Any] | None, options: ExportOptions) -> tuple[int, ...]:
    """Rescoring dims asked for, plus every middle dim of the tuned plan (so that it runs as tuned)."""
    from funnel.search.plan import Plan

    dims = set(options.rescore_dims)
    if plan and plan.get("stages"):
        dims.update(stage.dim for stage in Plan.parse(plan["stages"])[1:] if stage.dim is not None)
    return tuple(sorted(dims))


def export_index(
    index: Index, client: QdrantClient, options: ExportOptions, *, location: str = "qdrant", show_progress: bool = False
) -> ExportSummary:
    """Upload an index's live documents and stored vectors to a collection (created here).

    With ``options.resume``, an export stopped part-way continues from the last full batch the
    collection holds; points are written in a fixed order with ids derived from the documents'
    ids, so a batch sent twice is simply overwritten.
    """
    if any(stage_layer for stage_layer in _plan_layers(index.manifest.plan)):
        raise InputError(
            "the index's tuned plan uses shallower layers, which a Qdrant collection does not hold: tune it at full depth first"
        )
    return upload(
        index_batches(index),
        client,
        layout_of_index(index, options),
        options,
        total=index.count,
        location=location,
        show_progress=show_progress,
    )


def _plan_layers(plan: dict[str, Any] | None) -> list[int | None]:
    from funnel.search.plan import Plan

    return [stage.layer for stage in Plan.parse(plan["stages"])] if plan and plan.get("stages") else []


def upload(
    batches: Iterable[tuple[Any, ...]],
    client: QdrantClient,
    layout: QdrantLayout,
    options: ExportOptions,
    *,
    total: int | None = None,
    location: str = "qdrant",
    show_progress: bool = False,
) -> ExportSummary:
    """Write (documents, vectors) batches, vectors normalized (n, dim), into a new collection
    (or continue one with ``options.resume``); marks the collection complete at the end."""
    from tqdm.auto import tqdm

    name = options.collection
    layout = _prepare(client, layout, options, location)
    done = 0
    with qdrant_errors(location):
        if options.resume:
            # Batches go in order and each is acknowledged before the next: every point before
            # the last full batch is in, and the batch after it is sent again (idempotent).
            stored = client.count(name, exact=True).count
            done = stored - stored % layout.upload_batch
        uploaded = 0
        with tqdm(total=total, initial=done, unit="doc", desc="uploading", disable=not show_progress) as bar:
            for documents, vectors in rechunk(skip_documents(batches, done), layout.upload_batch):
                client.upsert(name, points=points_batch(layout, documents, vectors), wait=True)
                uploaded += documents.num_rows
                bar.update(documents.num_rows)
        if done + uploaded == 0:
            client.delete_collection(name)  # an empty collection would only be mistaken for an export
            raise InputError("no documents to upload")
        complete = replace(layout, complete=True)
        client.update_collection(name, metadata=complete.to_metadata())
        points = client.count(name, exact=True).count
    return ExportSummary(name, location, points, uploaded, done, complete)


def _prepare(client: QdrantClient, layout: QdrantLayout, options: ExportOptions, location: str) -> QdrantLayout:
    """Create the collection, or check the one an interrupted export left; returns the layout in force."""
    name = options.collection
    with qdrant_errors(location):
        exists = client.collection_exists(name)
        if exists and options.resume:
            stored = read_layout(client, name, location)
            if stored.complete:
                raise InputError(
                    f"collection {name!r} at {location} is complete already: nothing to resume (pass --overwrite to export again)"
                )
            if stored.source != layout.source:
                was = f"version {stored.source['version']}" if stored.source else "an unrecorded version"
                now = f"version {layout.source['version']}" if layout.source else "another source"
                raise InputError(
                    f"collection {name!r} at {location} was started from {was} of the index, which is now {now} "
                    "(documents were added or deleted since): pass --overwrite to export it again"
                )
            ours = replace(layout, upload_batch=stored.upload_batch)
            if ours != stored:
                raise InputError(f"collection {name!r} at {location} was started with other settings: pass --overwrite to start over")
            return stored
        if exists and not options.overwrite:
            raise InputError(
                f"collection {name!r} already exists at {location}: choose another --collection, or pass --overwrite or --resume"
            )
        if exists:
            client.delete_collection(name)
        client.create_collection(
            name,
            vectors_config=_vectors_config(layout, options.hnsw_m, options.ef_construct),
            shard_number=options.shards,
            metadata=layout.to_metadata(),
        )
    return layout


def points_batch(layout: QdrantLayout, documents: pa.RecordBatch | pa.Table, vectors: np.ndarray) -> qmodels.Batch:
    """One upsert request: ids, a named vector per stored dim, and the documents as payload."""
    from qdrant_client.http import models as qm

    full = np.asarray(vectors, dtype=np.float32)
    if layout.vector_dtype == "float16":  # what a local index stores: the collection agrees with it to the bit
        full = full.astype(np.float16).astype(np.float32)
    named = {vector_name(dim, layout.dim): truncate(full, dim).tolist() for dim in layout.prefix_dims}
    named[FULL_VECTOR] = full.tolist()
    columns = documents.to_pydict()
    payloads = [
        {"id": doc_id, "title": title, "text": text, "metadata": json.loads(metadata) if metadata else {}}
        for doc_id, title, text, metadata in zip(columns["id"], columns["title"], columns["text"], columns["metadata"])
    ]
    return qm.Batch(ids=[point_id(i) for i in columns["id"]], vectors=named, payloads=payloads)


def index_batches(index: Index, rows: int = 4096) -> Iterator[tuple[pa.Table, np.ndarray]]:
    """The index's live documents with their stored full vectors (float32), in position order."""
    for segment in index.segments:
        live = segment.live_mask()
        stored = segment.stored_vectors()
        for start in range(0, segment.count, rows):
            stop = min(start + rows, segment.count)
            documents = segment.documents.slice(start, stop - start)
            vectors = np.asarray(stored[start:stop], dtype=np.float32)
            keep = live[start:stop]
            if not keep.all():
                documents, vectors = documents.filter(pa.array(keep)), vectors[keep]
            if documents.num_rows:
                yield documents, vectors


def skip_documents(batches: Iterable[tuple[Any, ...]], skip: int) -> Iterator[tuple[Any, np.ndarray]]:
    """(documents, vectors) pairs without their first ``skip`` rows (layer vectors dropped)."""
    for documents, vectors, *_ in batches:
        if skip >= documents.num_rows:
            skip -= documents.num_rows
            continue
        if skip:
            documents, vectors, skip = documents.slice(skip), vectors[skip:], 0
        yield documents, vectors


def rechunk(batches: Iterable[tuple[Any, np.ndarray]], size: int) -> Iterator[tuple[pa.Table, np.ndarray]]:
    """The same rows in batches of exactly ``size`` (the last may be shorter): upload batches
    must not depend on how the source was cut, or resuming would skip or repeat the wrong rows."""
    tables: list[pa.Table] = []
    arrays: list[np.ndarray] = []
    held = 0
    for documents, vectors in batches:
        tables.append(documents if isinstance(documents, pa.Table) else pa.Table.from_batches([documents]))
        arrays.append(np.asarray(vectors))
        held += documents.num_rows
        while held >= size:
            table, matrix = pa.concat_tables(tables), np.concatenate(arrays)
            yield table.slice(0, size), matrix[:size]
            tables, arrays, held = [table.slice(size)], [matrix[size:]], held - size
    if held:
        yield pa.concat_tables(tables), np.concatenate(arrays)
