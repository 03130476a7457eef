"""The common two-stage plan (shortlist at ``d`` dims, rescore at full dims) as one FAISS call.

FAISS's ``IndexRefine`` does what the funnel's rescoring stage does, in C++: its base index (the
segment's own shortlist index) proposes ``n`` candidates, and its refine index scores them with
the full vectors and keeps the best ``k``. Measured in ``benchmarks/results/recall-latency``, this
is faster per query than the Python stages for every two-stage plan tried, so :func:`run_funnel
<funnel.search.run.run_funnel>` uses it whenever it applies: a plan of exactly two stages at full depth
whose second scores at full dims and whose first adds no lexical candidates, one segment with nothing deleted, and a float shortlist on the
CPU. Every other plan runs the Python stages, which give the same ranking.

A compiled plan takes the query as the model gives it, not in the index's stored basis: the
rotation into the stored basis and the cut to the shortlist's dims are one linear map in front of
the shortlist (an ``IndexPreTransform``), folded into the shortlist's own linear maps where it has
some (OPQ's rotation), so a query pays one matrix product inside FAISS, not one in numpy and
another in FAISS. The refine index holds a copy of the stored vectors turned back into the
model's basis and divided by their norms (float16 rows stay float16: it takes as many bytes as
the vectors file), made by the first search that needs it, so its inner products are the cosines
the Python stages compute, to float16 precision (about 1e-4: the copy is rounded in the model's
basis, the stored rows in the index's). The two paths rank alike except where two documents tie
within that.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

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
    parts: tuple[Any, ...]  # FAISS keeps raw pointers to these: they must outlive ``refine``
    pointer: Callable[[np.ndarray], Any] = field(repr=False)
    """FAISS's ``swig_ptr`` (faiss is imported only once a plan compiles: not by the CLI's help)."""
    params: dict[tuple[int, int], Any] = field(default_factory=dict)

    @classmethod
    def build(cls, index: Index, dim: int) -> CompiledTwoStage:
        import faiss

        segment = index.segments[0]
        spec, shortlist_index = segment.shortlists[dim]
        base, base_parts = _base_taking_model_queries(shortlist_index, index.rotation(), index.dim, dim)
        vectors: Any
        if segment.vectors.dtype == np.float16:
            vectors = faiss.IndexScalarQuantizer(index.dim, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT)
        else:
            vectors = faiss.IndexFlatIP(index.dim)
        for rows in iter_chunks(segment.vectors):
            norms = np.sqrt(np.einsum("nd,nd->n", rows, rows))[:, None]
            unit = np.divide(rows, norms, out=np.zeros_like(rows), where=norms > 0)  # a zero row scores 0, as in rescore
            vectors.add(np.ascontiguousarray(index.to_model_basis(unit)))
        refine = faiss.IndexRefine(base, vectors)
        refine.ntotal, refine.is_trained = vectors.ntotal, True
        return cls(dim, spec, refine, (*base_parts, base, vectors), faiss.swig_ptr)

    def search(self, queries: np.ndarray, n: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The best ``k`` of ``n`` shortlisted, scored as cosines with the full stored rows.
        ``queries``: (q, full) float32, C-contiguous, in the model's basis. Returns (scores
        (q, k), positions (q, k)), padded with -inf / -1."""
        count, k = len(queries), min(k, n)
        scores = np.empty((count, k), dtype=np.float32)
        positions = np.empty((count, k), dtype=np.int64)
        pointer = self.pointer
        # search_c is FAISS's binding without the Python wrapper's argument checks, which the
        # caller has made: about 2 µs a call, against a 50 µs search of 10k documents.
        self.refine.search_c(count, pointer(queries), k, pointer(scores), pointer(positions), self._params(n, k))
        if count > 1 or positions[0, -1] < 0:  # FAISS pads a row's tail: a found last entry means a full row
            scores[positions < 0] = -np.inf
        return scores, positions

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


def _base_taking_model_queries(shortlist: Any, rotation: np.ndarray | None, full: int, dim: int) -> tuple[Any, tuple[Any, ...]]:
    """The shortlist behind one linear map that takes a model query (full dims) to what the
    shortlist scores: into the stored basis (``rotation``, stored = model · R), cut to ``dim``,
    then through the shortlist's own leading linear maps (OPQ's rotation, a model-basis kind's
    way back), composed into one matrix, and none at all where that is the identity. Returns the
    base index and the objects it points at (kept alive with it)."""
    import faiss

    # stored prefix = (R^T q)[:dim]: a (dim, full) matrix; the identity's rows without a rotation
    matrix = (np.eye(full, dtype=np.float32)[:dim] if rotation is None else rotation[:, :dim].T).astype(np.float64)
    bias = np.zeros(dim)
    inner = shortlist
    if type(shortlist).__name__ == "IndexPreTransform":
        steps: list[Any] = [faiss.downcast_VectorTransform(shortlist.chain.at(i)) for i in range(shortlist.chain.size())]
        if all(isinstance(step, faiss.LinearTransform) for step in steps):
            for step in steps:  # y = A x + b after y = M q + c: (A M) q + (A c + b)
                a = faiss.vector_to_array(step.A).reshape(step.d_out, step.d_in).astype(np.float64)
                b = faiss.vector_to_array(step.b).astype(np.float64) if step.have_bias else np.zeros(step.d_out)
                matrix, bias = a @ matrix, a @ bias + b
            inner = shortlist.index
    if matrix.shape == (full, full) and not bias.any() and np.allclose(matrix, np.eye(full), atol=1e-4):
        # The query is what the codes take: the model's order kept, or a model-basis kind undoing
        # the rotation (R · R^T; rounding aside, and the shortlist only proposes candidates).
        return inner, (inner, shortlist)
    transform = faiss.LinearTransform(full, matrix.shape[0], bool(bias.any()))
    faiss.copy_array_to_vector(np.ascontiguousarray(matrix, dtype=np.float32).ravel(), transform.A)
    faiss.copy_array_to_vector(bias.astype(np.float32), transform.b)
    transform.is_trained = True
    base = faiss.IndexPreTransform(transform, inner)
    base.ntotal, base.is_trained = inner.ntotal, True
    return base, (transform, inner, shortlist)
