"""Documents and real vectors saved once per test session, streamed in small batches by the crash
tests and their child processes (no model needed in the child)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa

from funnel.indexes.builder import IndexConfig
from funnel.indexes.shortlist import make_spec

BATCH = 16


def config() -> IndexConfig:
    return IndexConfig(shortlists=(make_spec(64), make_spec(128, "binary")))


def save(workdir: Path, documents: pa.Table, vectors: np.ndarray) -> None:
    with pa.OSFile(str(workdir / "documents.arrow"), "wb") as sink, pa.ipc.new_file(sink, documents.schema) as writer:
        writer.write_table(documents)
    np.save(workdir / "vectors.npy", vectors)


def batches(workdir: Path) -> Iterator[tuple[pa.RecordBatch, np.ndarray]]:
    documents = pa.ipc.open_file(pa.memory_map(str(workdir / "documents.arrow"))).read_all().combine_chunks()
    vectors = np.load(workdir / "vectors.npy")
    for start in range(0, len(vectors), BATCH):
        yield documents.slice(start, BATCH).to_batches()[0], vectors[start : start + BATCH]
