"""Build with Ray: Ray Data reads the parquet and a pool of encoder actors encodes it; funnel's own
writer writes the segments and manifest (or the points go straight to Qdrant).

The seam is :func:`funnel.indexes.builder.write_index`, which takes (documents, vectors) batches:
Ray supplies the batches, in corpus order, so the index is the one a single-process build writes
(same ids in the same order, same float16 vectors up to the encoder's arithmetic).

``ray.init()`` with no address starts a Ray on this machine; with an address (``ray://host:10001``
or ``auto``) the same code runs on a cluster, where every node needs funnel and the model
installed (``pip install 'funnel[ray]'``). One actor per GPU where Ray sees GPUs, else per CPU.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import numpy as np
import pyarrow as pa

from funnel.corpus import DOCUMENT_SCHEMA, Corpus, CorpusColumns, _to_documents, document_text
from funnel.errors import InputError

if TYPE_CHECKING:
    from funnel.indexes.builder import IndexConfig
    from funnel.models import Encoder

T = TypeVar("T")
VECTOR_COLUMN = "__vector"
LAYER_COLUMN = "__vector_layer_{}"


@dataclass(frozen=True)
class RayOptions:
    """Where and how wide to encode.

    Args:
        address: a Ray cluster's address; None starts a local Ray on this machine.
        workers: encoder actors (None: one per GPU Ray sees, else 2).
        cpus_per_worker / gpus_per_worker: resources each actor asks for (None: up to 1 CPU,
            leaving one for reading the parquet; 1 GPU where the cluster has GPUs, else 0).
        batch_size: documents per actor call (the encoder batches inside it).
        env: environment variables for the workers (e.g. OMP_NUM_THREADS=1 on shared CPUs).
    """

    address: str | None = None
    workers: int | None = None
    cpus_per_worker: float | None = None
    gpus_per_worker: float | None = None
    batch_size: int = 256
    num_cpus: int | None = None
    """CPUs a local Ray may use (None: all); ignored with an address."""
    env: dict[str, str] = field(default_factory=dict)


def parquet_files(source: str | Path) -> list[Path]:
    """A parquet file, or the ``*.parquet`` files of a folder in name order (the corpus order)."""
    path = Path(source).expanduser()
    if path.is_dir():
        files = sorted(path.glob("*.parquet"))
        if not files:
            raise InputError(f"{path} holds no .parquet files: give a parquet file or a folder of parquet shards")
        return files
    if not path.exists():
        raise InputError(f"{path} does not exist: give a parquet file or a folder of parquet shards")
    if path.suffix != ".parquet":
        raise InputError(f"{path}: a Ray build reads parquet (a file or a folder of shards); convert it, or build without --ray")
    return [path]


@dataclass
class ShardedCorpus(Corpus):
    """A parquet corpus in one file or a folder of shards, read in name order with one set of
    seen ids: the validation pass of a Ray build (a bad row, or an id repeated across shards,
    stops it before any encoding), and a corpus for any local use too."""

    files: tuple[Path, ...] = ()

    @property
    def num_rows(self) -> int | None:
        import pyarrow.parquet as pq

        return sum(pq.ParquetFile(file).metadata.num_rows for file in self.files)

    def batches(self) -> Iterator[pa.RecordBatch]:
        import pyarrow.parquet as pq

        seen: set[str] = set()
        self.skipped.clear()
        for file in self.files:
            parquet = pq.ParquetFile(file)
            names, offset = parquet.schema_arrow.names, 0
            for raw in parquet.iter_batches(batch_size=self.batch_size):
                rows = raw.to_pylist()
                batch = _to_documents(rows, names, self.columns, file, offset, seen, self._skips())
                offset += len(rows)
                if batch.num_rows:
                    yield batch
        if not seen:
            raise InputError(f"{self.path} holds no documents")


def sharded_corpus(source: str | Path, columns: CorpusColumns = CorpusColumns(), skip_invalid: bool = False) -> ShardedCorpus:
    """A parquet file or a folder of ``*.parquet`` shards as one corpus."""
    return ShardedCorpus(Path(source).expanduser(), "parquet", columns, skip_invalid=skip_invalid, files=tuple(parquet_files(source)))


class _Encode:
    """An encoder actor: loads the model once, then adds the vectors to each batch of documents."""

    def __init__(self, model: str | None, columns: CorpusColumns, layers: tuple[int, ...], encode_batch_size: int) -> None:
        from funnel.models import Encoder

        self.encoder = Encoder.load(model)
        self.columns = columns
        self.layers = layers
        self.encode_batch_size = encode_batch_size

    def __call__(self, raw: pa.Table) -> pa.Table:
        from funnel.layers import encode_documents

        # Raw parquet rows → DOCUMENT_SCHEMA, as funnel's corpus reader makes them. Rows with no
        # text are dropped here (validation refused them already unless skipping); repeated ids
        # are dropped on the driver, which sees the rows in order.
        batch = _to_documents(raw.to_pylist(), raw.column_names, self.columns, Path("ray-shard"), 0, set(), {})
        table = pa.Table.from_batches([batch], schema=DOCUMENT_SCHEMA)
        texts = [document_text(t, x) for t, x in zip(table.column("title").to_pylist(), table.column("text").to_pylist())]
        vectors, by_layer = encode_documents(self.encoder, texts, self.layers, self.encode_batch_size)
        table = table.append_column(VECTOR_COLUMN, _fixed_list(vectors))
        for layer, rows in by_layer.items():
            table = table.append_column(LAYER_COLUMN.format(layer), _fixed_list(rows))
        return table


def _fixed_list(vectors: np.ndarray) -> pa.FixedSizeListArray:
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), vectors.shape[1])


def _matrix(column: pa.ChunkedArray | pa.Array, dim: int) -> np.ndarray:
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    return np.asarray(array.flatten().to_numpy(zero_copy_only=False), dtype=np.float32).reshape(-1, dim)


def start_ray(options: RayOptions) -> bool:
    """Connect to ``options.address`` or start a local Ray; returns whether this call started it
    (so the caller shuts down only what it started)."""
    try:
        import ray
    except ImportError:
        raise InputError("--ray needs Ray: pip install 'funnel[ray]'") from None
    if ray.is_initialized():
        return False
    runtime_env = {"env_vars": dict(options.env)} if options.env else None
    try:
        if options.address:
            ray.init(address=options.address, runtime_env=runtime_env, log_to_driver=False)
        else:
            ray.init(num_cpus=options.num_cpus, runtime_env=runtime_env, log_to_driver=False, include_dashboard=False)
    except ConnectionError as exc:
        raise InputError(f"cannot reach the Ray cluster at {options.address}: {exc}") from None
    return True


def ray_batches(
    files: Sequence[Path],
    model: str | None,
    columns: CorpusColumns,
    options: RayOptions,
    *,
    layers: tuple[int, ...] = (),
    encode_batch_size: int = 64,
    dim: int,
) -> Iterator[tuple[Any, ...]]:
    """(documents, vectors[, {layer: vectors}]) batches in corpus order, encoded by Ray actors.

    Ray must be started (:func:`start_ray`). Ids repeated across batches keep their first row.
    """
    import ray
    import ray.data

    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True  # the index must list documents in corpus order
    gpus = options.gpus_per_worker
    if gpus is None:
        gpus = 1.0 if ray.cluster_resources().get("GPU", 0) >= 1 else 0.0
    workers = options.workers or (int(ray.cluster_resources().get("GPU", 0)) if gpus else 0) or 2
    cpus = ray.cluster_resources().get("CPU", 0)
    per_worker = options.cpus_per_worker
    if per_worker is None:
        per_worker = max(0.0, min(1.0, (cpus - 1) / workers))
    if cpus - workers * per_worker < 1:
        # Ray Data lists the files in a task that needs a whole CPU slot: actors holding the
        # slots would wait for input forever.
        raise InputError(
            f"{workers} encoder workers × {per_worker:g} CPUs leave less than one of Ray's {cpus:g} CPUs for listing "
            "and reading the parquet: use fewer workers or fewer CPUs per worker"
        )
    # Every column is read: metadata is each column besides id, title and text, as in a local
    # build. Reading takes no CPU slot, so that the encoder actors may have every one.
    read = ray.data.read_parquet([str(f) for f in files], num_cpus=0)
    # Blocks of one actor call each: a parquet file read as one big block would feed one actor
    # only. The split keeps the row order.
    blocks = read.repartition(target_num_rows_per_block=options.batch_size)
    dataset = blocks.map_batches(
        _Encode,
        fn_constructor_kwargs={"model": model, "columns": columns, "layers": layers, "encode_batch_size": encode_batch_size},
        batch_format="pyarrow",
        batch_size=options.batch_size,
        compute=ray.data.ActorPoolStrategy(size=workers),
        num_cpus=per_worker,
        num_gpus=gpus,
    )
    seen: set[str] = set()
    for batch in dataset.iter_batches(batch_format="pyarrow", batch_size=None, prefetch_batches=1):
        table = cast(pa.Table, batch)
        keep = np.zeros(table.num_rows, dtype=bool)
        for row, doc_id in enumerate(table.column("id").to_pylist()):
            keep[row] = doc_id not in seen
            seen.add(doc_id)
        if not keep.any():
            continue
        if not keep.all():
            table = table.filter(pa.array(keep))
        documents = pa.Table.from_arrays([table.column(name) for name in DOCUMENT_SCHEMA.names], schema=DOCUMENT_SCHEMA)
        vectors = _matrix(table.column(VECTOR_COLUMN), dim)
        if layers:
            yield documents, vectors, {layer: _matrix(table.column(LAYER_COLUMN.format(layer)), dim) for layer in layers}
        else:
            yield documents, vectors


def encode_with_ray(
    corpus: ShardedCorpus,
    encoder: Encoder,
    options: RayOptions,
    sink: Callable[[Iterator[tuple[Any, ...]]], T],
    *,
    layers: tuple[int, ...] = (),
    encode_batch_size: int = 64,
) -> T:
    """Validate a parquet corpus (see :func:`sharded_corpus`), encode it with Ray, and hand the
    batches (in corpus order) to ``sink``, e.g. funnel's index writer or a Qdrant upload; returns
    what ``sink`` returns. ``encoder`` names the model; each actor loads the same one. A Ray
    started here is shut down at the end."""
    corpus.validate()
    started = start_ray(options)
    try:
        return sink(
            ray_batches(
                list(corpus.files),
                _model_path(encoder),
                corpus.columns,
                options,
                layers=layers,
                encode_batch_size=encode_batch_size,
                dim=encoder.dim,
            )
        )
    finally:
        if started:
            import ray

            ray.shutdown()


def build_with_ray(
    corpus: ShardedCorpus,
    encoder: Encoder,
    path: str | Path,
    config: IndexConfig,
    options: RayOptions,
    *,
    overwrite: bool = False,
) -> Path:
    """Encode a parquet corpus (file or folder of shards, see :func:`sharded_corpus`) with Ray and
    write an index at ``path`` with funnel's own writer: the same segments and manifest as
    :func:`~funnel.indexes.builder.build_index` writes for that corpus."""
    from funnel.indexes.builder import encoder_depth, write_index

    depth = encoder_depth(encoder)
    layers = config.checked_layers(depth)
    info = {"path": str(corpus.path), "format": "parquet", "built_with": "ray", "shards": len(corpus.files), "skipped": corpus.skipped}

    def write(batches: Iterator[tuple[Any, ...]]) -> Path:
        return write_index(
            batches,
            path,
            model=encoder.name,
            dim=encoder.dim,
            config=config,
            model_metadata=encoder.metadata,
            source=info,
            depth=depth,
            overwrite=overwrite,
        )

    return encode_with_ray(corpus, encoder, options, write, layers=layers, encode_batch_size=config.encode_batch_size)


def _model_path(encoder: Encoder) -> str | None:
    """What an actor passes to Encoder.load to get the same model (None: the default model)."""
    from funnel.models import DEFAULT_MODEL

    return None if encoder.name == DEFAULT_MODEL else encoder.name
