"""GPU use is optional: on a CPU-only machine it is a tested no-op; with a GPU, results match the CPU."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import assert_same_ranking

from funnel.indexes import shortlist
from funnel.indexes.index import Index
from funnel.search.plan import Plan
from funnel.search.run import run_funnel


def test_gpu_request_is_a_no_op_without_a_gpu(reference_build, query_vectors):
    if shortlist.gpu_available():
        pytest.skip("a GPU is present: covered by the comparison test")
    on_cpu = Index.load(reference_build, use_gpu=False)
    asked = Index.load(reference_build, use_gpu=True)
    for segment in asked.segments:
        for spec, index in segment.shortlists.values():
            assert shortlist.to_gpu(index, spec) is index
            assert type(index).__name__.startswith(("Index", "IndexBinary")) and "Gpu" not in type(index).__name__
    plan = Plan.two_stage(64, 50, 10)
    a, b = run_funnel(on_cpu, query_vectors, plan, 10), run_funnel(asked, query_vectors, plan, 10)
    np.testing.assert_array_equal(a.positions, b.positions)


@pytest.mark.skipif(not shortlist.gpu_available(), reason="no GPU visible to faiss")
def test_gpu_shortlists_match_the_cpu(reference_build, query_vectors):
    on_cpu = Index.load(reference_build, use_gpu=False)
    on_gpu = Index.load(reference_build, use_gpu=True)
    assert any("Gpu" in type(ix).__name__ for s in on_gpu.segments for _, ix in s.shortlists.values())
    for plan in (Plan.two_stage(64, 50, 10), Plan.two_stage(64, 150, 10)):
        a, b = run_funnel(on_cpu, query_vectors, plan, 10), run_funnel(on_gpu, query_vectors, plan, 10)
        assert_same_ranking(a.scores, a.positions, b.scores, b.positions, tolerance=1e-3)


def test_index_opens_memory_mapped(reference_build):
    import pyarrow as pa

    allocated = pa.total_allocated_bytes()
    index = Index.load(reference_build)
    segment = index.segments[0]
    assert isinstance(segment.vectors, np.memmap)
    documents_bytes = (reference_build / "seg-000000" / "documents.arrow").stat().st_size
    assert pa.total_allocated_bytes() - allocated < documents_bytes / 10, "documents must be mapped, not read"
    assert len(index.documents([0, 149])) == 2
