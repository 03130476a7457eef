"""Fit a build's rotations on the vectors it has written, and decide where to keep them.

Called by a deferred :class:`~funnel.indexes.segment.SegmentWriter` once every vector is on disk:
``DᵀD`` is accumulated in float64 in one streaming pass over each depth's vectors file (exact, and
cheap next to encoding: fitting on a 10% sample cost up to 3 points of NDCG@10 at 32–64 dims on
SciFact), and for ``auto`` the prefixes' agreement with full-dim search is measured in a second
pass, on calibration queries made from sampled documents the way the tuner makes them.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from funnel.indexes.manifest import DOCUMENTS_FILE, Manifest, RotationEntry, file_entry, fsync_path
from funnel.indexes.rotation import (
    AGREEMENT_DEPTH,
    AGREEMENT_K,
    CALIBRATION_QUERIES,
    agreement_dims,
    decide,
    key_name,
    pca_rotation,
    prefix_agreement,
    rotation_file,
    second_moment,
    write_rotation,
)
from funnel.indexes.segment import RAW_PREFIX, read_documents

if TYPE_CHECKING:
    from funnel.indexes.segment import SegmentWriter
    from funnel.models import Encoder

MIN_DOCUMENTS = 100  # below this (the tuner's SMALL_INDEX) agreement is not measured: auto keeps model order
SEED = 0

Queries = dict[int | None, np.ndarray]


class RotationFit:
    """``fit(writer)`` gives the rotations by depth for the writer to store, and leaves the
    manifest's :class:`RotationEntry` (files written into ``folder``, decisions) in ``entry``."""

    def __init__(self, requested: str, folder: Path, template: Manifest, encoder: Encoder | None) -> None:
        self.requested = requested
        self.folder = folder
        self.template = template
        self.encoder = encoder
        self.entry = RotationEntry(requested=requested)
        self._source = ""

    def __call__(self, writer: SegmentWriter) -> dict[int | None, np.ndarray]:
        for stale in self.folder.glob("rotation*.f32"):  # from an interrupted finish: refitted below
            stale.unlink()
        dims = agreement_dims(self.template.dim, [spec.dim for spec in self.template.shortlists])
        depth = min(AGREEMENT_DEPTH, max(2 * AGREEMENT_K, writer.count // 10))
        measure = self.requested == "auto" and writer.count >= MIN_DOCUMENTS
        queries, sources = self._queries(writer) if measure else ({}, None)
        rotations: dict[int | None, np.ndarray] = {}
        files, decisions = {}, {}
        for layer in (None, *self.template.layers):
            moment = second_moment(writer.written_chunks(layer))
            rotation = pca_rotation(moment)
            agreement = None
            if measure:
                agreement = prefix_agreement(
                    partial(writer.written_chunks, layer),
                    queries[layer],
                    sources,
                    {"model": None, "pca": rotation},
                    dims,
                    AGREEMENT_K,
                    depth,
                )
            record = decide(self.requested, agreement, moment, rotation, dims)
            if measure:
                record["calibration"] = self._source
            decisions[key_name(layer)] = record
            if record["method"] == "pca":
                path = self.folder / rotation_file(layer)
                write_rotation(path, rotation)
                fsync_path(path)
                files[path.name] = file_entry(path)
                rotations[layer] = rotation
        self.entry = RotationEntry(requested=self.requested, files=files, decision=decisions)
        return rotations

    def _queries(self, writer: SegmentWriter) -> tuple[Queries, np.ndarray]:
        """Calibration query vectors by depth (model basis) and each one's source document."""
        from funnel.spans import SPAN_WORDS, sample_positions, span_queries

        positions = sample_positions(writer.count, CALIBRATION_QUERIES, SEED)
        if self.encoder is None:
            self._source = f"{len(positions)} sampled documents' own vectors, each left out of its own query's results"
            return {layer: _rows(writer, layer, positions) for layer in (None, *self.template.layers)}, positions
        from funnel.layers import encode_documents

        documents = read_documents(writer.folder / DOCUMENTS_FILE).take(positions)
        texts = span_queries(documents.column("title").to_pylist(), documents.column("text").to_pylist(), SEED)
        full, by_layer = encode_documents(self.encoder, texts, self.template.layers)
        self._source = (
            f"{len(positions)} random {SPAN_WORDS[0]}-{SPAN_WORDS[1]} word spans of sampled documents, "
            "each left out of its own query's results"
        )
        out: Queries = {None: full}
        for layer, vectors in by_layer.items():
            out[layer] = vectors
        return out, positions


def _rows(writer: SegmentWriter, layer: int | None, positions: np.ndarray) -> np.ndarray:
    """The written vectors at ``positions``, read row by row: a memory map's read-ahead around 200
    scattered rows kept ~225 MB of a 1M-row file resident, which the build's memory bound does not allow."""
    name = writer.written_name(layer)
    assert name.startswith(RAW_PREFIX), "a fit reads the vectors as encoded, before they are stored rotated"
    row_bytes = writer.dim * np.dtype(writer.dtype).itemsize
    out = np.empty((len(positions), writer.dim), dtype=np.float32)
    with (writer.folder / name).open("rb") as handle:
        for number, position in enumerate(positions):
            handle.seek(int(position) * row_bytes)
            out[number] = np.frombuffer(handle.read(row_bytes), dtype=writer.dtype)
    return out
