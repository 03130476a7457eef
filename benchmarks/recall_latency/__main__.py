"""The whole suite in one command: vectors (cached), every run, then plots and tables.

    python -m benchmarks.recall_latency                 # 10k real MiniLM, 100k and 1M surrogate (both dim orders)
    python -m benchmarks.recall_latency --scales 10k    # just the quick one

Each run is a separate process (``run.py``) so one run's memory is freed before the next.
"""
from __future__ import annotations

import argparse
import subprocess
import sys

# (scale, vectors, extra arguments): the settings the committed results were made with.
SMALL = ["--queries", "128", "--latency-queries", "30", "--min-seconds", "0.2"]
LARGE = ["--queries", "128", "--latency-queries", "20", "--min-seconds", "0.2"]
# In PCA order flat funnel shortlists are dominated by HNSW/binary ones; they are left out there to save time.
PCA_ONLY = ["--only", "funnel-hnsw", "funnel-binary", "funnel-ivf", "faiss-refine-ivfpq", "st-ubinary", "st-uint8"]
RUNS = {
    "10k": [("10k", "minilm", SMALL), ("10k", "minilm-pca", SMALL)],
    "100k": [("100k", "surrogate-pca", SMALL + PCA_ONLY + ["hnsw-full"])],
    "1m": [("1m", "surrogate", LARGE), ("1m", "surrogate-pca", LARGE + PCA_ONLY)],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", nargs="+", choices=list(RUNS), default=list(RUNS))
    args = parser.parse_args()
    python = sys.executable
    subprocess.run([python, "-m", "benchmarks.recall_latency.corpus", "--surrogate"], check=True)
    for scale in args.scales:
        for size, vectors, extra in RUNS[scale]:
            subprocess.run([python, "-m", "benchmarks.recall_latency.run", "--scale", size, "--vectors", vectors, *extra], check=True)
    subprocess.run([python, "-m", "benchmarks.recall_latency.report"], check=True)


if __name__ == "__main__":
    main()
