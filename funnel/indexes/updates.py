"""Change an index in place: add documents, delete documents, compact.

Every change follows one pattern, under the writer lock: write new immutable files (a segment
folder under a temporary name, then renamed; or a tombstone file), then replace the manifest
atomically. A reader sees the old version or the new one, never a mix. Files that no manifest
needs any more are removed lazily, at the change after the one that made them garbage, so a
reader that has just read the previous manifest can still open its files (and ``Index.load``
retries with the new manifest if it loses that race).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from funnel.corpus import Corpus, check_batch_ids
from funnel.encoders.corpus_engine import CorpusEngine, corpus_encoder
from funnel.errors import InputError
from funnel.indexes.builder import remove_retired
from funnel.indexes.lexical import write_lexical
from funnel.indexes.lock import LOCK_FILE, writer_lock
from funnel.indexes.manifest import (
    DOCUMENTS_FILE,
    MANIFEST_FILE,
    Manifest,
    SegmentEntry,
    TombstoneEntry,
    file_entry,
    layer_vectors_file,
    read_manifest,
    vectors_file,
    write_manifest_atomically,
)
from funnel.indexes.segment import CHUNK_ROWS, SegmentWriter, deleted_rows, live_mask, open_vectors, read_documents

if TYPE_CHECKING:
    from funnel.models import Encoder

SEGMENT_NAME = re.compile(r"^seg-(\d{6})$")
GARBAGE = re.compile(r"^(seg-\d{6}|seg-\d{6}\.deleted-\d{6}\.npy|lexical-\d{6}|query-[a-z][a-z0-9-]*-\d{6})$")
STALE_TEMP = re.compile(r"^\.(seg-|manifest\.|lexical-|query-).*\.tmp(-\d+)?$")
"""A change's temporary files and folders, left by a writer that died (none runs while we hold the lock)."""


def add_documents(path: str | Path, batches: Iterable[tuple[Any, ...]]) -> Manifest:
    """Add documents with their normalized full vectors (n, dim) as one new segment.

    Each batch is (documents, vectors), or (documents, vectors, {layer: vectors}) for an index
    that stores layer vectors; vectors as the model gives them (they are stored in the index's
    rotation, fitted when it was built and kept). Ids must be new to the index (a deleted id may
    come back). Returns the new manifest.
    """
    from funnel.indexes.index import load_rotations
    from funnel.indexes.rotation import rotate

    folder = Path(path).expanduser()
    read_manifest(folder)  # an index, before the lock file is made in it
    with writer_lock(folder):
        old = read_manifest(folder)
        existing = _live_ids(folder, old)
        rotations = load_rotations(folder, old)

        def fill(writer: SegmentWriter) -> None:
            seen: set[str] = set()
            for batch in batches:
                check_batch_ids(batch[0])
                _check_new_ids(batch[0].column("id"), existing, seen)
                if rotations:
                    by_layer = {layer: rotate(rows, rotations.get(layer)) for layer, rows in (batch[2] if len(batch) > 2 else {}).items()}
                    batch = (batch[0], rotate(batch[1], rotations.get(None)), by_layer)
                writer.append(*batch)
            if writer.count == 0:
                raise InputError("no documents to add")

        entry = _write_segment(folder, old, fill, rotations)
        return _commit(folder, old, replace(old, segments=old.segments + (entry,), generation=old.generation + 1))


def add_corpus(
    path: str | Path,
    corpus: Corpus,
    encoder: Encoder,
    *,
    batch_size: int = 64,
    show_progress: bool = False,
    engine: CorpusEngine = "auto",
) -> Manifest:
    """Encode ``corpus`` with ``encoder`` (which must match the index's model dims) and add it;
    ``engine`` as :attr:`~funnel.indexes.builder.IndexConfig.corpus_engine`."""
    manifest = read_manifest(Path(path).expanduser())
    if encoder.dim != manifest.dim:
        raise InputError(
            f"the model gives {encoder.dim}-dim vectors but the index holds {manifest.dim}-dim ones: use the index's model ({manifest.model})"
        )
    from funnel.layers import encode_corpus

    return add_documents(
        path,
        encode_corpus(
            corpus,
            encoder if manifest.layers else corpus_encoder(encoder, engine),
            manifest.layers,
            batch_size,
            total=corpus.num_rows,
            show_progress=show_progress,
        ),
    )


def delete_documents(path: str | Path, ids: Sequence[str], *, ignore_missing: bool = False) -> int:
    """Delete documents by id; returns how many were deleted.

    Ids not in the index raise InputError (nothing is deleted) unless ``ignore_missing``.
    """
    folder = Path(path).expanduser()
    wanted = pa.array(list(dict.fromkeys(_id_to_delete(i) for i in ids)), pa.string())
    read_manifest(folder)  # an index, before the lock file is made in it
    with writer_lock(folder):
        old = read_manifest(folder)
        generation = old.generation + 1
        tombstones = {t.segment: t for t in old.tombstones}
        changed: dict[str, np.ndarray] = {}
        found: set[str] = set()
        for entry in old.segments:
            segment_ids = read_documents(folder / entry.name / DOCUMENTS_FILE).column("id")
            rows = np.flatnonzero(pc.is_in(segment_ids, value_set=wanted).to_numpy(zero_copy_only=False))
            deleted = deleted_rows(folder, tombstones.get(entry.name), entry.count)
            rows = np.setdiff1d(rows, deleted)
            if len(rows):
                found.update(segment_ids.take(pa.array(rows)).to_pylist())
                changed[entry.name] = np.union1d(deleted, rows).astype(np.int64)
        missing = [i for i in wanted.to_pylist() if i not in found]
        if missing and not ignore_missing:
            shown = ", ".join(repr(i) for i in missing[:5]) + (" …" if len(missing) > 5 else "")
            raise InputError(
                f"{len(missing)} of the ids are not in the index ({shown}): nothing deleted; check them or pass --ignore-missing"
            )
        if not changed:
            return 0
        for segment, rows in changed.items():
            name = f"{segment}.deleted-{generation:06d}.npy"
            with (folder / name).open("wb") as out:
                np.save(out, rows)
                out.flush()
                os.fsync(out.fileno())
            tombstones[segment] = TombstoneEntry(segment=segment, name=name, count=len(rows), file=file_entry(folder / name))
        ordered = tuple(tombstones[s.name] for s in old.segments if s.name in tombstones)
        _commit(folder, old, replace(old, tombstones=ordered, generation=generation))
    return len(found)


def compact_index(path: str | Path) -> Manifest:
    """Rewrite the live documents into one new segment, dropping deleted rows; returns the manifest.

    Positions change (they number the live documents 0..count-1 afterwards); ids do not.
    """
    from funnel.indexes.index import load_rotations

    folder = Path(path).expanduser()
    read_manifest(folder)  # an index, before the lock file is made in it
    with writer_lock(folder):
        old = read_manifest(folder)
        if not old.tombstones and len(old.segments) <= 1:
            return old
        if old.count == 0:
            raise InputError("every document is deleted: nothing to compact into (build a new index instead)")
        tombstones = {t.segment: t for t in old.tombstones}

        def fill(writer: SegmentWriter) -> None:
            for entry in old.segments:
                documents = read_documents(folder / entry.name / DOCUMENTS_FILE)
                vectors = open_vectors(folder / entry.name / vectors_file(old.vector_dtype), old.vector_dtype, entry.count, old.dim)
                by_layer = {
                    layer: open_vectors(
                        folder / entry.name / layer_vectors_file(old.vector_dtype, layer), old.vector_dtype, entry.count, old.dim
                    )
                    for layer in old.layers
                }
                live = live_mask(folder, tombstones.get(entry.name), entry.count)
                for start in range(0, entry.count, CHUNK_ROWS):
                    rows = np.flatnonzero(live[start : start + CHUNK_ROWS]) + start
                    if len(rows):
                        layer_rows = {layer: np.asarray(layer_vectors[rows]) for layer, layer_vectors in by_layer.items()}
                        writer.append(documents.take(pa.array(rows)), np.asarray(vectors[rows]), layer_rows)

        return _commit(
            folder,
            old,
            replace(
                old,
                segments=(_write_segment(folder, old, fill, load_rotations(folder, old)),),
                tombstones=(),
                generation=old.generation + 1,
            ),
        )


def _id_to_delete(value: Any) -> str:
    """Ids are matched exactly as stored; an index made before the id rule may hold ids the
    rule now refuses, so only the type is checked here."""
    if isinstance(value, str) and value:
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise InputError(f"cannot delete by the id {value!r}: ids are non-empty strings (or integers)")


def _write_segment(
    folder: Path, old: Manifest, fill: Callable[[SegmentWriter], None], rotations: Mapping[int | None, np.ndarray]
) -> SegmentEntry:
    """Write a new segment under a temporary name with ``fill``, build its shortlists (over vectors
    stored in ``rotations``, the index's), and rename it into place; on any failure nothing of it
    is left. The caller publishes it in a manifest."""
    name = _next_segment_name(folder, old)
    temp = folder / f".{name}.tmp"
    shutil.rmtree(temp, ignore_errors=True)
    writer = SegmentWriter(temp, old.dim, old.vector_dtype, layers=old.layers)
    try:
        fill(writer)
        entry = writer.finish(old.shortlists, rotations=rotations)
        writer.cleanup()
        temp.rename(folder / name)
    except BaseException:
        writer.abort()
        shutil.rmtree(temp, ignore_errors=True)
        raise
    return replace(entry, name=name)


def _live_ids(folder: Path, manifest: Manifest) -> list[pa.ChunkedArray]:
    tombstones = {t.segment: t for t in manifest.tombstones}
    out = []
    for entry in manifest.segments:
        ids = read_documents(folder / entry.name / DOCUMENTS_FILE).column("id")
        live = live_mask(folder, tombstones.get(entry.name), entry.count)
        if not live.all():
            ids = ids.filter(pa.array(live))
        out.append(ids)
    return out


def _check_new_ids(ids: pa.Array | pa.ChunkedArray, existing: list[pa.ChunkedArray], seen: set[str]) -> None:
    for column in existing:
        clash = pc.filter(column, pc.is_in(column, value_set=ids))
        if len(clash):
            raise InputError(
                f"id {clash[0].as_py()!r} is already in the index: ids must be unique "
                f"(delete it first with `funnel delete INDEX --ids ...` to replace it)"
            )
    for doc_id in ids.to_pylist():
        if doc_id in seen:
            raise InputError(f"id {doc_id!r} appears twice in the documents to add: ids must be unique")
        seen.add(doc_id)


def _next_segment_name(folder: Path, manifest: Manifest) -> str:
    """One past every segment number in the manifest or on disk (an orphan of a crashed add included)."""
    names = [s.name for s in manifest.segments] + [p.name for p in folder.iterdir()]
    numbers = [int(m.group(1)) for m in map(SEGMENT_NAME.match, names) if m]
    return f"seg-{max(numbers, default=-1) + 1:06d}"


def _commit(folder: Path, old: Manifest, new: Manifest) -> Manifest:
    """Publish ``new`` (with its own lexical index over its live documents, where the index keeps
    one); then remove what neither it nor ``old`` needs (only files of our own making). Returns
    the manifest published."""
    if new.lexical is not None:
        new = replace(new, lexical=write_lexical(folder, new))
    return publish_manifest(folder, old, new)


def publish_manifest(folder: Path, old: Manifest, new: Manifest) -> Manifest:
    """Replace the manifest ``old`` with ``new`` (the caller holds the writer lock), then remove
    what neither needs: only names of our own making (:data:`GARBAGE`, :data:`STALE_TEMP`)."""
    write_manifest_atomically(folder, new)
    remove_retired(folder)
    keep = old.referenced() | new.referenced() | {MANIFEST_FILE, LOCK_FILE}
    for entry in folder.iterdir():
        if STALE_TEMP.match(entry.name) or (GARBAGE.match(entry.name) and entry.name not in keep):
            shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)
    return new
