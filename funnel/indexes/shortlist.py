"""FAISS indexes over truncated, re-normalized vectors: the funnel's first, cheap stage.

Kinds, all FAISS index types over the first ``dim`` dims:

- ``flat`` (exact inner product), ``hnsw`` (graph), ``ivf`` (inverted lists) over float32;
- ``sq8`` (8-bit scalar quantization: a quarter of the bytes, scanned exhaustively), ``hnsw-sq8``
  (the graph over 8-bit codes), ``pq-fastscan`` (product quantization, 4-bit codes scanned with
  SIMD lookups: dim/4 bytes a vector) and ``ivf-pq-fastscan`` (the same codes in inverted lists);
- ``opq-fastscan``: the same 4-bit codes after FAISS's OPQ rotation, learned so that every
  sub-quantizer gets a fair share of the variance. funnel's own rotation puts most of it in the
  first dims, which starves the later sub-quantizers of a full-dim PQ (on 100k MiniLM vectors
  2,000 candidates were needed where the model's order needed 160); OPQ balances them again;
- ``model-pq-fastscan``: the same 4-bit codes of the whole vector in the model's own basis (the
  index's rotation undone in front of the codes), whose dims share the variance fairly as they
  come: FAISS's ``IndexRefineFlat(PQ…x4fs)`` configuration. A compiled plan takes the model's
  query, so this kind's codes need no matrix product at all (OPQ's need one); full dims only;
- ``binary`` (the signs of the first ``dim`` dims, Hamming distance).

Quantized kinds compound the two savings: a short prefix and few bits per dim. Their scores are
approximate; the funnel's later stages rescore exactly with the stored full vectors. All return
similarities where larger is better; for ``binary`` that is ``dim - 2 * hamming``, the inner
product of the ±1 sign vectors.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from funnel.errors import IndexFormatError, InputError
from funnel.indexes.manifest import ShortlistSpec
from funnel.vectors import truncate


@dataclass(frozen=True)
class Kind:
    """What funnel knows of one shortlist kind: the FAISS index factory string that builds it
    (``{nlist}``, ``{pq_m}`` and ``{block}`` filled in at build time), the class a loaded file must be, its
    search-time parameters and its storage, for building, checking a file and estimating costs."""

    factory: str
    faiss_class: str
    params: dict[str, int]
    binary: bool = False  # codes are sign bits, searched by Hamming distance (FAISS's binary indexes)
    mmap: bool = False  # flat storage that FAISS can memory-map instead of reading
    gpu: bool = False  # FAISS has a GPU version
    graph: bool = False  # searched by walking an HNSW graph (efSearch)
    inverted: bool = False  # searched by probing inverted lists (nprobe)
    bits_per_dim: float = 32.0  # code size; product quantization's depends on pq_m (see code_bytes)
    trained: bool = False  # needs a training sample before vectors are added
    model_basis: bool = False  # codes the whole vector in the model's basis: the stored rotation undone first


_HNSW = {"m": 32, "ef_construction": 80, "ef_search": 128}
_IVF = {"nlist": 0, "nprobe": 16}  # nlist 0: about 4·sqrt(n), chosen at build time
KIND_INFO: dict[str, Kind] = {
    "flat": Kind("Flat", "IndexFlat", {}, mmap=True, gpu=True),
    "hnsw": Kind("HNSW{m}", "IndexHNSWFlat", dict(_HNSW), graph=True, mmap=True),
    "ivf": Kind("IVF{nlist},Flat", "IndexIVFFlat", dict(_IVF), inverted=True, trained=True, gpu=True),
    "binary": Kind("BFlat", "IndexBinaryFlat", {}, binary=True, bits_per_dim=1.0),
    "sq8": Kind("SQ8", "IndexScalarQuantizer", {}, bits_per_dim=8.0, trained=True),
    "hnsw-sq8": Kind("HNSW{m}_SQ8", "IndexHNSWSQ", dict(_HNSW), graph=True, bits_per_dim=8.0, trained=True),
    # pq_m 0: dim/2 sub-quantizers of 2 dims, 4 bits each (16 centroids): 2 bits a dim.
    "pq-fastscan": Kind("PQ{pq_m}x4fs_{block}", "IndexPQFastScan", {"pq_m": 0}, bits_per_dim=2.0, trained=True),
    "ivf-pq-fastscan": Kind(
        "IVF{nlist},PQ{pq_m}x4fs", "IndexIVFPQFastScan", {**_IVF, "pq_m": 0}, inverted=True, bits_per_dim=2.0, trained=True
    ),
    "opq-fastscan": Kind("OPQ{pq_m},PQ{pq_m}x4fs_{block}", "IndexPreTransform", {"pq_m": 0}, bits_per_dim=2.0, trained=True),
    "model-pq-fastscan": Kind("PQ{pq_m}x4fs_{block}", "IndexPreTransform", {"pq_m": 0}, bits_per_dim=2.0, trained=True, model_basis=True),
}
KINDS = tuple(KIND_INFO)
DEFAULT_PARAMS: dict[str, dict[str, int]] = {kind: info.params for kind, info in KIND_INFO.items()}
# Vectors per block of an exhaustive fast-scan index (FAISS's bbs, 32 by default). Scanning 100k
# MiniLM codes of 96 parts for 160 candidates, one query per call: 208 µs at 32, 189 at 64, 181 at
# 128; 64 queries at once: 210, 165, 179 µs a query. Same results at every size (the codes are the
# same; only their interleaving changes). Inverted lists keep FAISS's default: most are short.
FAST_SCAN_BLOCK = 128
TRAINING_ROWS = 65_536  # vectors sampled (evenly over the corpus) to train quantizers and IVF centroids


def code_bytes(spec: ShortlistSpec) -> float:
    """Bytes one vector's code takes in the shortlist index (graph links and lists not counted)."""
    info = KIND_INFO[spec.kind]
    if "pq_m" in info.params:
        return pq_subquantizers(spec) * 4 / 8
    return spec.dim * info.bits_per_dim / 8


def score_flops(spec: ShortlistSpec) -> float:
    """Operations to score one stored code against a query, in float multiply-add terms: 2·dim
    for float and 8-bit codes (decoding rides along in SIMD), a 64-bit popcount per 64 dims for
    binary codes, and for 4-bit PQ codes a lookup per sub-quantizer, done 32 codes at a time in
    SIMD registers (FAISS's fast-scan), which makes it far cheaper than its dims suggest."""
    if KIND_INFO[spec.kind].binary:
        return 2 * spec.dim / 64
    if "pq_m" in KIND_INFO[spec.kind].params:
        return pq_subquantizers(spec) / 4
    return 2.0 * spec.dim


def pq_subquantizers(spec: ShortlistSpec) -> int:
    return spec.params.get("pq_m") or max(1, spec.dim // 2)


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
    spec = ShortlistSpec(dim=dim, kind=kind, params={**DEFAULT_PARAMS[kind], **params})
    if "pq_m" in spec.params and dim % pq_subquantizers(spec):
        raise InputError(
            f"a {kind} shortlist splits its {dim} dims into pq_m equal parts: pq_m={spec.params['pq_m']} does not divide {dim}"
        )
    return spec


def check_fits(spec: ShortlistSpec, full_dim: int) -> None:
    """InputError unless ``spec`` can be built over vectors of ``full_dim`` dims."""
    if not 1 <= spec.dim <= full_dim:
        raise InputError(f"shortlist dim {spec.dim} does not fit the {full_dim} dims of the vectors: choose 1..{full_dim}")
    if KIND_INFO[spec.kind].model_basis and spec.dim != full_dim:
        raise InputError(f"a {spec.kind} shortlist codes whole vectors in the model's basis: build it at {full_dim} dims, not {spec.dim}")


def _sign_bits(vectors: np.ndarray) -> np.ndarray:
    return np.packbits(vectors > 0, axis=-1)


def build(spec: ShortlistSpec, chunks: Callable[[], Iterable[np.ndarray]], count: int, rotation: np.ndarray | None = None) -> Any:
    """Build a FAISS index for ``spec`` from full vectors delivered in chunks (each (n, full_dim)).

    ``chunks`` is called again when the index must be trained first (IVF, quantizers), so vectors
    can stay on disk and stream through twice instead of being held in memory. ``rotation``: the
    one the vectors are stored in (stored = model · R), which a model-basis kind undoes.
    """
    index = empty_index(spec, count, rotation)
    info = KIND_INFO[spec.kind]
    if info.trained:
        index.train(_training_sample(spec.dim, chunks, count))
    for chunk in chunks():
        index.add(_sign_bits(np.asarray(chunk[:, : spec.dim])) if info.binary else np.ascontiguousarray(truncate(chunk, spec.dim)))
    configure(index, spec)
    return index


def factory_string(spec: ShortlistSpec, count: int) -> str:
    """The FAISS index factory string that builds ``spec`` for ``count`` vectors, e.g. ``HNSW32``."""
    nlist = spec.params.get("nlist") or max(1, min(int(4 * np.sqrt(count)), count // 39 or 1))
    return KIND_INFO[spec.kind].factory.format(**{**spec.params, "nlist": nlist, "pq_m": pq_subquantizers(spec), "block": FAST_SCAN_BLOCK})


def empty_index(spec: ShortlistSpec, count: int, rotation: np.ndarray | None = None) -> Any:
    """The untrained, empty FAISS index for ``spec``, made by FAISS's own index factory
    (``rotation``: the stored vectors', for a model-basis kind)."""
    import faiss

    info, description = KIND_INFO[spec.kind], factory_string(spec, count)
    if info.binary:
        return faiss.index_binary_factory(spec.dim, description)
    index = faiss.index_factory(spec.dim, description, faiss.METRIC_INNER_PRODUCT)
    if info.model_basis:
        return _behind_inverse_rotation(index, rotation, spec.dim)
    if info.graph:
        index.hnsw.efConstruction = spec.params["ef_construction"]  # type: ignore[attr-defined]  # the factory gives the HNSW class itself
    if info.inverted:
        faiss.extract_index_ivf(index).cp.min_points_per_centroid = 1  # small corpora: train on what there is, quietly
    if spec.kind == "opq-fastscan":
        _train_opq_on_four_bits(index, spec)
    return index


OPQ_ITERATIONS = 10


def _behind_inverse_rotation(codes: Any, rotation: np.ndarray | None, dim: int) -> Any:
    """``codes`` behind the linear map from the stored basis back to the model's (model = R ·
    stored for column vectors; the identity where the vectors keep the model's order)."""
    import faiss

    if rotation is not None and rotation.shape != (dim, dim):
        raise InputError(f"a model-basis shortlist codes whole vectors: build it at {rotation.shape[0]} dims, not {dim}")
    inverse = faiss.LinearTransform(dim, dim, False)
    faiss.copy_array_to_vector(np.ascontiguousarray(np.eye(dim) if rotation is None else rotation, dtype=np.float32).ravel(), inverse.A)
    faiss.copy_array_to_vector(np.zeros(dim, dtype=np.float32), inverse.b)
    inverse.is_orthonormal, inverse.is_trained = True, True
    index: Any = faiss.IndexPreTransform(inverse, codes)
    index.referenced_objects = [inverse, codes]  # FAISS keeps raw pointers to both until the index is written
    return index


def _train_opq_on_four_bits(index: Any, spec: ShortlistSpec) -> None:
    """OPQ alternates rotating and training a PQ; by default that PQ has 8-bit codes (256
    centroids per part), which costs minutes at 384 dims and balances for codes funnel does not
    store. Training it with the 4-bit codes the index keeps is what the rotation is for, and fast."""
    import faiss

    opq: Any = faiss.downcast_VectorTransform(index.chain.at(0))
    training = faiss.ProductQuantizer(spec.dim, pq_subquantizers(spec), 4)
    opq.pq, opq.niter, opq.verbose = training, OPQ_ITERATIONS, False
    index.referenced_objects = [training]  # FAISS keeps a raw pointer: it must outlive training


def build_file(
    spec: ShortlistSpec, chunks: Callable[[], Iterable[np.ndarray]], count: int, path: Path, rotation: np.ndarray | None = None
) -> None:
    """Build the index for ``spec`` (over vectors stored in ``rotation``) and write it at ``path``.
    A flat index is streamed straight to the file in FAISS's own format, so building it needs no
    memory beyond one chunk."""
    if spec.kind != "flat":
        write(build(spec, chunks, count, rotation), spec, path)
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


def _training_sample(dim: int, chunks: Callable[[], Iterable[np.ndarray]], count: int) -> np.ndarray:
    """About :data:`TRAINING_ROWS` vectors taken evenly over the whole stream (every step-th row),
    so a corpus sorted by topic still trains centroids and ranges on all of it."""
    step = max(1, count // TRAINING_ROWS)
    parts, seen = [], 0
    for chunk in chunks():
        first = (-seen) % step
        parts.append(truncate(np.asarray(chunk[first::step]), dim))
        seen += len(chunk)
    return np.ascontiguousarray(np.concatenate(parts)) if parts else np.zeros((0, dim), np.float32)


def configure(index: Any, spec: ShortlistSpec, **overrides: int) -> None:
    """Apply search-time parameters (efSearch, nprobe)."""
    params = {**spec.params, **overrides}
    if KIND_INFO[spec.kind].graph:
        index.hnsw.efSearch = params["ef_search"]
    elif KIND_INFO[spec.kind].inverted:
        index.nprobe = params["nprobe"]


def search(index: Any, spec: ShortlistSpec, queries: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-``n`` by shortlist similarity. ``queries``: (q, full_dim) normalized float32.

    Returns (scores (q, n) float32, local rows (q, n) int64), padded with -inf / -1 when the
    index holds fewer than ``n`` vectors.
    """
    if KIND_INFO[spec.kind].binary:
        distances, rows = index.search(_sign_bits(queries[:, : spec.dim]), n)
        scores = (spec.dim - 2 * distances).astype(np.float32)
    else:
        if KIND_INFO[spec.kind].graph:
            # efSearch below n would silently return fewer good candidates than asked for.
            index.hnsw.efSearch = max(spec.params["ef_search"], n)
        scores, rows = index.search(np.ascontiguousarray(truncate(queries, spec.dim)), n)
    scores = np.where(rows >= 0, scores, -np.inf).astype(np.float32)
    return scores, rows.astype(np.int64)


def write(index: Any, spec: ShortlistSpec, path: Path) -> None:
    import faiss

    if KIND_INFO[spec.kind].binary:
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
    info = KIND_INFO[spec.kind]
    flags = getattr(faiss, "IO_FLAG_MMAP_IFC", 0) if info.mmap else 0
    try:
        index = faiss.read_index_binary(str(path)) if info.binary else faiss.read_index(str(path), flags)
    except RuntimeError as exc:
        raise IndexFormatError(f"{path} is not a readable FAISS index ({str(exc).splitlines()[0]}); rebuild the index") from None
    if not isinstance(index, getattr(faiss, info.faiss_class)) or index.d != spec.dim:
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

    if not KIND_INFO[spec.kind].gpu or not gpu_available():
        return index
    return faiss.index_cpu_to_all_gpus(index)
