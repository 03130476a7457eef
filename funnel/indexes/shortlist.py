"""FAISS indexes over truncated, re-normalized vectors: the funnel's first, cheap stage.

Kinds: ``flat`` (exact inner product), ``hnsw`` (graph), ``ivf`` (inverted lists) and ``binary``
(the signs of the first ``dim`` dims, Hamming distance). All return similarities where larger is
better; for ``binary`` that is ``dim - 2 * hamming``, the inner product of the ±1 sign vectors.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from funnel.errors import IndexFormatError, InputError
from funnel.indexes.manifest import ShortlistSpec
from funnel.vectors import truncate

if TYPE_CHECKING:
    import faiss

KINDS = ("flat", "hnsw", "ivf", "binary")
DEFAULT_PARAMS: dict[str, dict[str, int]] = {
    "flat": {},
    "hnsw": {"m": 32, "ef_construction": 80, "ef_search": 128},
    "ivf": {"nlist": 0, "nprobe": 16},  # nlist 0: about 4·sqrt(n), chosen at build time
    "binary": {},
}
FAISS_CLASSES = {"flat": "IndexFlat", "hnsw": "IndexHNSW", "ivf": "IndexIVF", "binary": "IndexBinary"}


def make_spec(dim: int, kind: str = "flat", **params: int) -> ShortlistSpec:
    if kind not in KINDS:
        raise InputError(f"unknown shortlist kind {kind!r}: choose one of {', '.join(KINDS)}")
    if kind == "binary" and dim % 8:
        raise InputError(f"a binary shortlist needs a dim that is a multiple of 8, not {dim}")
    unknown = set(params) - set(DEFAULT_PARAMS[kind])
    if unknown:
        raise InputError(
            f"{kind} shortlist has no parameter {', '.join(sorted(unknown))}; it takes: {', '.join(DEFAULT_PARAMS[kind]) or 'none'}"
        )
    return ShortlistSpec(dim=dim, kind=kind, params={**DEFAULT_PARAMS[kind], **params})


def _sign_bits(vectors: np.ndarray) -> np.ndarray:
    return np.packbits(vectors > 0, axis=-1)


def build(spec: ShortlistSpec, chunks: Callable[[], Iterable[np.ndarray]], count: int) -> Any:
    """Build a FAISS index for ``spec`` from full vectors delivered in chunks (each (n, full_dim)).

    ``chunks`` is called again when the index must be trained first (IVF), so vectors can stay on
    disk and stream through twice instead of being held in memory.
    """
    import faiss

    if spec.kind == "binary":
        binary = faiss.IndexBinaryFlat(spec.dim)
        for chunk in chunks():
            binary.add(_sign_bits(np.asarray(chunk[:, : spec.dim])))
        return binary
    index: faiss.Index
    if spec.kind == "flat":
        index = faiss.IndexFlatIP(spec.dim)
    elif spec.kind == "hnsw":
        index = faiss.IndexHNSWFlat(spec.dim, spec.params["m"], faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = spec.params["ef_construction"]
    else:
        nlist = spec.params["nlist"] or max(1, min(int(4 * np.sqrt(count)), count // 39 or 1))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(spec.dim), spec.dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.train(_training_sample(spec.dim, chunks, nlist))
    for chunk in chunks():
        index.add(truncate(chunk, spec.dim))
    configure(index, spec)
    return index


def build_file(spec: ShortlistSpec, chunks: Callable[[], Iterable[np.ndarray]], count: int, path: Path) -> None:
    """Build the index for ``spec`` and write it at ``path``. A flat index is streamed straight to
    the file in FAISS's own format, so building it needs no memory beyond one chunk."""
    if spec.kind != "flat":
        write(build(spec, chunks, count), spec, path)
        return
    first = None
    with path.open("wb") as out:
        # FAISS's IndexFlatIP layout: fourcc, header (d, ntotal, two unused, is_trained, metric),
        # then the float32 codes prefixed by their count. A test pins it against faiss.write_index.
        out.write(b"IxFI" + struct.pack("<iqqq?iQ", spec.dim, count, 1 << 20, 1 << 20, True, 0, count * spec.dim))
        written = 0
        for chunk in chunks():
            rows = truncate(chunk, spec.dim)
            first = rows[0].copy() if first is None and len(rows) else first
            out.write(np.ascontiguousarray(rows, dtype="<f4").tobytes())
            written += len(rows)
    if written != count:
        raise IndexFormatError(f"{path}: wrote {written} vectors, expected {count}")
    check = read(spec, path, use_gpu=False)
    if check.ntotal != count or check.d != spec.dim or (first is not None and not np.array_equal(check.reconstruct(0), first)):
        write(build(spec, chunks, count), spec, path)  # a FAISS whose format moved on: let it write


def _training_sample(dim: int, chunks: Callable[[], Iterable[np.ndarray]], nlist: int) -> np.ndarray:
    limit = max(nlist * 64, 10_000)
    parts, total = [], 0
    for chunk in chunks():
        parts.append(truncate(chunk, dim))
        total += len(parts[-1])
        if total >= limit:
            break
    return np.concatenate(parts)[:limit]


def configure(index: Any, spec: ShortlistSpec, **overrides: int) -> None:
    """Apply search-time parameters (efSearch, nprobe)."""
    params = {**spec.params, **overrides}
    if spec.kind == "hnsw":
        index.hnsw.efSearch = params["ef_search"]
    elif spec.kind == "ivf":
        index.nprobe = params["nprobe"]


def search(index: Any, spec: ShortlistSpec, queries: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-``n`` by shortlist similarity. ``queries``: (q, full_dim) normalized float32.

    Returns (scores (q, n) float32, local rows (q, n) int64), padded with -inf / -1 when the
    index holds fewer than ``n`` vectors.
    """
    if spec.kind == "binary":
        distances, rows = index.search(_sign_bits(queries[:, : spec.dim]), n)
        scores = (spec.dim - 2 * distances).astype(np.float32)
    else:
        if spec.kind == "hnsw":
            # efSearch below n would silently return fewer good candidates than asked for.
            index.hnsw.efSearch = max(spec.params["ef_search"], n)
        scores, rows = index.search(np.ascontiguousarray(truncate(queries, spec.dim)), n)
    scores = np.where(rows >= 0, scores, -np.inf).astype(np.float32)
    return scores, rows.astype(np.int64)


def write(index: Any, spec: ShortlistSpec, path: Path) -> None:
    import faiss

    if spec.kind == "binary":
        faiss.write_index_binary(index, str(path))
    else:
        faiss.write_index(index, str(path))


def read(spec: ShortlistSpec, path: Path, use_gpu: bool | None = None) -> Any:
    """Load a shortlist index; moved to the GPU when faiss sees one (and ``use_gpu`` allows)."""
    import faiss

    # Flat storage (flat, and HNSW's vectors) is memory-mapped rather than read: opening a
    # 1M-vector shortlist takes ~0.07 s instead of ~0.8 s. Index files are never changed in place.
    if spec.kind not in KINDS or set(spec.params) != set(DEFAULT_PARAMS[spec.kind]):
        raise IndexFormatError(
            f"the manifest describes {path.name} as {spec.kind} {spec.params}, which funnel does not write; the manifest was edited or damaged: rebuild the index"
        )
    flags = getattr(faiss, "IO_FLAG_MMAP_IFC", 0) if spec.kind in ("flat", "hnsw") else 0
    try:
        index = faiss.read_index_binary(str(path)) if spec.kind == "binary" else faiss.read_index(str(path), flags)
    except RuntimeError as exc:
        raise IndexFormatError(f"{path} is not a readable FAISS index ({str(exc).splitlines()[0]}); rebuild the index") from None
    if not isinstance(index, getattr(faiss, FAISS_CLASSES[spec.kind])) or index.d != spec.dim:
        raise IndexFormatError(
            f"{path} is a {index.d}-dim {type(index).__name__}, but the manifest says a {spec.dim}-dim {spec.kind} shortlist; "
            "the manifest was edited or damaged: rebuild the index"
        )
    configure(index, spec)
    return to_gpu(index, spec) if (use_gpu if use_gpu is not None else gpu_available()) else index


def gpu_available() -> bool:
    import faiss

    return hasattr(faiss, "get_num_gpus") and faiss.get_num_gpus() > 0


def to_gpu(index: Any, spec: ShortlistSpec) -> Any:
    """Flat and IVF indexes have GPU versions; HNSW and binary stay on the CPU."""
    import faiss

    if spec.kind not in ("flat", "ivf") or not gpu_available():
        return index
    return faiss.index_cpu_to_all_gpus(index)
