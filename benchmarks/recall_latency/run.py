"""Recall-versus-latency benchmark at one scale: every method over the same vectors and queries.

    python -m benchmarks.recall_latency.run --scale 100k --vectors minilm
    python -m benchmarks.recall_latency.run --scale 1m --vectors surrogate

Writes ``OUT/<vectors>-<scale>.json``; ``report.py`` turns those files into plots and tables.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from benchmarks import common
from benchmarks.recall_latency import corpus, methods
from benchmarks.recall_latency.measure import batch_timing, batched, recall, single_timing
from funnel.evaluation.timing import Timing

SCALES = {"10k": 10_000, "100k": 100_000, "1m": 1_000_000}
OUT = common.RESULTS / "recall-latency"
LATENCY_NOTE = (
    "search only, from ready query vectors (encoding is the same for every method); batch 1 = one query per call with FAISS on one thread, "
    "batch 64 = 64 per call on the process's threads (see threads); ms per query; wall = perf_counter, cpu = thread_time (batch 1) or process_time (batch 64)"
)


def machine() -> dict:
    """The shared machine record, with the CPU model and RAM (the plots name the CPU)."""
    import psutil

    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    model = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), platform.processor())
    return common.machine(cpu=model, ram_gb=round(psutil.virtual_memory().total / 2**30, 1))


# HNSW over full 384-dim vectors (hnsw-full, and the HNSW-SQ8 base under FAISS's refine), and
# funnel's 64-dim HNSW shortlist: one graph setting at every scale. Measured at 100k on 2 idle
# cores: 18 s for either full-dimension graph, 9 s for funnel's; extrapolated to 1M (×10 documents,
# ×~1.25 for the deeper graph) about 4 and 2 minutes, which fits the 30-minute budget for both 1M
# runs, so no lighter graph is needed there.
FULL_HNSW_BUILD = {"m": 32, "ef_construction": 40}


def builders(
    docs: np.ndarray, workdir: Path, scale: int, use_gpu: bool, with_hnsw_full: bool, texts: list[str], calibration: np.ndarray
) -> tuple[list[tuple[str, callable]], callable]:
    large = scale >= 1_000_000
    nlist = 1024 if large else (64 if scale <= 10_000 else 256)
    pq = docs.shape[1] // 8  # PQ48 for MiniLM's 384 dims, PQ32 for the static model's 256: 8 dims a byte
    hnsw_build = FULL_HNSW_BUILD
    efs = (16, 64, 256, 1024, 2048) if large else (16, 64, 256, 1024)
    out, funnel_base = methods.funnel_methods(docs, workdir, scale, texts, calibration)
    out += [
        ("faiss-refine-ivfpq", lambda: [methods.faiss_refine(docs, workdir, f"IVF{nlist},PQ{pq}", use_gpu)]),
        ("faiss-refine-sq8", lambda: [methods.faiss_refine(docs, workdir, "SQ8", use_gpu)]),
        # PQ fast-scan over the full vectors, 4 dims a part (as many bytes as funnel's 128-dim PQ shortlist of 2-dim parts at 256 dims)
        ("faiss-refine-pqfs", lambda: [methods.faiss_refine(docs, workdir, f"PQ{docs.shape[1] // 4}x4fs", use_gpu)]),
        (
            "faiss-refine-hnsw",
            lambda: [methods.faiss_refine_hnsw(docs, workdir, **hnsw_build, efs=(16, 64, 256, 1024), k_factors=(1, 2, 8))],
        ),
        ("st-ubinary", lambda: [methods.st_quantized(docs, workdir, "ubinary", (1, 4, 16))]),
        # uint8 search runs on a flat float index as big as the exact one: at 1M one setting shows the cost.
        ("st-uint8", lambda: [methods.st_quantized(docs, workdir, "uint8", (4,) if large else (1, 4))]),
    ]
    if not large:  # an exhaustive PQ scan at 1M costs about as much as IVF-PQ's whole sweep; IVF-PQ stands for FAISS there
        out.insert(-2, ("faiss-refine-pq", lambda: [methods.faiss_refine(docs, workdir, f"PQ{pq}", use_gpu)]))
    if with_hnsw_full:
        out.append(("hnsw-full", lambda: [methods.hnsw_full(docs, workdir, **hnsw_build, efs=efs)]))
    return out, funnel_base


def measure_built(
    built: methods.Built,
    queries: np.ndarray,
    latency_queries: np.ndarray,
    truth: np.ndarray,
    min_seconds: float,
    exact_ms: float | None,
    exact_cpu_ms: float | None,
) -> dict:
    rows = []
    for label, params in built.configs:
        found10, seconds = batched(built.search, queries, 10, params)
        found100, _ = batched(built.search, queries, 100, params)
        single = single_timing(built.search, latency_queries, 10, params, min_seconds)
        row = {
            "label": label,
            "params": params,
            "recall@10": recall(found10, truth, 10),
            "recall@100": recall(found100, truth, 100),
            "batch1": asdict(single),
            "batch64": asdict(batch_timing(seconds, 64)) if seconds else None,
        }
        if exact_ms:
            row["speedup_batch1"] = exact_ms / single.median_ms
            row["speedup_batch1_cpu"] = exact_cpu_ms / single.cpu_median_ms
        rows.append(row)
        print(
            f"  {built.family:45s} {label:22s} r@10={row['recall@10']:.4f} r@100={row['recall@100']:.4f} "
            f"b1={single.median_ms:8.3f} ms cpu={single.cpu_median_ms:8.3f} ms"
            + (f" x{row['speedup_batch1_cpu']:.1f} (cpu)" if exact_ms else ""),
            flush=True,
        )
    fields = {k: getattr(built, k) for k in ("family", "method", "build_seconds", "ram_bytes", "mapped_bytes", "disk_bytes", "notes")}
    return {**fields, "configs": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=SCALES, required=True)
    parser.add_argument("--vectors", choices=("minilm", "static", "surrogate", "minilm-pca", "surrogate-pca"), required=True)
    parser.add_argument(
        "--calibration", type=int, default=400, help="query vectors funnel tune chooses its plans on (none of the measured ones)"
    )
    parser.add_argument("--queries", type=int, default=1000, help="queries for recall (and batch-64 timing)")
    parser.add_argument("--latency-queries", type=int, default=100, help="queries timed one at a time")
    parser.add_argument("--min-seconds", type=float, default=1.0, help="repeat single-query rounds at least this long")
    parser.add_argument("--only", nargs="*", help="method names to run (default: all)")
    parser.add_argument("--hnsw-full", choices=("yes", "no"), default="yes", help="HNSW over full vectors (at 1M with a lighter graph)")
    parser.add_argument("--gpu", choices=("auto", "no"), default="auto")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--tag", default="", help="suffix for the JSON name, to run methods of one scale in parallel processes")
    parser.add_argument("--workdir", type=Path, default=None, help="where indexes are built (default: a temp folder)")
    args = parser.parse_args()

    import faiss

    began = time.perf_counter()
    faiss_threads = faiss.omp_get_max_threads()
    scale = SCALES[args.scale]
    use_gpu = args.gpu == "auto" and methods.gpu_count() > 0
    with_hnsw_full = args.hnsw_full == "yes"
    docs, queries, source = corpus.load(args.vectors, scale)
    shuffled = np.random.default_rng(corpus.SEED).permutation(len(queries))
    unit = np.asarray(queries, dtype=np.float32) / np.linalg.norm(np.asarray(queries, dtype=np.float32), axis=1, keepdims=True)
    queries, calibration = unit[shuffled[: args.queries]], unit[shuffled[args.queries : args.queries + args.calibration]]
    texts = corpus.corpus_texts()[:scale]
    query_texts = corpus.query_texts()
    encode = corpus.query_encode_timing(args.vectors, [query_texts[i] for i in shuffled[: args.latency_queries]])
    latency_queries = queries[: args.latency_queries]
    workdir = Path(tempfile.mkdtemp(prefix="funnel-bench-", dir=args.workdir))
    load_before = os.getloadavg()
    print(f"{args.vectors} {scale:,} docs, {len(queries)} queries ({len(latency_queries)} timed singly), gpu={use_gpu}", flush=True)

    results, skipped = [], []
    fetch_ms: float | None = None
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{args.vectors}-{args.scale}{'-gpu' if use_gpu else ''}{'-' + args.tag if args.tag else ''}.json"

    def write(exact_end: Timing | None) -> None:
        report = {
            "scale": scale,
            "vectors": args.vectors,
            "source": source,
            "queries": len(queries),
            "latency_queries": len(latency_queries),
            "k_latency": 10,
            "latency_note": LATENCY_NOTE,
            "gpu": use_gpu,
            "threads": {
                "faiss_omp": faiss_threads,
                **{k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OMP_WAIT_POLICY")},
            },
            "machine": machine(),
            "load_average_start_end": [load_before, os.getloadavg()],
            "command": common.command(),
            "exact_batch1_ms_start_end": [results[0]["configs"][0]["batch1"]["median_ms"], exact_end.median_ms if exact_end else None],
            "exact_batch1_cpu_ms_start_end": [
                results[0]["configs"][0]["batch1"]["cpu_median_ms"],
                exact_end.cpu_median_ms if exact_end else None,
            ],
            "complete": exact_end is not None,
            "seconds_total": time.perf_counter() - began,
            "cpu_seconds_total": time.process_time(),
            "encode_ms": encode,
            "fetch_ms": fetch_ms,
            "methods": results,
            "skipped": skipped,
        }
        path.write_text(json.dumps(report, indent=1))

    try:
        reference = methods.exact(docs, workdir, use_gpu)
        truth, seconds = batched(reference.search, queries, 100, {})
        exact_single = single_timing(reference.search, latency_queries, 10, {}, args.min_seconds)
        exact_ms = exact_single.median_ms
        results.append(
            {
                **{
                    k: getattr(reference, k)
                    for k in ("family", "method", "build_seconds", "ram_bytes", "mapped_bytes", "disk_bytes", "notes")
                },
                "configs": [
                    {
                        "label": "flat",
                        "params": {},
                        "recall@10": 1.0,
                        "recall@100": 1.0,
                        "batch1": asdict(exact_single),
                        "batch64": asdict(batch_timing(seconds, 64)),
                        "speedup_batch1": 1.0,
                        "speedup_batch1_cpu": 1.0,
                    }
                ],
            }
        )
        print(f"  exact: {exact_ms:.2f} ms/query wall, {exact_single.cpu_median_ms:.2f} ms CPU (batch 1)", flush=True)
        every, funnel_base = builders(docs, workdir, scale, use_gpu, with_hnsw_full, texts, calibration)
        for name, build in every:
            if args.only and name not in args.only:
                continue
            started = time.perf_counter()
            print(f"building {name} ...", flush=True)
            for built in build():
                print(f"  built {built.family} in {built.build_seconds:.1f} s", flush=True)
                results.append(
                    measure_built(built, queries, latency_queries, truth, args.min_seconds, exact_ms, exact_single.cpu_median_ms)
                )
            print(f"  {name}: {time.perf_counter() - started:.0f} s", flush=True)
            write(None)
            gc.collect()
        if any(name.startswith("funnel") for name, _ in every if not args.only or name in args.only):
            fetch_ms = methods.fetch_timing(funnel_base()[0], truth[: len(latency_queries), :10])
        if not with_hnsw_full:
            skipped.append({"method": "faiss HNSW full-dim", "why": "left out with --hnsw-full no"})
        exact_again = single_timing(reference.search, latency_queries, 10, {}, args.min_seconds)
        del reference
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    write(exact_again)
    print(f"wrote {path} in {time.perf_counter() - began:.0f} s", flush=True)


if __name__ == "__main__":
    main()
