"""One immutable segment: its documents, its full vectors and its shortlist indexes.

Writing streams and can resume: each batch of documents is appended to an Arrow IPC stream
(``.documents-NNNNNN.arrows``) and its vectors to the raw vectors file, both are flushed to disk,
and then a checkpoint (``.checkpoint.json``) records how many rows are safely written. A writer
reopened with ``resume=True`` truncates the vectors back to the checkpoint, starts a new stream
part and continues. :meth:`SegmentWriter.finish` rewrites the parts as ``documents.arrow`` in
fixed-size record batches (so an interrupted-and-resumed build gives the same bytes as an
uninterrupted one) and builds the shortlists from the vectors file read back in chunks. Memory
stays bounded by one batch plus the shortlist indexes.

A writer opened ``deferred`` (a build whose rotation is fitted on the vectors it writes) appends
the vectors as encoded to working files (``.raw-vectors.f16``); :meth:`SegmentWriter.finish` then
writes the stored vector files through the rotation, chunk by chunk. The working files stay
untouched until the segment is recorded, so a build interrupted while finishing resumes cleanly.
"""

from __future__ import annotations

import contextlib
import json
import mmap
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from funnel.corpus import DOCUMENT_SCHEMA
from funnel.errors import IndexFormatError, InputError
from funnel.indexes import shortlist
from funnel.indexes.manifest import (
    DOCUMENTS_FILE,
    FileEntry,
    SegmentEntry,
    ShortlistSpec,
    TombstoneEntry,
    check_file,
    file_entry,
    fsync_path,
    layer_vectors_file,
    shortlist_file,
    vectors_file,
)

CHUNK_ROWS = 65_536
READ_ROWS = 16_384  # 12 MiB of 384-dim float16 per read while building shortlists
DOCUMENT_BATCH_ROWS = 8_192
CHECKPOINT_FILE = ".checkpoint.json"
PART_PREFIX = ".documents-"
RAW_PREFIX = ".raw-"


class SegmentWriter:
    """Append documents and their vectors; :meth:`finish` writes documents, shortlists, checksums.

    With ``checkpoint`` (a JSON-able fingerprint of the build), every :meth:`append` is made
    durable and recorded, so the writer can be reopened with ``resume=True`` after a crash;
    resuming a build whose fingerprint differs is refused.
    """

    def __init__(
        self,
        folder: Path,
        dim: int,
        dtype: str,
        *,
        layers: tuple[int, ...] = (),
        checkpoint: dict[str, Any] | None = None,
        resume: bool = False,
        deferred: bool = False,
    ) -> None:
        self.folder = folder
        self.dim = dim
        self.dtype = dtype
        self.layers = tuple(layers)
        self.deferred = deferred
        self.fingerprint = checkpoint
        self.row_bytes = dim * np.dtype(dtype).itemsize
        self.parts: list[list[Any]] = []  # [file name, committed rows]
        self.count = 0
        folder.mkdir(parents=True, exist_ok=resume)
        if resume:
            self._restore()
        self._vectors = self._open_vectors(self.written_name(None))
        self._layer_vectors = {layer: self._open_vectors(self.written_name(layer)) for layer in self.layers}
        self._part: Any = None
        self._part_writer: Any = None

    def _open_vectors(self, name: str) -> Any:
        """A vectors file positioned after the committed rows (anything beyond them is dropped)."""
        path = self.folder / name
        handle = path.open("r+b" if path.exists() else "wb")
        handle.truncate(self.count * self.row_bytes)
        handle.seek(self.count * self.row_bytes)
        return handle

    def _stored_name(self, layer: int | None) -> str:
        return vectors_file(self.dtype) if layer is None else layer_vectors_file(self.dtype, layer)

    def written_name(self, layer: int | None) -> str:
        """Where appended vectors go: the stored file, or a deferred writer's working file."""
        return f"{RAW_PREFIX}{self._stored_name(layer)}" if self.deferred else self._stored_name(layer)

    def _vector_names(self) -> list[str]:
        return [self.written_name(None)] + [self.written_name(layer) for layer in self.layers]

    def written_chunks(self, layer: int | None = None) -> Iterator[np.ndarray]:
        """The vectors appended so far (``layer`` None: the full model's), in chunks of their
        stored dtype, read back from disk (memory stays bounded). Call after :meth:`finish` began."""
        return read_vector_chunks(self.folder / self.written_name(layer), self.dtype, self.dim, self.count)

    def _restore(self) -> None:
        """Continue from the checkpoint: drop whatever was written after it."""
        path = self.folder / CHECKPOINT_FILE
        state: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {"rows": 0, "parts": [], "fingerprint": self.fingerprint}
        if state.get("fingerprint") != self.fingerprint:
            raise InputError(
                f"the interrupted build in {self.folder.parent} was started with other settings or another corpus: "
                "pass --overwrite to start over"
            )
        self.count, self.parts = int(state["rows"]), [list(p) for p in state["parts"]]
        for name in self._vector_names():
            vectors_path = self.folder / name
            have = vectors_path.stat().st_size if vectors_path.exists() else 0
            if have < self.count * self.row_bytes:
                raise IndexFormatError(f"{vectors_path} is shorter than its checkpoint says; pass --overwrite to start over")
        keep = {name for name, _ in self.parts} | {CHECKPOINT_FILE, *self._vector_names()}
        for stale in self.folder.iterdir():
            if stale.name not in keep:
                stale.unlink()

    def append(self, documents: pa.RecordBatch | pa.Table, vectors: np.ndarray, layer_vectors: dict[int, np.ndarray] | None = None) -> None:
        """``vectors``: (documents.num_rows, dim), L2-normalized; ``layer_vectors``: the same for
        each of the writer's ``layers`` (the sub-model cut after that many layers)."""
        if vectors.shape != (documents.num_rows, self.dim):
            raise ValueError(f"vectors of shape {vectors.shape} for {documents.num_rows} documents of dim {self.dim}")
        layer_vectors = layer_vectors or {}
        if sorted(layer_vectors) != sorted(self.layers):
            raise ValueError(f"vectors for layers {sorted(layer_vectors)} but this segment stores layers {list(self.layers)}")
        for layer, rows in layer_vectors.items():
            if rows.shape != vectors.shape:
                raise ValueError(f"layer {layer} vectors of shape {rows.shape}, expected {vectors.shape}")
        if documents.num_rows == 0:
            return
        if self._part_writer is None:
            name = f"{PART_PREFIX}{len(self.parts):06d}.arrows"
            self._part = (self.folder / name).open("wb")
            self._part_writer = pa.ipc.new_stream(self._part, DOCUMENT_SCHEMA)
            self.parts.append([name, 0])
        self._part_writer.write(documents)
        self._append_vectors(np.ascontiguousarray(vectors, dtype=self.dtype).tobytes())
        for layer, rows in layer_vectors.items():
            self._layer_vectors[layer].write(np.ascontiguousarray(rows, dtype=self.dtype).tobytes())
        self.count += documents.num_rows
        self.parts[-1][1] += documents.num_rows
        if self.fingerprint is not None:
            for handle in (self._part, self._vectors, *self._layer_vectors.values()):
                handle.flush()
                os.fsync(handle.fileno())
            self._write_checkpoint()

    def _append_vectors(self, data: bytes) -> None:
        self._vectors.write(data)

    def _write_checkpoint(self) -> None:
        temp = self.folder / (CHECKPOINT_FILE + ".tmp")
        with temp.open("w") as out:
            json.dump({"rows": self.count, "parts": self.parts, "fingerprint": self.fingerprint}, out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, self.folder / CHECKPOINT_FILE)

    def _close(self) -> None:
        for handle in (self._part_writer, self._part, self._vectors, *self._layer_vectors.values()):
            if handle is not None:
                handle.close()
        self._part_writer = self._part = None

    def finish(
        self,
        specs: tuple[ShortlistSpec, ...],
        fit: Callable[[SegmentWriter], dict[int | None, np.ndarray]] | None = None,
        rotations: Mapping[int | None, np.ndarray] | None = None,
    ) -> SegmentEntry:
        """Write documents.arrow and the shortlists; working files stay until :meth:`cleanup`.

        A deferred writer calls ``fit`` (after the documents are written) for the rotations by
        depth (None: the full model; a depth left out keeps the model's order) and stores every
        vector file through them before the shortlists are built from the stored vectors. Other
        writers are given the ``rotations`` their vectors came in (model-basis shortlists undo them).
        """
        self._close()
        self._write_documents()
        rotations = dict(rotations or {})
        if self.deferred:
            rotations = fit(self) if fit is not None else {}
            for layer in (None, *self.layers):
                self._store_rotated(layer, rotations.get(layer))
        sources = [(None, vectors_file(self.dtype))] + [(layer, layer_vectors_file(self.dtype, layer)) for layer in self.layers]
        for layer, name in sources:
            for spec in specs:
                chunks = lambda path=self.folder / name: read_vector_chunks(path, self.dtype, self.dim, self.count)  # noqa: E731
                shortlist.build_file(spec, chunks, self.count, self.folder / shortlist_file(spec.dim, layer), rotations.get(layer))
        files: dict[str, FileEntry] = {}
        for path in sorted(self.folder.iterdir()):
            if not path.name.startswith("."):
                fsync_path(path)
                files[path.name] = file_entry(path)
        return SegmentEntry(name=self.folder.name, count=self.count, files=files)

    def _store_rotated(self, layer: int | None, rotation: np.ndarray | None) -> None:
        with (self.folder / self._stored_name(layer)).open("wb") as out:
            for chunk in self.written_chunks(layer):
                rows = chunk if rotation is None else np.asarray(chunk, dtype=np.float32) @ rotation
                out.write(np.ascontiguousarray(rows, dtype=self.dtype).tobytes())

    def _write_documents(self) -> None:
        with pa.OSFile(str(self.folder / DOCUMENTS_FILE), "wb") as sink, pa.ipc.new_file(sink, DOCUMENT_SCHEMA) as writer:
            pending: list[pa.RecordBatch] = []
            pending_rows = 0
            for batch in self._committed_batches():
                pending.append(batch)
                pending_rows += batch.num_rows
                while pending_rows >= DOCUMENT_BATCH_ROWS:
                    table = pa.Table.from_batches(pending, DOCUMENT_SCHEMA)
                    writer.write_table(table.slice(0, DOCUMENT_BATCH_ROWS).combine_chunks())
                    rest = table.slice(DOCUMENT_BATCH_ROWS)
                    pending, pending_rows = rest.to_batches(), rest.num_rows
            if pending_rows:
                writer.write_table(pa.Table.from_batches(pending, DOCUMENT_SCHEMA).combine_chunks())

    def _committed_batches(self) -> Iterator[pa.RecordBatch]:
        """Batches of every part up to its checkpointed rows (a crash may have left more)."""
        for name, rows in self.parts:
            with pa.OSFile(str(self.folder / name)) as source:
                reader = pa.ipc.open_stream(source)
                left = rows
                while left > 0:
                    batch = reader.read_next_batch()
                    batch = batch.slice(0, min(left, batch.num_rows))
                    left -= batch.num_rows
                    yield batch

    def cleanup(self) -> None:
        """Remove the working files (stream parts, checkpoint) once the segment is recorded."""
        for path in self.folder.iterdir():
            if path.name.startswith("."):
                path.unlink()

    def abort(self) -> None:
        with contextlib.suppress(Exception):  # closing after a failure: the folder is discarded or resumed anyway
            self._close()


def read_vector_chunks(path: Path, dtype: str, dim: int, count: int, rows: int = READ_ROWS) -> Iterator[np.ndarray]:
    """Stored vectors in chunks (rows, dim) of their stored dtype, read with plain reads: a build's
    memory stays bounded (a memory map would leave every page it touched resident)."""
    with path.open("rb") as handle:
        for start in range(0, count, rows):
            size = min(rows, count - start)
            chunk = np.fromfile(handle, dtype=dtype, count=size * dim)
            if chunk.size != size * dim:
                raise IndexFormatError(f"{path} ends before row {start + chunk.size // dim}; the file is truncated")
            yield chunk.reshape(size, dim)


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
    vectors = np.memmap(path, dtype=dtype, mode="r", shape=(count, dim))
    # Searches read scattered rows: without this hint each page fault reads ahead ~128 KiB,
    # which slows cold reads and fills memory with rows nobody asked for.
    madvise = getattr(getattr(vectors, "_mmap", None), "madvise", None)
    if madvise is not None and hasattr(mmap, "MADV_RANDOM"):
        madvise(mmap.MADV_RANDOM)
    return vectors


def read_documents(path: Path) -> pa.Table:
    """The documents of a segment, memory-mapped (nothing is read until used)."""
    try:
        return pa.ipc.open_file(pa.memory_map(str(path))).read_all()
    except (pa.ArrowInvalid, OSError) as exc:
        raise IndexFormatError(f"{path} is not readable ({exc}); rebuild the index") from None


def deleted_rows(folder: Path, tombstone: TombstoneEntry | None, segment_rows: int) -> np.ndarray:
    """Sorted local rows a segment's tombstone (None: none) deletes, read from the index ``folder``."""
    if tombstone is None:
        return np.zeros(0, np.int64)
    return read_tombstone(folder / tombstone.name, tombstone.file, tombstone.count, segment_rows)


def live_mask(folder: Path, tombstone: TombstoneEntry | None, segment_rows: int) -> np.ndarray:
    """(segment_rows,) True where a row is live, False where the tombstone deletes it."""
    live = np.ones(segment_rows, bool)
    live[deleted_rows(folder, tombstone, segment_rows)] = False
    return live


def read_tombstone(path: Path, expected: FileEntry, count: int, segment_rows: int) -> np.ndarray:
    """Sorted local rows deleted from a segment; checked against the manifest in full (it is small)."""
    check_file(path, expected, full=True)
    try:
        rows = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise IndexFormatError(f"{path} is not a readable list of deleted rows ({exc}); rebuild the index") from None
    valid = rows.ndim == 1 and rows.dtype == np.int64 and len(rows) == count
    if not valid or (count and (rows[0] < 0 or rows[-1] >= segment_rows or np.any(np.diff(rows) <= 0))):
        raise IndexFormatError(f"{path} does not hold {count} sorted rows below {segment_rows}; the index is damaged: rebuild it")
    return rows


@dataclass
class Segment:
    """A loaded segment: documents and vectors memory-mapped, shortlists in memory, deleted rows."""

    folder: Path
    count: int
    documents: pa.Table
    vectors: np.ndarray
    shortlists: dict[int, tuple[ShortlistSpec, Any]] = field(default_factory=dict)
    deleted: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    """Sorted local rows that are deleted: never returned by a search."""
    layer_vectors: dict[int, np.ndarray] = field(default_factory=dict)
    """Vectors of the shallower sub-models, by layer (memory-mapped like ``vectors``)."""
    layer_shortlists: dict[tuple[int, int], tuple[ShortlistSpec, Any]] = field(default_factory=dict)
    """Shortlist indexes over the shallower sub-models' vectors, by (layer, dim)."""

    def stored_vectors(self, layer: int | None = None) -> np.ndarray:
        """The full model's vectors (``layer`` None) or those of the model cut after ``layer`` layers."""
        return self.vectors if layer is None else self.layer_vectors[layer]

    def shortlist_index(self, dim: int, layer: int | None = None) -> tuple[ShortlistSpec, Any]:
        """The (spec, FAISS index) of the ``dim``-dim shortlist at full depth or at ``layer``."""
        return self.shortlists[dim] if layer is None else self.layer_shortlists[(layer, dim)]

    @property
    def live_count(self) -> int:
        return self.count - len(self.deleted)

    def live_mask(self) -> np.ndarray:
        mask = np.ones(self.count, dtype=bool)
        mask[self.deleted] = False
        return mask

    @classmethod
    def load(
        cls,
        folder: Path,
        entry: SegmentEntry,
        dim: int,
        dtype: str,
        specs: tuple[ShortlistSpec, ...],
        deleted: np.ndarray | None = None,
        use_gpu: bool | None = None,
        layers: tuple[int, ...] = (),
        integrity: str = "full",
    ) -> Segment:
        """Open a segment after checking its files at ``integrity`` (see :mod:`funnel.indexes.integrity`)."""
        from funnel.indexes.integrity import check_files

        needed = [DOCUMENTS_FILE, *segment_files(dtype, specs, layers)]
        for name in needed:
            if name not in entry.files:
                raise IndexFormatError(f"{folder / name} is not listed in the manifest; the index is damaged: rebuild it")
        check_files(((folder / name, expected) for name, expected in entry.files.items()), integrity)
        documents = read_documents(folder / DOCUMENTS_FILE)
        if documents.num_rows != entry.count:
            raise IndexFormatError(f"{folder / DOCUMENTS_FILE} holds {documents.num_rows} documents, the manifest says {entry.count}")
        vectors = open_vectors(folder / vectors_file(dtype), dtype, entry.count, dim)
        layer_vectors = {layer: open_vectors(folder / layer_vectors_file(dtype, layer), dtype, entry.count, dim) for layer in layers}

        def read(spec: ShortlistSpec, layer: int | None) -> Any:
            path = folder / shortlist_file(spec.dim, layer)
            index = shortlist.read(spec, path, use_gpu)
            if index.ntotal != entry.count:
                raise IndexFormatError(f"{path} holds {index.ntotal} vectors, the manifest says {entry.count}")
            return spec, index

        shortlists = {spec.dim: read(spec, None) for spec in specs}
        layer_shortlists = {(layer, spec.dim): read(spec, layer) for layer in layers for spec in specs}
        return cls(
            folder,
            entry.count,
            documents,
            vectors,
            shortlists,
            np.zeros(0, np.int64) if deleted is None else deleted,
            layer_vectors,
            layer_shortlists,
        )


def segment_files(dtype: str, specs: tuple[ShortlistSpec, ...], layers: tuple[int, ...] = ()) -> list[str]:
    """The vector and shortlist files a segment holds besides its documents."""
    names = [vectors_file(dtype)] + [shortlist_file(spec.dim) for spec in specs]
    for layer in layers:
        names += [layer_vectors_file(dtype, layer)] + [shortlist_file(spec.dim, layer) for spec in specs]
    return names
