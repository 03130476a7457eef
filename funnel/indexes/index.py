"""An index loaded for search: segments behind one numbering of documents (positions 0..count-1)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from funnel.errors import IndexFormatError, InputError
from funnel.indexes import shortlist
from funnel.indexes.lexical import LexicalIndex, lexical_files
from funnel.indexes.manifest import Manifest, ShortlistSpec, manifest_stamp, read_manifest_stamped
from funnel.indexes.segment import Segment, iter_chunks, read_tombstone
from funnel.vectors import truncate, widen

LOAD_PATIENCE_SECONDS = 30.0
"""How long a load keeps retrying while writers keep replacing the manifest under it."""


@dataclass(frozen=True)
class StoredQueries:
    """Query vectors (q, dim) in the basis an index stores its vectors of one depth in (``layer``
    None: the full model's), made by :meth:`Index.stored_queries`, the one place queries are
    rotated; shortlists and rescoring take only these, so a query can never skip the rotation."""

    vectors: np.ndarray
    layer: int | None = None


@dataclass(eq=False)
class Index:
    """Read-only view of one version of an index folder. Safe to share between threads.

    A writer (add, delete, compact) never changes the files this view uses: it writes new files
    and replaces the manifest. So a loaded Index keeps answering for the version it loaded, even
    while the folder moves on; load it again (or ``Retriever.reload_if_changed``) to see changes.
    Positions number every stored row, deleted ones included; searches never return deleted rows.
    """

    path: Path
    manifest: Manifest
    segments: list[Segment]
    stamp: tuple[int, ...] = ()
    """Identity of the manifest file this view was loaded from (see :meth:`changed_on_disk`)."""
    rotations: dict[int | None, np.ndarray] = field(default_factory=dict)
    """The stored rotation by depth (None: the full model's vectors); a depth absent keeps the model's order."""
    lexical: LexicalIndex | None = None
    """BM25 over the live documents, where the index keeps one (:mod:`funnel.indexes.lexical`)."""
    shortlist_changes: int = field(default=0, init=False)
    """Shortlists built into this view in memory (:meth:`add_shortlist`), the one way a view
    changes: what searches learned of the old shortlists (which plans compile) is dropped."""

    def __post_init__(self) -> None:
        self._segment_offsets = np.cumsum([0] + [segment.count for segment in self.segments])

    @classmethod
    def load(cls, path: str | Path, *, use_gpu: bool | None = None, integrity: str | None = None) -> Index:
        """Open an index: memory-maps documents and vectors, reads shortlist indexes and deleted rows.

        ``integrity``: ``full`` checks every byte of every file against the manifest's sha256
        before anything is searched, ``sampled`` only sizes and each file's first and last 64 KiB
        (default: ``FUNNEL_INTEGRITY``, else full; see :mod:`funnel.indexes.integrity`).
        Shortlists go to the GPU when faiss sees one, unless ``use_gpu=False``.
        """
        from funnel.indexes.integrity import resolve_integrity

        level = resolve_integrity(integrity)
        folder = Path(path).expanduser()
        deadline = time.monotonic() + LOAD_PATIENCE_SECONDS
        while True:
            manifest, stamp = read_manifest_stamped(folder)
            try:
                segments = _load_segments(folder, manifest, use_gpu, level)
                return cls(folder, manifest, segments, stamp, load_rotations(folder, manifest), _load_lexical(folder, manifest, level))
            except (IndexFormatError, OSError, RuntimeError) as exc:
                # A writer may have replaced the manifest and removed files of an older version
                # while we read it (files vanish between a check and an open, or FAISS finds
                # nothing to read): load the new version instead of reporting damage. Only a
                # failure under a manifest that stayed in place is real damage.
                if _current_stamp(folder) == stamp or time.monotonic() > deadline:
                    if isinstance(exc, IndexFormatError):
                        raise
                    raise IndexFormatError(f"{folder} could not be read ({exc}); run `funnel verify {folder}`") from None

    def changed_on_disk(self) -> bool:
        """Whether the folder's manifest is no longer the one this view was loaded from."""
        return self.stamp_on_disk() != self.stamp

    def stamp_on_disk(self) -> tuple[int, ...]:
        """The stamp of the folder's current manifest (``()`` when there is none): equal to
        :attr:`stamp` while no writer has replaced it."""
        return _current_stamp(self.path)

    @property
    def count(self) -> int:
        """Live documents (deleted ones not counted)."""
        return self.manifest.count

    @property
    def rows(self) -> int:
        """Stored rows, deleted ones included: positions run 0..rows-1."""
        return self.manifest.rows

    @property
    def version(self) -> int:
        """The manifest's generation: bumped by every add, delete and compact."""
        return self.manifest.generation

    @property
    def dim(self) -> int:
        return self.manifest.dim

    @property
    def depth(self) -> int:
        """Transformer layers of the model that made the index (0: unknown or static)."""
        return self.manifest.depth

    @property
    def layers(self) -> tuple[int, ...]:
        """Shallower depths whose vectors the index stores besides the full model's."""
        return self.manifest.layers

    def rotation(self, layer: int | None = None) -> np.ndarray | None:
        """The orthogonal (dim, dim) matrix the vectors of ``layer`` (None: the full model) are
        stored in, stored = model · R; None when they keep the model's order."""
        return self.rotations.get(self.depth_key(layer))

    def stored_queries(self, vectors: np.ndarray, layer: int | None = None) -> StoredQueries:
        """Map query vectors of the model (q, dim), normalized, into the basis the index stores
        its vectors and shortlists in (``layer``: queries from the model cut after that many
        layers). The identity when the index keeps the model's order. Norms and full-dim scores
        are unchanged."""
        vectors = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
        key = self.depth_key(layer)
        rotation = self.rotations.get(key)
        return StoredQueries(vectors if rotation is None else vectors @ rotation, key)

    def to_model_basis(self, stored: np.ndarray, layer: int | None = None) -> np.ndarray:
        """Stored vectors (n, dim) of ``layer`` back in the model's basis (the inverse rotation)."""
        rotation = self.rotation(layer)
        stored = np.asarray(stored, dtype=np.float32)
        return stored if rotation is None else stored @ rotation.T

    def is_full_depth(self, layer: int | None) -> bool:
        return layer is None or (self.depth > 0 and layer == self.depth)

    def depth_key(self, layer: int | None) -> int | None:
        """None for the full model, else ``layer`` once checked to be stored: the key segments use."""
        if self.is_full_depth(layer):
            return None
        self.check_layer(layer)
        return layer

    def check_layer(self, layer: int | None) -> None:
        """InputError unless the index holds vectors of the model cut after ``layer`` layers."""
        if self.is_full_depth(layer) or layer in self.layers:
            return
        full = f"the full model's ({self.depth} layers)" if self.depth else "the full model's"
        have = f"layers {', '.join(map(str, self.layers))} and {full}" if self.layers else f"only {full}"
        raise InputError(f"this index holds vectors of {have}, not of layer {layer}: rebuild it with --layers {layer}")

    @property
    def has_lexical(self) -> bool:
        """Whether plans may add BM25 candidates (``+bm25:N``): the index keeps a lexical index."""
        return self.lexical is not None

    def check_query_encoder(self, name: str) -> None:
        """InputError unless the index stores a query encoder called ``name`` (which plans may name)."""
        if self.manifest.query_encoder(name) is None:
            have = ", ".join(entry.name for entry in self.manifest.query_encoders)
            raise InputError(
                f"this index has no query encoder named {name!r} "
                + (f"(it has: {have})" if have else f"(train one with `funnel train --query-encoder static --index {self.path}`)")
            )

    @property
    def shortlist_dims(self) -> list[int]:
        return sorted(self.segments[0].shortlists) if self.segments else [s.dim for s in self.manifest.shortlists]

    def _offsets(self) -> np.ndarray:
        return self._segment_offsets

    def add_shortlist(self, dim: int, kind: str = "flat", layer: int | None = None, **params: int) -> ShortlistSpec:
        """Build a shortlist index in memory (not saved), e.g. to compare dims in an evaluation;
        ``layer``: over the stored vectors of the model cut after that many layers."""
        spec = shortlist.make_spec(dim, kind, **params)
        shortlist.check_fits(spec, self.dim)
        key = self.depth_key(layer)
        for segment in self.segments:
            built = shortlist.build(spec, partial(iter_chunks, segment.stored_vectors(key)), segment.count, self.rotations.get(key))
            if key is None:
                segment.shortlists[dim] = (spec, built)
            else:
                segment.layer_shortlists[(key, dim)] = (spec, built)
        self.shortlist_changes += 1
        return spec

    def has_shortlist(self, dim: int, layer: int | None = None) -> bool:
        key = None if self.is_full_depth(layer) else layer
        if key is None:
            return dim in self.shortlist_dims
        return bool(self.segments) and (key, dim) in self.segments[0].layer_shortlists

    def shortlist(self, queries: StoredQueries, dim: int, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``n`` positions by the ``dim``-dim shortlist index of the queries' depth.

        Returns (scores (q, n) float32, positions (q, n) int64), padded with -inf / -1.
        """
        key = queries.layer
        vectors = queries.vectors
        if key is None and dim not in self.shortlist_dims:
            have = ", ".join(map(str, self.shortlist_dims)) or "none"
            raise InputError(
                f"this index has no {dim}-dim shortlist (it has: {have}); start the funnel at one of those, "
                f"or rebuild with --shortlist-dim {dim}"
            )
        if len(self.segments) == 1 and not len(self.segments[0].deleted):
            # One segment, nothing deleted (the common case): FAISS's answer is already the
            # top-n, best first, in positions; no merge needed.
            spec, index = self.segments[0].shortlist_index(dim, key)
            return shortlist.search(index, spec, vectors, min(n, max(self.segments[0].count, 1)))
        parts_scores, parts_positions = [], []
        for offset, segment in zip(self._offsets(), self.segments):
            spec, index = segment.shortlist_index(dim, key)
            # Ask for as many extra candidates as there are deleted rows, so that deletions never
            # leave fewer than n live ones (exact for flat indexes).
            want = min(n + len(segment.deleted), max(segment.count, 1))
            scores, rows = shortlist.search(index, spec, vectors, want)
            if len(segment.deleted):
                dead = np.isin(rows, segment.deleted)
                rows = np.where(dead, -1, rows)
                scores = np.where(dead, -np.inf, scores).astype(np.float32)
            parts_scores.append(scores)
            parts_positions.append(np.where(rows >= 0, rows + offset, -1))
        scores = np.concatenate(parts_scores, axis=1)
        positions = np.concatenate(parts_positions, axis=1)
        return top_n(scores, positions, n)

    def rescore(self, queries: StoredQueries, positions: np.ndarray, dim: int) -> np.ndarray:
        """Cosines (q, n) float32 of each query with its candidates ``positions`` (q, n) at ``dim``
        dims, from the stored vectors of the queries' depth; -inf where a position is -1."""
        valid = positions >= 0
        # dot / norm over the stored prefix: the scores of truncate-then-dot, without reading the
        # unused dims or writing a normalized copy.
        candidates = self.vectors(np.where(valid, positions, 0), dim, queries.layer)
        dots = np.einsum("qnd,qd->qn", candidates, truncate(queries.vectors, dim))
        norms = np.sqrt(np.einsum("qnd,qnd->qn", candidates, candidates))
        scores = np.divide(dots, norms, out=np.zeros_like(dots), where=norms > 0)
        return np.where(valid, scores, -np.inf).astype(np.float32)

    def vectors(self, positions: np.ndarray, dim: int | None = None, layer: int | None = None) -> np.ndarray:
        """Stored vectors for positions of any shape (no -1), as float32 of shape positions.shape + (dim,).

        ``dim`` (default: all) reads only the first ``dim`` components, as stored (not re-normalized);
        ``layer`` reads the vectors of the model cut after that many layers instead of the full model's.
        """
        dim = self.dim if dim is None else dim
        key = self.depth_key(layer)
        flat = positions.reshape(-1)
        out = np.empty((flat.size, dim), dtype=np.float32)
        offsets = self._offsets()
        owner = np.searchsorted(offsets, flat, side="right") - 1
        for number, segment in enumerate(self.segments):
            mask = owner == number
            if mask.any():
                local = flat[mask] - offsets[number]
                # Sorted reads are kinder to a memory map that is not yet in the page cache.
                order = np.argsort(local)
                stored = segment.stored_vectors(key)
                if mask.all():  # one segment holds every row: write straight into out, no second copy
                    out[order] = widen(stored[local[order], :dim])
                    break
                rows = np.empty((local.size, dim), dtype=np.float32)
                rows[order] = widen(stored[local[order], :dim])
                out[mask] = rows
        return out.reshape(positions.shape + (dim,))

    def all_vectors(self) -> np.ndarray:
        """Every full vector as one float32 array (count, dim), as stored (in the index's rotated
        basis, if any): for exact search on small indexes."""
        return (
            np.concatenate([np.asarray(s.vectors, dtype=np.float32) for s in self.segments])
            if self.segments
            else np.zeros((0, self.dim), np.float32)
        )

    def documents(self, positions: list[int]) -> list[dict[str, Any]]:
        """Documents (id, title, text, metadata) at positions, in order."""
        offsets = self._offsets()
        out = []
        for position in positions:
            number = int(np.searchsorted(offsets, position, side="right") - 1)
            row = self.segments[number].documents.slice(position - int(offsets[number]), 1).to_pylist()[0]
            row["metadata"] = json.loads(row["metadata"]) if row["metadata"] else {}
            out.append(row)
        return out

    def ids(self) -> list[str]:
        """The id at every position, in position order (``ids()[p]`` names position ``p``); deleted
        rows keep their place, so an id deleted and added again appears twice."""
        return [i for segment in self.segments for i in segment.documents.column("id").to_pylist()]

    def live_ids(self) -> list[str]:
        """Ids of the live documents, in position order."""
        out: list[str] = []
        for segment in self.segments:
            ids = segment.documents.column("id")
            out.extend(ids.filter(segment.live_mask()).to_pylist() if len(segment.deleted) else ids.to_pylist())
        return out

    def live_positions(self) -> np.ndarray:
        """Positions of the live documents, ascending (int64)."""
        parts = [np.flatnonzero(s.live_mask()) + offset for offset, s in zip(self._offsets(), self.segments)]
        return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)


def _current_stamp(folder: Path) -> tuple[int, ...]:
    try:
        return manifest_stamp(folder)
    except OSError:
        return ()


def load_rotations(folder: Path, manifest: Manifest) -> dict[int | None, np.ndarray]:
    """The rotations a manifest lists, by depth, each checked in full (see :func:`read_rotation`)."""
    from funnel.indexes.rotation import read_rotation, rotation_file

    if manifest.rotation is None or not manifest.rotation.files:
        return {}
    by_name = {rotation_file(layer): layer for layer in (None, *manifest.layers)}
    out = {}
    for name, expected in manifest.rotation.files.items():
        if name not in by_name:
            raise IndexFormatError(f"{folder / name} is listed as a rotation of a depth this index does not store; rebuild it")
        out[by_name[name]] = read_rotation(folder / name, expected, manifest.dim)
    return out


def _load_lexical(folder: Path, manifest: Manifest, integrity: str) -> LexicalIndex | None:
    from funnel.indexes.integrity import check_files

    if manifest.lexical is None:
        return None
    check_files(lexical_files(folder, manifest.lexical), integrity)
    return LexicalIndex.open(folder, manifest.lexical, manifest)


def _load_segments(folder: Path, manifest: Manifest, use_gpu: bool | None, integrity: str = "full") -> list[Segment]:
    deleted = {}
    counts = {entry.name: entry.count for entry in manifest.segments}
    for tomb in manifest.tombstones:
        if tomb.segment not in counts:
            raise IndexFormatError(f"{folder / tomb.name} deletes rows of {tomb.segment}, which the manifest does not list")
        deleted[tomb.segment] = read_tombstone(folder / tomb.name, tomb.file, tomb.count, counts[tomb.segment])
    return [
        Segment.load(
            folder / entry.name,
            entry,
            manifest.dim,
            manifest.vector_dtype,
            manifest.shortlists,
            deleted.get(entry.name),
            use_gpu,
            manifest.layers,
            integrity,
        )
        for entry in manifest.segments
    ]


def top_n(scores: np.ndarray, positions: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Keep the ``n`` best of each row, best first; ties broken by lower position for determinism."""
    n = min(n, scores.shape[1])
    if scores.shape[0] == 1:  # one query: plain indexing, without take_along_axis's overhead
        best = np.lexsort((positions[0], -scores[0]))[:n]
        return scores[:, best], positions[:, best]
    order = np.lexsort((positions, -scores), axis=1)[:, :n]
    return np.take_along_axis(scores, order, axis=1), np.take_along_axis(positions, order, axis=1)
