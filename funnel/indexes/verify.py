"""Full integrity check of an index folder: every byte against the manifest, and every file's
contents against the others (counts, dims, ids, vector norms). ``Index.load`` does the fast part."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from funnel.errors import FunnelError
from funnel.indexes import shortlist
from funnel.indexes.manifest import DOCUMENTS_FILE, check_file, layer_vectors_file, read_manifest, shortlist_file, vectors_file
from funnel.indexes.segment import read_documents, read_tombstone, read_vector_chunks, segment_files

NORM_TOLERANCE = 1e-2  # float16 storage keeps norms within about 1e-3 of 1


@dataclass
class VerifyReport:
    """What ``verify_index`` checked; ``problems`` is empty when the index is sound."""

    path: Path
    documents: int = 0
    files: int = 0
    bytes: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_index(path: str | Path) -> VerifyReport:
    """Check every file of the index in full; problems are collected (each naming its file), not raised."""
    folder = Path(path).expanduser()
    report = VerifyReport(folder)
    try:
        manifest = read_manifest(folder)
    except FunnelError as exc:
        report.problems.append(str(exc))
        return report
    deleted: dict[str, np.ndarray] = {}
    counts = {s.name: s.count for s in manifest.segments}
    for tomb in manifest.tombstones:
        report.files += 1
        try:
            deleted[tomb.segment] = read_tombstone(folder / tomb.name, tomb.file, tomb.count, counts.get(tomb.segment, -1))
            report.bytes += tomb.file.bytes
        except FunnelError as exc:
            report.problems.append(str(exc))
    if manifest.rotation is not None and manifest.rotation.files:
        from funnel.indexes.index import load_rotations

        report.files += len(manifest.rotation.files)
        try:
            load_rotations(folder, manifest)  # every byte, and orthogonality
            report.bytes += sum(f.bytes for f in manifest.rotation.files.values())
        except FunnelError as exc:
            report.problems.append(str(exc))
    if manifest.lexical is not None:
        from funnel.indexes.lexical import LexicalIndex, lexical_files

        lexical_ok = True
        for lexical_path, expected in lexical_files(folder, manifest.lexical):
            report.files += 1
            try:
                check_file(lexical_path, expected, full=True)
                report.bytes += expected.bytes
            except FunnelError as exc:
                report.problems.append(str(exc))
                lexical_ok = False
        if lexical_ok:
            try:
                LexicalIndex.open(folder, manifest.lexical, manifest).check()
            except FunnelError as exc:
                report.problems.append(str(exc))
    for student in manifest.query_encoders:
        for name, expected in student.files.items():
            report.files += 1
            try:
                check_file(folder / student.folder / name, expected, full=True)
                report.bytes += expected.bytes
            except FunnelError as exc:
                report.problems.append(str(exc))
    live_ids = []
    for entry in manifest.segments:
        seg = folder / entry.name
        bad = set()
        for name, expected in entry.files.items():
            report.files += 1
            try:
                check_file(seg / name, expected, full=True)
                report.bytes += expected.bytes
            except FunnelError as exc:
                report.problems.append(str(exc))
                bad.add(name)
        needed = [DOCUMENTS_FILE, *segment_files(manifest.vector_dtype, manifest.shortlists, manifest.layers)]
        for name in needed:
            if name not in entry.files:
                report.problems.append(f"{seg / name} is not listed in the manifest")
                bad.add(name)
        if DOCUMENTS_FILE not in bad:
            try:
                documents = read_documents(seg / DOCUMENTS_FILE)
                if documents.num_rows != entry.count:
                    report.problems.append(f"{seg / DOCUMENTS_FILE} holds {documents.num_rows} documents, the manifest says {entry.count}")
                else:
                    live = np.ones(entry.count, bool)
                    live[deleted.get(entry.name, np.zeros(0, np.int64))] = False
                    live_ids.append(documents.column("id").filter(pa.array(live)))
            except FunnelError as exc:
                report.problems.append(str(exc))
        vector_names = [vectors_file(manifest.vector_dtype)] + [
            layer_vectors_file(manifest.vector_dtype, layer) for layer in manifest.layers
        ]
        for vectors in (seg / name for name in vector_names):
            if vectors.name not in bad:
                _check_norms(vectors, manifest.vector_dtype, manifest.dim, entry.count, report)
        shortlist_specs = [(spec, None) for spec in manifest.shortlists] + [
            (spec, layer) for layer in manifest.layers for spec in manifest.shortlists
        ]
        for spec, layer in shortlist_specs:
            name = shortlist_file(spec.dim, layer)
            if name in bad:
                continue
            try:
                index = shortlist.read(spec, seg / name, use_gpu=False)
                if index.ntotal != entry.count or index.d != spec.dim:
                    report.problems.append(
                        f"{seg / name} holds {index.ntotal} vectors of {index.d} dims, the manifest says {entry.count} of {spec.dim}"
                    )
            except FunnelError as exc:
                report.problems.append(str(exc))
    if live_ids:
        ids = pa.chunked_array([c for ids in live_ids for c in ids.chunks], pa.string())
        counts_by_id = pc.value_counts(ids)
        repeated = pc.filter(counts_by_id, pc.greater(pc.struct_field(counts_by_id, [1]), 1))
        if len(repeated):
            report.problems.append(
                f"{len(repeated)} ids appear more than once among live documents (e.g. {repeated[0]['values'].as_py()!r})"
            )
        report.documents = len(ids)
    return report


def _check_norms(path: Path, dtype: str, dim: int, count: int, report: VerifyReport) -> None:
    start = 0
    try:
        for chunk in read_vector_chunks(path, dtype, dim, count):
            norms = np.linalg.norm(chunk.astype(np.float32), axis=1)
            off = np.flatnonzero(~np.isfinite(norms) | (np.abs(norms - 1) > NORM_TOLERANCE))
            if len(off):
                report.problems.append(f"{path} row {start + off[0]} has norm {norms[off[0]]:.4f}, not 1: the vectors are altered")
                return
            start += len(chunk)
    except FunnelError as exc:
        report.problems.append(str(exc))
