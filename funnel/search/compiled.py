"""The common two-stage plan (shortlist at ``d`` dims, rescore at full dims) as one FAISS call.

FAISS's ``IndexRefine`` does what the funnel's rescoring stage does, in C++: its base index (the
segment's own shortlist index, behind an ``IndexPreTransform`` that truncates the query to the
shortlist's dims) proposes ``n`` candidates, and its refine index scores them with the full
vectors and keeps the best ``k``. Measured in ``benchmarks/results/recall-latency``, this is
faster per query than the Python stages for every two-stage plan tried, so :func:`run_funnel
<funnel.search.run.run_funnel>` uses it whenever it applies: a plan of exactly two stages at full depth
whose second scores at full dims and whose first adds no lexical candidates, one segment with nothing deleted, and a float shortlist on the
CPU. Every other plan runs the Python stages, which give the same ranking.

The refine index holds a copy of the stored vectors in memory (float16 rows stay float16, so it
takes as many bytes as the vectors file), made by the first search that needs it, with each row's
inverse norm. FAISS ranks by inner products with the stored rows, which are unit vectors only to
float16 precision (about 1e-4); :func:`funnel.search.run.run_funnel` asks it for the best 2k, turns
their inner products into cosines with the inverse norms and keeps the best k, so both paths
return the same cosines.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from funnel.indexes.index import top_n
from funnel.indexes.segment import iter_chunks
from funnel.indexes.shortlist import KIND_INFO

if TYPE_CHECKING:
    from funnel.indexes.index import Index
    from funnel.indexes.manifest import ShortlistSpec
    from funnel.search.plan import Plan


def compilable(index: Index, plan: Plan) -> bool:
    """Whether ``plan`` can run as one FAISS call on ``index`` (see the module's description)."""
    if len(plan) != 2 or len(index.segments) != 1 or plan[0].lexical or plan[-1].fusion:
        return False
    first, last = plan
    segment = index.segments[0]
    if len(segment.deleted) or not index.is_full_depth(first.layer) or not index.is_full_depth(last.layer):
        return False
    if first.encoder != last.encoder:  # one FAISS call scores one query vector
        return False
    if last.resolved_dim(index.dim) != index.dim or first.resolved_dim(index.dim) not in segment.shortlists:
        return False
    spec, built = segment.shortlists[first.resolved_dim(index.dim)]
    return not KIND_INFO[spec.kind].binary and type(built).__name__.startswith("Index")  # GpuIndex* stay on the Python path


@dataclass
class CompiledTwoStage:
    """``IndexRefine`` over one segment's ``dim``-dim shortlist and its full vectors."""

    dim: int
    spec: ShortlistSpec
    refine: Any
    inverse_norms: np.ndarray
    """1 / ‖row‖ of every stored row (0 for a zero row): inner products times these are cosines."""
    parts: tuple[Any, ...]  # FAISS keeps raw pointers to these: they must outlive ``refine``
    params: dict[tuple[int, int], Any] = field(default_factory=dict)

    @classmethod
    def build(cls, index: Index, dim: int) -> CompiledTwoStage:
        import faiss

        segment = index.segments[0]
        spec, shortlist_index = segment.shortlists[dim]
        full = index.dim
        base: Any = shortlist_index
        truncation = None
        if dim < full:  # a full-dim shortlist takes the query as it is: no identity matrix product
            truncation = faiss.LinearTransform(full, dim, False)
            faiss.copy_array_to_vector(np.eye(full, dtype=np.float32)[:dim].ravel(), truncation.A)
            faiss.copy_array_to_vector(np.zeros(dim, dtype=np.float32), truncation.b)
            truncation.is_trained = True
            base = faiss.IndexPreTransform(truncation, shortlist_index)
            base.ntotal = shortlist_index.ntotal
        vectors: Any
        if segment.vectors.dtype == np.float16:
            vectors = faiss.IndexScalarQuantizer(full, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT)
        else:
            vectors = faiss.IndexFlatIP(full)
        inverse_norms = np.zeros(segment.count, dtype=np.float32)
        start = 0
        for rows in iter_chunks(segment.vectors):
            vectors.add(np.ascontiguousarray(rows))
            norms = np.sqrt(np.einsum("nd,nd->n", rows, rows))
            inverse_norms[start : start + len(rows)] = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
            start += len(rows)
        refine = faiss.IndexRefine(base, vectors)
        refine.ntotal, refine.is_trained = vectors.ntotal, True
        return cls(dim, spec, refine, inverse_norms, (truncation, shortlist_index, base, vectors))

    def search(self, queries: np.ndarray, n: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The best ``k`` of ``n`` shortlisted, scored as cosines with the full stored rows and
        ranked as :func:`~funnel.indexes.index.top_n` ranks (ties by lower position).
        ``queries``: (q, full) float32 in the stored basis. Returns (scores (q, k), positions
        (q, k)), padded with -inf / -1.

        FAISS ranks by the inner product with the stored rows, whose norms are 1 only to about
        1e-4 (float16): it is asked for the best 2k, whose inner products become cosines and are
        ranked again, so the top k and their scores are the Python stages'."""
        asked = min(max(2 * k, k + 10), n)
        dots, rows = self.refine.search(queries, asked, params=self._params(n, asked))
        if len(rows) == 1 and rows.min() >= 0:  # the common case, without the padding's masks
            row, cosines = rows[0], dots[0] * self.inverse_norms[rows[0]]
            best = np.lexsort((row, -cosines))[:k]
            return cosines[best][None], row[best][None]
        valid = rows >= 0
        scores = np.where(valid, dots * self.inverse_norms[np.where(valid, rows, 0)], -np.inf).astype(np.float32)
        return top_n(scores, rows, k)

    def _params(self, n: int, k: int) -> Any:
        """Search parameters for ``n`` candidates and ``k`` results, made once (SWIG objects cost
        more to make than a small search takes)."""
        found = self.params.get((n, k))
        if found is None:  # two threads may both make it: either one serves
            import faiss as faiss_module

            faiss: Any = faiss_module  # the stubs lack the search-parameter classes and their fields
            inner = None
            if KIND_INFO[self.spec.kind].graph:
                # As the Python path does: efSearch below n would return fewer good candidates.
                inner = faiss.SearchParametersHNSW(efSearch=max(self.spec.params["ef_search"], n))
            # The refine parameters point at the inner ones: both are kept together.
            found = (faiss.IndexRefineSearchParameters(k_factor=max(n, k) / k, base_index_params=inner), inner)
            self.params[(n, k)] = found
        return found[0]
