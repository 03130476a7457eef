"""An index loaded for search: segments behind one numbering of documents (positions 0..count-1)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from funnel.errors import InputError
from funnel.indexes import shortlist
from funnel.indexes.manifest import Manifest, ShortlistSpec, read_manifest
from funnel.indexes.segment import Segment, iter_chunks


@dataclass
class Index:
    """Read-only view of an index folder. Safe to share between threads."""

    path: Path
    manifest: Manifest
    segments: list[Segment]

    @classmethod
    def load(cls, path: str | Path) -> "Index":
        """Open an index: memory-maps documents and vectors, reads shortlist indexes; checks sizes."""
        folder = Path(path).expanduser()
        manifest = read_manifest(folder)
        segments = [
            Segment.load(folder / entry.name, entry, manifest.dim, manifest.vector_dtype, manifest.shortlists)
            for entry in manifest.segments
        ]
        return cls(folder, manifest, segments)

    @property
    def count(self) -> int:
        return self.manifest.count

    @property
    def dim(self) -> int:
        return self.manifest.dim

    @property
    def shortlist_dims(self) -> list[int]:
        return sorted(self.segments[0].shortlists) if self.segments else [s.dim for s in self.manifest.shortlists]

    def _offsets(self) -> np.ndarray:
        return np.cumsum([0] + [segment.count for segment in self.segments])

    def add_shortlist(self, dim: int, kind: str = "flat", **params: int) -> ShortlistSpec:
        """Build a shortlist index in memory (not saved), e.g. to compare dims in an evaluation."""
        spec = shortlist.make_spec(dim, kind, **params)
        if not 1 <= dim <= self.dim:
            raise InputError(f"shortlist dim {dim} does not fit this index's {self.dim} dims")
        for segment in self.segments:
            built = shortlist.build(spec, lambda s=segment: iter_chunks(s.vectors), segment.count)
            segment.shortlists[dim] = (spec, built)
        return spec

    def shortlist(self, queries: np.ndarray, dim: int, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``n`` positions by the ``dim``-dim shortlist index. ``queries``: (q, dim_full) normalized.

        Returns (scores (q, n) float32, positions (q, n) int64), padded with -inf / -1.
        """
        if dim not in self.shortlist_dims:
            have = ", ".join(map(str, self.shortlist_dims)) or "none"
            raise InputError(
                f"this index has no {dim}-dim shortlist (it has: {have}); start the funnel at one of those, "
                f"or rebuild with --shortlist-dim {dim}"
            )
        parts_scores, parts_positions = [], []
        for offset, segment in zip(self._offsets(), self.segments):
            spec, index = segment.shortlists[dim]
            scores, rows = shortlist.search(index, spec, queries, min(n, max(segment.count, 1)))
            parts_scores.append(scores)
            parts_positions.append(np.where(rows >= 0, rows + offset, -1))
        scores = np.concatenate(parts_scores, axis=1)
        positions = np.concatenate(parts_positions, axis=1)
        return top_n(scores, positions, n)

    def vectors(self, positions: np.ndarray, dim: int | None = None) -> np.ndarray:
        """Stored vectors for positions of any shape (no -1), as float32 of shape positions.shape + (dim,).

        ``dim`` (default: all) reads only the first ``dim`` components, as stored (not re-normalized).
        """
        dim = self.dim if dim is None else dim
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
                if mask.all():  # one segment holds every row: write straight into out, no second copy
                    out[order] = segment.vectors[local[order], :dim]
                    break
                rows = np.empty((local.size, dim), dtype=np.float32)
                rows[order] = segment.vectors[local[order], :dim]
                out[mask] = rows
        return out.reshape(positions.shape + (dim,))

    def all_vectors(self) -> np.ndarray:
        """Every full vector as one float32 array (count, dim): for exact search on small indexes."""
        return np.concatenate([np.asarray(s.vectors, dtype=np.float32) for s in self.segments]) if self.segments else np.zeros((0, self.dim), np.float32)

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
        """Every document id in position order."""
        return [i for segment in self.segments for i in segment.documents.column("id").to_pylist()]


def top_n(scores: np.ndarray, positions: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Keep the ``n`` best of each row, best first; ties broken by lower position for determinism."""
    n = min(n, scores.shape[1])
    order = np.lexsort((positions, -scores), axis=1)[:, :n]
    return np.take_along_axis(scores, order, axis=1), np.take_along_axis(positions, order, axis=1)
