"""An orthogonal rotation of the embedding space, fitted on the indexed corpus, that moves the
information into the first dimensions so that short prefixes shortlist better.

Rotating documents and queries alike changes no full-dimension score: ``(D R)(Q R)ᵀ = D Qᵀ``
for ``RᵀR = I``. With ``R`` the eigenvectors of the corpus's second moment ``DᵀD`` (largest
eigenvalue first: PCA without centering), the default MiniLM's 64-dim prefix keeps 91.8% of full
NDCG@10 on Cranfield instead of 74.1%. The index stores vectors and shortlists in the rotated
basis and rotates each query once before the first stage (:meth:`Index.stored_queries`).

``auto`` fits the rotation and then keeps whichever order, the model's own or the rotated one,
whose prefixes agree better with full-dimension search on calibration queries made from the
corpus (as the tuner makes them): a model trained to nest may already be better in its own order.

Stored as a plain little-endian float32 ``dim × dim`` file (``rotation.f32``; ``rotation-lL.f32``
for the vectors of layer L), listed with its checksum in the manifest.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from funnel.errors import IndexFormatError, InputError
from funnel.indexes.manifest import FileEntry, check_file
from funnel.vectors import truncate

METHODS = ("auto", "pca", "none")
AGREEMENT_DIMS = (32, 64, 128)
AGREEMENT_K = 10
AGREEMENT_DEPTH = 100  # shortlist depth whose top-k agreement is measured (10× k)
CALIBRATION_QUERIES = 200
# auto keeps the model's order unless the rotation agrees better by more than this (mean over
# dims and queries) and by more than twice the paired standard error: a rotation that only
# matches the model's order, within sampling noise, is not worth a matrix product per query.
# (On vectors whose variance already decays along the dims, the two differ by < 0.01.)
AUTO_MARGIN = 0.02
ORTHOGONAL_TOLERANCE = 1e-3


def check_method(method: str) -> str:
    if method not in METHODS:
        raise InputError(f"unknown rotation {method!r}: choose one of {', '.join(METHODS)}")
    return method


def rotation_file(layer: int | None = None) -> str:
    """File name of the rotation for the full model's vectors (``layer`` None) or a layer's."""
    return "rotation.f32" if layer is None else f"rotation-l{layer}.f32"


def key_name(layer: int | None) -> str:
    """How a depth is named in the manifest's rotation decision: "full" or the layer number."""
    return "full" if layer is None else str(layer)


def second_moment(chunks: Iterable[np.ndarray]) -> np.ndarray:
    """``DᵀD`` in float64 over vectors delivered in chunks (each (n, dim)): one streaming pass."""
    moment: np.ndarray | None = None
    for chunk in chunks:
        rows = np.asarray(chunk, dtype=np.float64)
        moment = rows.T @ rows if moment is None else moment + rows.T @ rows
    if moment is None:
        raise InputError("no vectors to fit a rotation on")
    return moment


def pca_rotation(moment: np.ndarray) -> np.ndarray:
    """Orthogonal ``R`` (dim, dim) float32 whose columns are the eigenvectors of ``moment``,
    largest eigenvalue first; each column's largest component is positive (a fixed sign, so the
    same vectors always give the same bytes)."""
    values, vectors = np.linalg.eigh(moment)
    order = np.argsort(-values, kind="stable")
    vectors = vectors[:, order]
    signs = np.sign(vectors[np.argmax(np.abs(vectors), axis=0), np.arange(vectors.shape[1])])
    vectors = vectors * np.where(signs == 0, 1.0, signs)
    return np.ascontiguousarray(vectors, dtype=np.float32)


def explained(moment: np.ndarray, rotation: np.ndarray | None, dims: Sequence[int]) -> dict[str, float]:
    """Share of the second moment's trace in the first ``d`` dims of a basis (None: the model's)."""
    basis = None if rotation is None else rotation.astype(np.float64)
    diagonal = np.diag(moment) if basis is None else np.einsum("ij,ik,kj->j", basis, moment, basis)
    total = float(np.trace(moment)) or 1.0
    return {str(d): round(float(diagonal[:d].sum()) / total, 4) for d in dims}


def rotate(vectors: np.ndarray, rotation: np.ndarray | None) -> np.ndarray:
    """``vectors @ rotation`` as float32 (identity for None)."""
    if rotation is None:
        return np.asarray(vectors, dtype=np.float32)
    return np.asarray(vectors, dtype=np.float32) @ rotation


def write_rotation(path: Path, rotation: np.ndarray) -> None:
    with path.open("wb") as out:
        out.write(np.ascontiguousarray(rotation, dtype="<f4").tobytes())


def read_rotation(path: Path, expected: FileEntry, dim: int) -> np.ndarray:
    """Load a stored rotation after checking every byte against the manifest (it is small) and
    that it is orthogonal (a wrong matrix would silently change every score)."""
    check_file(path, expected, full=True)
    rotation = np.fromfile(path, dtype="<f4")
    if rotation.size != dim * dim:
        raise IndexFormatError(f"{path} holds {rotation.size} values, not a {dim}×{dim} rotation; rebuild the index")
    rotation = rotation.reshape(dim, dim).astype(np.float32)
    check_orthogonal(rotation, path)
    return rotation


def check_orthogonal(rotation: np.ndarray, where: Path | str) -> None:
    error = float(np.abs(rotation.T.astype(np.float64) @ rotation - np.eye(rotation.shape[0])).max())
    if error > ORTHOGONAL_TOLERANCE:
        raise IndexFormatError(f"{where} is not an orthogonal rotation (|RᵀR - I| up to {error:.2g}); rebuild the index")


def agreement_dims(full_dim: int, shortlist_dims: Sequence[int]) -> tuple[int, ...]:
    """Prefix dims the auto decision measures: 32, 64, 128 and the index's shortlist dims, below full."""
    dims = {d for d in (*AGREEMENT_DIMS, *shortlist_dims) if 1 <= d < full_dim}
    return tuple(sorted(dims or {max(1, full_dim // 4), max(1, full_dim // 2)} - {full_dim}))


@dataclass(frozen=True)
class Agreement:
    """For each basis, the share of each calibration query's exact full-dim top-``k`` (its source
    document left out) found in the ``depth``-deep shortlist of each prefix dim."""

    by_basis: dict[str, dict[str, float]]
    k: int
    depth: int
    queries: int
    per_query: dict[str, np.ndarray]
    """Each query's agreement averaged over the dims, by basis (for a paired comparison)."""

    def mean(self, basis: str) -> float:
        return float(self.per_query[basis].mean()) if len(self.per_query[basis]) else 0.0

    def gain(self, basis: str, over: str) -> tuple[float, float]:
        """Mean per-query gain of ``basis`` over ``over`` and its standard error."""
        diff = self.per_query[basis] - self.per_query[over]
        error = float(diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else 0.0
        return float(diff.mean()) if len(diff) else 0.0, error


def prefix_agreement(
    chunks: Callable[[], Iterable[np.ndarray]],
    queries: np.ndarray,
    sources: np.ndarray | None,
    bases: dict[str, np.ndarray | None],
    dims: Sequence[int],
    k: int = AGREEMENT_K,
    depth: int = AGREEMENT_DEPTH,
) -> Agreement:
    """Measure :class:`Agreement` in one streaming pass over the corpus ``chunks`` (model basis,
    (n, dim) each; called once); ``queries`` (q, dim) in the model basis; ``sources`` (q,) each
    query's own document position to leave out (or None). Memory: one chunk's scores per query."""
    queries = np.asarray(queries, dtype=np.float32)
    count_q = len(queries)
    top_dim = max(dims) if dims else 1
    projected = {name: rotate(queries, rotation)[:, :top_dim] for name, rotation in bases.items()}
    prefix_queries = {(name, d): truncate(projected[name], d) for name in bases for d in dims}
    full_best = _Best(count_q, k + 1)
    shortlists = {key: _Best(count_q, depth + 1) for key in prefix_queries}
    offset = 0
    for chunk in chunks():
        rows = np.asarray(chunk, dtype=np.float32)
        positions = np.arange(offset, offset + len(rows))
        full_best.add(queries @ rows.T, positions)
        for name, rotation in bases.items():
            docs = (rows if rotation is None else rows @ rotation[:, :top_dim])[:, :top_dim]
            for d in dims:
                shortlists[(name, d)].add(prefix_queries[(name, d)] @ truncate(docs, d).T, positions)
        offset += len(rows)
    truth = _leave_out(full_best.positions(), sources, k)
    by_basis: dict[str, dict[str, float]] = {name: {} for name in bases}
    per_query = {name: np.zeros(count_q) for name in bases}
    for (name, d), best in shortlists.items():
        found = _leave_out(best.positions(), sources, depth)
        hits = (found[:, :, None] == truth[:, None, :]) & (truth[:, None, :] >= 0)
        valid = (truth >= 0).sum(axis=1)
        recall = hits.any(axis=1).sum(axis=1) / np.maximum(valid, 1)
        by_basis[name][str(d)] = round(float(recall.mean()), 4)
        per_query[name] += recall / max(len(dims), 1)
    return Agreement(by_basis, k, depth, count_q, per_query)


class _Best:
    """Running top-``n`` (by score, ties to the lower position) per query over streamed chunks."""

    def __init__(self, queries: int, n: int) -> None:
        self.n = n
        self.scores = np.full((queries, 0), -np.inf, dtype=np.float32)
        self.rows = np.zeros((queries, 0), dtype=np.int64)

    def add(self, scores: np.ndarray, positions: np.ndarray) -> None:
        scores = np.concatenate([self.scores, scores.astype(np.float32)], axis=1)
        rows = np.concatenate([self.rows, np.broadcast_to(positions, (len(scores), len(positions)))], axis=1)
        if scores.shape[1] > self.n:
            keep = np.argpartition(-scores, self.n - 1, axis=1)[:, : self.n]
            scores, rows = np.take_along_axis(scores, keep, axis=1), np.take_along_axis(rows, keep, axis=1)
        self.scores, self.rows = scores, rows

    def positions(self) -> np.ndarray:
        order = np.lexsort((self.rows, -self.scores), axis=1)
        return np.take_along_axis(self.rows, order, axis=1)


def _leave_out(positions: np.ndarray, sources: np.ndarray | None, width: int) -> np.ndarray:
    if sources is not None:
        keep = positions != sources[:, None]
        order = np.argsort(~keep, axis=1, kind="stable")
        positions = np.where(np.take_along_axis(keep, order, axis=1), np.take_along_axis(positions, order, axis=1), -1)
    out = np.full((len(positions), width), -1, dtype=np.int64)
    cut = positions[:, :width]
    out[:, : cut.shape[1]] = cut
    return out


def decide(requested: str, agreement: Agreement | None, moment: np.ndarray, rotation: np.ndarray, dims: Sequence[int]) -> dict:
    """The decision for one depth, as recorded in the manifest: ``method`` (pca or none) and the
    figures it rests on."""
    record: dict = {
        "requested": requested,
        "fitted_on": "every indexed vector (DᵀD accumulated in float64)",
        "energy_model_order": explained(moment, None, dims),
        "energy_rotated": explained(moment, rotation, dims),
    }
    if agreement is not None:
        model, rotated = agreement.mean("model"), agreement.mean("pca")
        record["agreement"] = {
            "measure": f"share of exact full-dim top-{agreement.k} in each prefix's top-{agreement.depth}",
            "queries": agreement.queries,
            "model_order": agreement.by_basis["model"],
            "rotated": agreement.by_basis["pca"],
            "mean_model_order": round(model, 4),
            "mean_rotated": round(rotated, 4),
        }
    if requested == "pca":
        record["method"], record["reason"] = "pca", "asked for (--rotation pca)"
    elif agreement is None:
        record["method"], record["reason"] = "none", "too few documents to measure agreement: model order kept"
    else:
        gain, error = agreement.gain("pca", "model")
        record["agreement"]["gain"], record["agreement"]["gain_standard_error"] = round(gain, 4), round(error, 4)
        better = gain > AUTO_MARGIN and gain > 2 * error
        record["method"] = "pca" if better else "none"
        record["reason"] = (
            f"rotated prefixes agree better ({rotated:.4f} vs {model:.4f} in the model's order)"
            if better
            else f"the model's order nests about as well ({model:.4f} vs {rotated:.4f} rotated; a gain under {AUTO_MARGIN} "
            f"or under twice its standard error keeps it)"
        )
    return record
