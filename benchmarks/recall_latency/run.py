"""Recall-versus-latency benchmark at one scale: every method over the same vectors and queries.

    python -m benchmarks.recall_latency.run --scale 100k --vectors minilm
    python -m benchmarks.recall_latency.run --scale 1m --vectors static

Writes ``OUT/<vectors>-<scale>.json`` (a :class:`benchmarks.common.Result`); ``report.py`` turns
those files into plots and tables.
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import common
from benchmarks.recall_latency import corpus, methods
from benchmarks.recall_latency.measure import batch_timing, batched, recall, single_timing
from funnel.evaluation.timing import Timing

BENCHMARK = "recall_latency.run"
SCALES = {"10k": 10_000, "100k": 100_000, "1m": 1_000_000}
OUT = common.RESULTS / "recall-latency"
LATENCY_NOTE = (
    "search only, from ready query vectors (encoding is the same for every method); batch 1 = one query per call with FAISS on one thread, "
    "batch 64 = 64 per call on the process's threads (see threads); ms per query; wall = perf_counter, cpu = thread_time (batch 1) or process_time (batch 64)"
)
BUILT_FIELDS = ("family", "method", "build_seconds", "ram_bytes", "mapped_bytes", "disk_bytes", "notes")


# More calibration queries tighten the tuner's lower bound on recall, so its plans keep fewer
# candidates; the exact search it needs for each one bounds how many are worth it.
CALIBRATION_MOST = 1_000


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=SCALES, required=True)
    parser.add_argument("--vectors", choices=corpus.KINDS, required=True)
    parser.add_argument(
        "--calibration",
        type=int,
        default=None,
        help=f"query vectors funnel tune chooses its plans on, none of the measured ones (default: all the others, at most {CALIBRATION_MOST})",
    )
    corpus.add_query_set_option(parser, default="suite")
    parser.add_argument("--queries", type=int, default=1000, help="queries for recall (and batch-64 timing)")
    parser.add_argument("--latency-queries", type=int, default=100, help="queries timed one at a time")
    parser.add_argument("--min-seconds", type=float, default=1.0, help="repeat single-query rounds at least this long")
    parser.add_argument("--only", nargs="*", help="method names to run (default: all)")
    parser.add_argument("--hnsw-full", choices=("yes", "no"), default="yes", help="HNSW over full vectors (at 1M with a lighter graph)")
    parser.add_argument("--gpu", choices=("auto", "no"), default="auto")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--tag", default="", help="suffix for the JSON name, to run methods of one scale in parallel processes")
    parser.add_argument("--workdir", type=Path, default=None, help="where indexes are built (default: a temp folder)")
    return parser.parse_args()


@dataclass
class Run:
    """One run's inputs and what it has measured so far (written after every method)."""

    args: argparse.Namespace
    scale: int
    use_gpu: bool
    docs: np.ndarray
    queries: np.ndarray  # measured for recall (and batch-64 timing)
    latency_queries: np.ndarray  # the first of them, timed one at a time
    calibration: np.ndarray  # what funnel tune chooses its plans on, none of the measured queries
    texts: list[str]
    query_texts: dict[bytes, str]  # each measured query's text by its vector's bytes (for BM25 candidates)
    source: dict[str, Any]
    encode: dict[str, Any] | None
    faiss_threads: int
    began: float  # perf_counter when the run started
    load_before: tuple[float, float, float] = field(default_factory=os.getloadavg)
    methods: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    fetch_ms: float | None = None

    @property
    def path(self) -> Path:
        args = self.args
        held_out = "-heldout" if args.query_set == "held-out" else ""
        return args.out / f"{args.vectors}-{args.scale}{held_out}{'-gpu' if self.use_gpu else ''}{'-' + args.tag if args.tag else ''}.json"


def prepare(args: argparse.Namespace, began: float) -> Run:
    """The run's vectors and queries: normalized, shuffled with the fixed seed, split into measured and calibration queries."""
    import faiss

    scale = SCALES[args.scale]
    docs, all_queries, source = corpus.load(args.vectors, scale, args.query_set)
    shuffled = np.random.default_rng(corpus.SEED).permutation(len(all_queries))
    vectors = np.asarray(all_queries, dtype=np.float32)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    if args.calibration is None:  # recorded in the result's parameters as the count used
        args.calibration = min(CALIBRATION_MOST, len(all_queries) - args.queries)
    queries, calibration = unit[shuffled[: args.queries]], unit[shuffled[args.queries : args.queries + args.calibration]]
    query_texts = corpus.held_out_texts() if args.query_set == "held-out" else corpus.query_texts()
    return Run(
        args=args,
        scale=scale,
        use_gpu=args.gpu == "auto" and methods.gpu_count() > 0,
        docs=docs,
        queries=queries,
        latency_queries=queries[: args.latency_queries],
        calibration=calibration,
        texts=corpus.corpus_texts()[:scale],
        query_texts={unit[i].tobytes(): query_texts[i] for i in shuffled[: args.queries]},
        source=source,
        encode=corpus.query_encode_timing(args.vectors, [query_texts[i] for i in shuffled[: args.latency_queries]]),
        faiss_threads=faiss.omp_get_max_threads(),
        began=began,
    )


def measure_built(
    built: methods.Built,
    queries: np.ndarray,
    latency_queries: np.ndarray,
    truth: np.ndarray,
    min_seconds: float,
    exact: Timing,
) -> dict[str, Any]:
    """Every configuration of ``built``: recall@10 and @100 against ``truth``, batch-1 and batch-64
    latency, and the speed-up over ``exact``'s batch-1 time."""
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
            "speedup_batch1": exact.median_ms / single.median_ms,
            "speedup_batch1_cpu": cpu_ms(exact) / cpu_ms(single),
        }
        rows.append(row)
        print(
            f"  {built.family:45s} {label:22s} r@10={row['recall@10']:.4f} r@100={row['recall@100']:.4f} "
            f"b1={single.median_ms:8.3f} ms cpu={single.cpu_median_ms:8.3f} ms x{row['speedup_batch1_cpu']:.1f} (cpu)",
            flush=True,
        )
    return {**{name: getattr(built, name) for name in BUILT_FIELDS}, "configs": rows}


def cpu_ms(timing: Timing) -> float:
    """The median CPU ms of a batch-1 timing (:func:`single_timing` always measures it)."""
    if timing.cpu_median_ms is None:
        raise ValueError("a batch-1 timing without CPU time")
    return timing.cpu_median_ms


def measure_exact(run: Run, reference: methods.Built) -> tuple[np.ndarray, Timing]:
    """Exact search's top 100 (the truth every recall is against) and its batch-1 timing, recorded as the first method."""
    truth, seconds = batched(reference.search, run.queries, 100, {})
    single = single_timing(reference.search, run.latency_queries, 10, {}, run.args.min_seconds)
    config = {
        "label": "flat",
        "params": {},
        "recall@10": 1.0,
        "recall@100": 1.0,
        "batch1": asdict(single),
        "batch64": asdict(batch_timing(seconds, 64)),
        "speedup_batch1": 1.0,
        "speedup_batch1_cpu": 1.0,
    }
    run.methods.append({**{name: getattr(reference, name) for name in BUILT_FIELDS}, "configs": [config]})
    print(f"  exact: {single.median_ms:.2f} ms/query wall, {single.cpu_median_ms:.2f} ms CPU (batch 1)", flush=True)
    return truth, single


def measure_methods(run: Run, workdir: Path, truth: np.ndarray, exact: Timing) -> None:
    """Build, measure and free each method of the registry in turn, writing the results after each; then time fetching documents."""
    args = run.args
    setup = methods.Setup(
        run.docs, workdir, run.use_gpu, run.texts, run.calibration, hnsw_full=args.hnsw_full == "yes", query_texts=run.query_texts
    )
    chosen = methods.methods_for(setup, args.only)
    for method in chosen:
        started = time.perf_counter()
        print(f"building {method.name} ...", flush=True)
        for built in method.build(setup):
            print(f"  built {built.family} in {built.build_seconds:.1f} s", flush=True)
            run.methods.append(measure_built(built, run.queries, run.latency_queries, truth, args.min_seconds, exact))
        print(f"  {method.name}: {time.perf_counter() - started:.0f} s", flush=True)
        write(run, None)
        gc.collect()
    if any(method.name.startswith("funnel") for method in chosen):
        run.fetch_ms = methods.fetch_timing(setup.funnel_index()[0], truth[: len(run.latency_queries), :10])
    if not setup.hnsw_full:
        run.skipped.append({"method": "faiss HNSW full-dim", "why": "left out with --hnsw-full no"})


def write(run: Run, exact_end: Timing | None) -> None:
    """The run's result file as it stands; ``exact_end``: exact search re-timed at the end (None while the run goes on)."""
    first = run.methods[0]["configs"][0]["batch1"]
    results = {
        "scale": run.scale,
        "vectors": run.args.vectors,
        "source": run.source,
        "queries": len(run.queries),
        "latency_queries": len(run.latency_queries),
        "k_latency": 10,
        "latency_note": LATENCY_NOTE,
        "gpu": run.use_gpu,
        "threads": {
            "faiss_omp": run.faiss_threads,
            **{k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OMP_WAIT_POLICY")},
        },
        "load_average_start_end": [run.load_before, os.getloadavg()],
        "exact_batch1_ms_start_end": [first["median_ms"], exact_end.median_ms if exact_end else None],
        "exact_batch1_cpu_ms_start_end": [first["cpu_median_ms"], exact_end.cpu_median_ms if exact_end else None],
        "complete": exact_end is not None,
        "seconds_total": time.perf_counter() - run.began,
        "cpu_seconds_total": time.process_time(),
        "encode_ms": run.encode,
        "fetch_ms": run.fetch_ms,
        "methods": run.methods,
        "skipped": run.skipped,
    }
    record = common.machine(cpu=common.cpu_model(), ram_gb=common.ram_gb())
    common.write_result(run.path, common.Result.make(BENCHMARK, common.parameters(run.args), results, record))


def main() -> None:
    began = time.perf_counter()
    args = parse_args()
    run = prepare(args, began)
    workdir = Path(tempfile.mkdtemp(prefix="funnel-bench-", dir=args.workdir))
    print(
        f"{args.vectors} {run.scale:,} docs, {len(run.queries)} queries ({len(run.latency_queries)} timed singly), gpu={run.use_gpu}",
        flush=True,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        reference = methods.exact(run.docs, workdir, run.use_gpu)
        truth, exact = measure_exact(run, reference)
        measure_methods(run, workdir, truth, exact)
        exact_again = single_timing(reference.search, run.latency_queries, 10, {}, args.min_seconds)
        del reference
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    write(run, exact_again)
    print(f"wrote {run.path} in {time.perf_counter() - run.began:.0f} s", flush=True)


if __name__ == "__main__":
    main()
