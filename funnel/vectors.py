"""Vector math shared by indexing and search: truncation to a prefix and re-normalization."""

from __future__ import annotations

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
    norms = np.linalg.norm(prefix, axis=-1, keepdims=True)
    return np.divide(prefix, norms, out=np.zeros_like(prefix), where=norms > 0)


def normalize(vectors: np.ndarray) -> np.ndarray:
    """L2-normalize rows (float32); the full-dimension case of :func:`truncate`."""
    return truncate(vectors, vectors.shape[-1])
