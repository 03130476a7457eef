"""One immutable segment: its documents, its full vectors and its shortlist indexes.

Writing streams: documents and vectors are appended batch by batch, so memory stays bounded by
one batch; the shortlist indexes are then built from the vectors file read back in chunks.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pyarrow as pa

from funnel.corpus import DOCUMENT_SCHEMA
from funnel.errors import IndexFormatError
from funnel.indexes import shortlist
from funnel.indexes.manifest import (
    DOCUMENTS_FILE,
    SegmentEntry,
    ShortlistSpec,
    file_entry,
    shortlist_file,
    vectors_file,
)

CHUNK_ROWS = 65_536


class SegmentWriter:
    """Append documents and their vectors; :meth:`finish` builds shortlists and checksums."""

    def __init__(self, folder: Path, dim: int, dtype: str) -> None:
        self.folder = folder
        self.dim = dim
        self.dtype = dtype
        folder.mkdir(parents=True)
        self._documents = pa.ipc.new_file(str(folder / DOCUMENTS_FILE), DOCUMENT_SCHEMA)
        self._vectors = (folder / vectors_file(dtype)).open("wb")
        self.count = 0

    def append(self, documents: pa.RecordBatch, vectors: np.ndarray) -> None:
        """``vectors``: (documents.num_rows, dim), L2-normalized."""
        if vectors.shape != (documents.num_rows, self.dim):
            raise ValueError(f"vectors of shape {vectors.shape} for {documents.num_rows} documents of dim {self.dim}")
        self._documents.write_batch(documents)
        self._vectors.write(np.ascontiguousarray(vectors, dtype=self.dtype).tobytes())
        self.count += documents.num_rows

    def finish(self, specs: tuple[ShortlistSpec, ...]) -> SegmentEntry:
        self._documents.close()
        self._vectors.close()
        vectors = open_vectors(self.folder / vectors_file(self.dtype), self.dtype, self.count, self.dim)
        for spec in specs:
            index = shortlist.build(spec, lambda: iter_chunks(vectors), self.count)
            shortlist.write(index, spec, self.folder / shortlist_file(spec.dim))
        files = {path.name: file_entry(path) for path in sorted(self.folder.iterdir())}
        return SegmentEntry(name=self.folder.name, count=self.count, files=files)

    def abort(self) -> None:
        for handle in (self._documents, self._vectors):
            try:
                handle.close()
            except Exception:  # closing after a failure: the folder is discarded anyway
                pass


def iter_chunks(vectors: np.ndarray, rows: int = CHUNK_ROWS) -> Iterator[np.ndarray]:
    for start in range(0, len(vectors), rows):
        yield np.asarray(vectors[start : start + rows], dtype=np.float32)


def open_vectors(path: Path, dtype: str, count: int, dim: int) -> np.ndarray:
    expected = count * dim * np.dtype(dtype).itemsize
    actual = path.stat().st_size if path.exists() else -1
    if actual != expected:
        raise IndexFormatError(
            f"{path} holds {actual} bytes, expected {expected} ({count} × {dim} {dtype}); the index is damaged: rebuild it"
        )
    if count == 0:
        return np.zeros((0, dim), dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r", shape=(count, dim))


@dataclass
class Segment:
    """A loaded segment: documents memory-mapped, vectors memory-mapped, shortlists in memory."""

    folder: Path
    count: int
    documents: pa.Table
    vectors: np.ndarray
    shortlists: dict[int, tuple[ShortlistSpec, Any]] = field(default_factory=dict)

    @classmethod
    def load(cls, folder: Path, entry: SegmentEntry, dim: int, dtype: str, specs: tuple[ShortlistSpec, ...]) -> "Segment":
        for name, expected in entry.files.items():
            path = folder / name
            if not path.exists():
                raise IndexFormatError(f"{path} is missing; the index is damaged: rebuild it")
            if path.stat().st_size != expected.bytes:
                raise IndexFormatError(
                    f"{path} holds {path.stat().st_size} bytes but the manifest says {expected.bytes}; the file is truncated or altered"
                )
        try:
            documents = pa.ipc.open_file(pa.memory_map(str(folder / DOCUMENTS_FILE))).read_all()
        except (pa.ArrowInvalid, OSError) as exc:
            raise IndexFormatError(f"{folder / DOCUMENTS_FILE} is not readable ({exc}); rebuild the index") from None
        if documents.num_rows != entry.count:
            raise IndexFormatError(f"{folder / DOCUMENTS_FILE} holds {documents.num_rows} documents, the manifest says {entry.count}")
        vectors = open_vectors(folder / vectors_file(dtype), dtype, entry.count, dim)
        shortlists = {spec.dim: (spec, shortlist.read(spec, folder / shortlist_file(spec.dim))) for spec in specs}
        for spec, index in shortlists.values():
            if index.ntotal != entry.count:
                raise IndexFormatError(f"{folder / shortlist_file(spec.dim)} holds {index.ntotal} vectors, the manifest says {entry.count}")
        return cls(folder, entry.count, documents, vectors, shortlists)
