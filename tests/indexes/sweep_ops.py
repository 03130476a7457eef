"""The writing operations of the kill sweep, run by the grandchildren that sweep_child.py forks
(with kills) and by the test (for the references and the recoveries), on the saved real Cranfield
documents and vectors."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa

from funnel.indexes.builder import IndexConfig, write_index
from funnel.indexes.index import Index
from funnel.indexes.shortlist import make_spec
from funnel.indexes.updates import add_documents, compact_index, delete_documents

BATCH = 50
COLLECTION = "sweep"


def config() -> IndexConfig:
    return IndexConfig(shortlists=(make_spec(64),), rotation="pca")


def rows(workdir: Path, start: int, stop: int) -> tuple[pa.Table, np.ndarray]:
    documents = pa.ipc.open_file(pa.memory_map(str(workdir / "documents.arrow"))).read_all().combine_chunks()
    vectors = np.load(workdir / "vectors.npy")
    return documents.slice(start, stop - start), vectors[start:stop]


def batches(workdir: Path, start: int, stop: int) -> Iterator[tuple[pa.RecordBatch, np.ndarray]]:
    documents, vectors = rows(workdir, start, stop)
    for offset in range(0, len(vectors), BATCH):
        yield documents.slice(offset, BATCH).to_batches()[0], vectors[offset : offset + BATCH]


def build(workdir: Path, target: Path, *, resume: bool = False) -> None:
    write_index(batches(workdir, 0, 150), target, model="cranfield-vectors", dim=384, config=config(), resume=resume)


def overwrite(workdir: Path, target: Path, *, resume: bool = False) -> None:
    """Replace an index of all 150 documents by one of the last 110."""
    write_index(batches(workdir, 40, 150), target, model="cranfield-vectors", dim=384, config=config(), overwrite=True, resume=resume)


def add(workdir: Path, target: Path) -> None:
    documents, vectors = rows(workdir, 0, 30)
    renamed = documents.set_column(0, "id", pa.array([f"added-{i}" for i in range(documents.num_rows)])).cast(documents.schema)
    add_documents(target, [(renamed.to_batches()[0], vectors)])


def delete(workdir: Path, target: Path) -> None:
    delete_documents(target, Index.load(target).live_ids()[:7])


def compact(workdir: Path, target: Path) -> None:
    compact_index(target)


def tune(workdir: Path, target: Path) -> None:
    from funnel.tuning import TuneOptions
    from funnel.tuning import tune as tune_plan
    from funnel.tuning.store import save_plan

    queries = np.load(workdir / "vectors.npy")[:40]
    plan = tune_plan(Index.load(target), None, 0.9, 10, queries, TuneOptions(timing_queries=4))
    save_plan(target, plan.to_manifest())


def qdrant_location(workdir: Path, target: Path) -> str:
    return str(target.parent / f"{target.name}-qdrant")


def export(workdir: Path, target: Path, *, resume: bool = False) -> None:
    from funnel.backends.qdrant import ExportOptions, connect, export_index

    client = connect(qdrant_location(workdir, target))
    try:
        export_index(Index.load(target, use_gpu=False), client, ExportOptions(COLLECTION, batch_size=32, resume=resume))
    finally:
        client.close()


OPERATIONS: dict[str, Callable[[Path, Path], None]] = {
    "build": build,
    "overwrite": overwrite,
    "add": add,
    "delete": delete,
    "compact": compact,
    "tune": tune,
    "export": export,
}
