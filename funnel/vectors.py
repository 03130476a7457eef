"""Vector math shared by indexing and search: truncation to a prefix and re-normalization."""

from __future__ import annotations

import functools
import sys
from typing import Any

import numpy as np

from funnel.errors import InputError


def truncate(vectors: np.ndarray, dim: int) -> np.ndarray:
    """Keep the first ``dim`` dimensions of each row and L2-normalize the result.

    ``vectors`` has shape (n, full_dim) or (full_dim,); the result has the same leading shape with
    ``dim`` columns, dtype float32. Rows that are all zero in the kept prefix stay zero rather
    than becoming NaN, so a degenerate document scores 0 instead of poisoning a ranking.
    """
    full_dim = vectors.shape[-1]
    if not 1 <= dim <= full_dim:
        raise InputError(f"cannot truncate {full_dim}-dim vectors to {dim} dims: choose 1..{full_dim}")
    prefix = np.asarray(vectors[..., :dim], dtype=np.float32)
    # einsum rather than np.linalg.norm: the same sums, without its per-call overhead, which
    # counts on the single-query search path.
    norms = np.sqrt(np.einsum("...d,...d->...", prefix, prefix))[..., None]
    return np.divide(prefix, norms, out=np.zeros_like(prefix), where=norms > 0)


def normalize(vectors: np.ndarray) -> np.ndarray:
    """L2-normalize rows (float32); the full-dimension case of :func:`truncate`."""
    return truncate(vectors, vectors.shape[-1])


WIDEN_PIECE = 32_768
"""Values per torch conversion in :func:`widen`: torch's parallel grain, below which it stays on one thread."""


def widen(rows: np.ndarray) -> np.ndarray:
    """``rows`` as float32. Stored float16 rows are widened by torch where a model has loaded it
    (its conversion is vectorized: ~7 µs for 100 × 384 values, numpy's ~60 µs, more than the rest
    of a rescoring stage), else by FAISS's fp16 scalar quantizer (~45 µs): a search on the ONNX
    engine never imports torch (a second, cold) to widen. The values are the same every way.
    Pieces of :data:`WIDEN_PIECE` values never wake torch's thread pool: on a busy machine such a
    wake-up costs milliseconds."""
    if rows.dtype != np.float16:
        return np.asarray(rows, dtype=np.float32)
    source = np.ascontiguousarray(rows)
    torch = sys.modules.get("torch")
    if torch is None:
        return _fp16_decoder(source.shape[-1]).decode(source.reshape(-1, source.shape[-1]).view(np.uint8)).reshape(rows.shape)
    flat = source.reshape(-1)
    out = np.empty(flat.shape, dtype=np.float32)
    for start in range(0, flat.size, WIDEN_PIECE):
        piece = flat[start : start + WIDEN_PIECE]
        out[start : start + piece.size] = torch.from_numpy(piece).float().numpy()
    return out.reshape(rows.shape)


@functools.lru_cache(maxsize=8)
def _fp16_decoder(dim: int) -> Any:
    import faiss

    return faiss.ScalarQuantizer(dim, faiss.ScalarQuantizer.QT_fp16)
