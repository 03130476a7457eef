"""The whole suite in one command: vectors (cached), every run, then plots and tables.

    python -m benchmarks.recall_latency                 # 10k and 100k real MiniLM, 1M surrogate (both dim orders)
    python -m benchmarks.recall_latency --scales 10k    # just the quick one

Each run is a separate process (``run.py``) so one run's memory is freed before the next.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

# (scale, vectors, extra arguments): the settings the committed results were made with.
SMALL = ["--queries", "128", "--latency-queries", "30", "--min-seconds", "0.2"]
LARGE = ["--queries", "128", "--latency-queries", "20", "--min-seconds", "0.2"]
# Which methods run in which dimension order. Full-dimension methods (exact, HNSW, HNSW-SQ8 +
# refine) do not depend on the order (a rotation keeps every inner product), so from 100k on they
# run once, in PCA order, beside funnel's prefix shortlists. Binary methods (funnel's binary
# shortlists, sentence-transformers' ubinary) are hurt by the PCA order and run in model order.
BINARY = ["funnel-binary", "st-ubinary"]
PREFIX_AND_FULL = [
    "funnel-flat",
    "funnel-hnsw",
    "funnel-hnsw128",
    "funnel-ivf",
    "faiss-refine-ivfpq",
    "faiss-refine-pq",
    "faiss-refine-hnsw",
    "hnsw-full",
    "st-uint8",
]
# At 1M, left out to keep both 1M runs inside 30 minutes: flat prefix scans (14–28 ms) are far
# from exact/30; funnel's IVF shortlist is dominated by its HNSW one at 10k and 100k; an exhaustive
# PQ scan costs as much as IVF-PQ's sweep; uint8 search is a flat scan as slow as exact search.
PREFIX_AND_FULL_1M = ["funnel-hnsw", "faiss-refine-ivfpq", "faiss-refine-hnsw", "hnsw-full"]
RUNS = {
    "10k": [("10k", "minilm", SMALL), ("10k", "minilm-pca", SMALL)],
    "100k": [
        ("100k", "minilm", SMALL + ["--only", "funnel-flat", *BINARY, "st-uint8"]),
        ("100k", "minilm-pca", SMALL + ["--only", *PREFIX_AND_FULL]),
    ],
    # funnel's 128-dim HNSW shortlist was added after the other two 1M runs had been made, so it
    # runs as a third process (its JSON is merged into the PCA-order one by report.py); the three
    # together are the 1M wall clock.
    "1m": [
        ("1m", "surrogate", LARGE + ["--only", *BINARY]),
        ("1m", "surrogate-pca", LARGE + ["--only", *PREFIX_AND_FULL_1M]),
        ("1m", "surrogate-pca", LARGE + ["--only", "funnel-hnsw128", "--tag", "hnsw128"]),
    ],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", nargs="+", choices=list(RUNS), default=list(RUNS))
    parser.add_argument("--out", default=None, help="results folder (default: benchmarks/results/recall-latency)")
    args = parser.parse_args()
    out = ["--out", args.out] if args.out else []
    python = sys.executable
    subprocess.run([python, "-m", "benchmarks.recall_latency.corpus", "--minilm-100k", "--surrogate"], check=True)
    for scale in args.scales:
        began = time.perf_counter()
        for size, vectors, extra in RUNS[scale]:
            subprocess.run([python, "-m", "benchmarks.recall_latency.run", "--scale", size, "--vectors", vectors, *extra, *out], check=True)
        print(
            f"{scale}: {(time.perf_counter() - began) / 60:.1f} min wall for its {len(RUNS[scale])} runs, load average now {os.getloadavg()[0]:.1f}",
            flush=True,
        )
    subprocess.run([python, "-m", "benchmarks.recall_latency.report", *(["--dir", args.out] if args.out else [])], check=True)


if __name__ == "__main__":
    main()
