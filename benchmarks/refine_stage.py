"""The rescoring stage of a compiled plan: which FAISS refine index scores the shortlist fastest.

    python -m benchmarks.refine_stage [--scale 10k] [--vectors minilm] [--query-set suite|held-out]

One funnel index over the recall-latency suite's real vectors (rotated, funnel's default) with
the ``opq-fastscan`` shortlist over all dims, the suite's fastest kind. Over that same shortlist,
``IndexRefine`` runs with each refine index in the stored (rotated) basis, where Panorama's
bounds have the energy in front: a float32 copy (``IndexFlatIP``), a float16 copy (the copy
compiled plans make) and ``IndexFlatIPPanorama`` at several level counts (``IndexRefinePanorama``);
beside them, the product's own compiled plan (``run_funnel``, query in the model's basis, one
FAISS call). Queries are searched one per call, one thread, the rows interleaved round by round,
at each shortlist size ``n``.

Reported per row and ``n``: p50 µs, the ratio to the float16 copy's p50 in the same round, and
whether the row returns the float32 copy's top-10 (Panorama must: it is exact).

Writes ``benchmarks/results/refine-stage/refine-stage-<scale>-<vectors>-<query set>.json``.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import (
    RESULTS,
    Result,
    faiss_untyped,
    index_from_vectors,
    machine,
    parameters,
    shown,
    time_calls,
    vector_batches,
    write_result,
)
from benchmarks.recall_latency import corpus

BENCHMARK = "refine_stage"
OUT = RESULTS / "refine-stage"
SCALES = {"10k": 10_000, "100k": 100_000}
SIZES = (80, 160, 640, 2000)
LEVELS = (4, 8, 16)
K = 10


def main() -> None:
    parser = argparse.ArgumentParser(description="The refine index of a compiled plan: float32, float16 and Panorama.")
    parser.add_argument("--scale", choices=tuple(SCALES), default="10k", help="documents (default: 10k)")
    parser.add_argument("--vectors", choices=("minilm", "static"), default="minilm", help="which real vectors (default: minilm)")
    corpus.add_query_set_option(parser, default="suite")
    parser.add_argument("--queries", type=int, default=200, help="query vectors timed, one per call (default: 200)")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds over the queries (default: 3)")
    parser.add_argument("--out", type=Path, default=OUT, help=f"result folder (default: {shown(OUT)})")
    args = parser.parse_args()
    faiss = faiss_untyped()

    from funnel.indexes.index import Index
    from funnel.indexes.shortlist import make_spec
    from funnel.search.plan import Plan
    from funnel.search.run import run_funnel

    faiss.omp_set_num_threads(1)
    documents, queries, source = corpus.load(args.vectors, SCALES[args.scale], args.query_set)
    model_queries = np.asarray(queries[: args.queries], dtype=np.float32)
    model_queries /= np.linalg.norm(model_queries, axis=1, keepdims=True)
    dim = documents.shape[1]
    rows: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        spec = make_spec(dim, "opq-fastscan", pq_m=dim // 4)
        path = index_from_vectors(Path(scratch) / "index", vector_batches(documents), dim=dim, shortlists=(spec,), rotation="pca")
        index = Index.load(path)
        shortlist = index.segments[0].shortlists[dim][1]
        stored = np.asarray(index.segments[0].vectors, dtype=np.float32)
        stored_queries = np.ascontiguousarray(index.stored_queries(model_queries).vectors)
        refines: dict[str, Any] = {}
        copy32 = faiss.IndexFlatIP(dim)
        copy32.add(stored)
        copy16 = faiss.IndexScalarQuantizer(dim, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT)
        copy16.add(stored)
        kept: list[Any] = [copy32, copy16]
        for name, copy in (("float32 copy", copy32), ("float16 copy", copy16)):
            refines[name] = faiss.IndexRefine(shortlist, copy)
        for levels in LEVELS:
            panorama = faiss.IndexFlatIPPanorama(dim, levels, 1)  # batch 1: what IndexRefinePanorama scores with
            panorama.add(stored)
            kept.append(panorama)
            refines[f"Panorama, {levels} levels"] = faiss.IndexRefinePanorama(shortlist, panorama)
        for refine in refines.values():
            refine.ntotal, refine.is_trained = index.count, True
        for n in SIZES:
            params = faiss.IndexRefineSearchParameters(k_factor=n / K)
            calls: dict[str, Callable[[np.ndarray], object]] = {name: partial(_refined, refine, params) for name, refine in refines.items()}
            plan = Plan.parse(f"{dim}:{n},full:{K}")
            calls["funnel's compiled plan (model basis, float16)"] = partial(run_funnel, index, plan=plan, k=K)
            inputs = {
                name: [(model_queries if name.startswith("funnel") else stored_queries)[row : row + 1] for row in range(len(model_queries))]
                for name in calls
            }
            timings: dict[str, list[np.ndarray]] = {name: [] for name in calls}
            for _ in range(args.rounds):  # interleaved: load drifts hit every row alike
                for name, call in calls.items():
                    timings[name].append(time_calls(call, inputs[name], warmup=3).wall.ravel())
            truth = refines["float32 copy"].search(stored_queries, K, params=params)[1]
            found = {name: refine.search(stored_queries, K, params=params)[1] for name, refine in refines.items()}
            found["funnel's compiled plan (model basis, float16)"] = run_funnel(index, model_queries, plan, K).positions
            baseline = float(np.median(np.concatenate(timings["float16 copy"])))
            for name, seconds in timings.items():
                p50 = float(np.median(np.concatenate(seconds)))
                row = {
                    "p50_us": round(p50 * 1e6, 1),
                    "float16_copy_over_row": round(baseline / p50, 3),
                    "same_top10_share": round(float(np.mean(found[name] == truth)), 4),
                }
                rows.setdefault(name, {})[f"n={n}"] = row
                print(f"n={n:<5d} {name:48s} {row}", flush=True)
    result = Result.make(
        BENCHMARK,
        parameters(args),
        {"documents": len(documents), "dim": dim, "k": K, "threads": 1, "shortlist": "opq-fastscan", "source": source, "rows": rows},
        machine(("faiss-cpu",)),
    )
    out = args.out / f"refine-stage-{args.scale}-{args.vectors}-{args.query_set}.json"
    print(f"wrote {shown(write_result(out, result))}")


def _refined(refine: Any, params: Any, vector: np.ndarray) -> object:
    return refine.search(vector, K, params=params)


if __name__ == "__main__":
    main()
