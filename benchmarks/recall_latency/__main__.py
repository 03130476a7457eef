"""The whole suite in one command: vectors (cached), every run, then plots and tables.

    python -m benchmarks.recall_latency                 # 10k and 100k real MiniLM, 1M real static-model vectors
    python -m benchmarks.recall_latency --scales 10k    # just the quick one

Each run is a separate process (``run.py``) so one run's memory is freed before the next.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

# (scale, vectors, extra arguments): the settings the committed results were made with. funnel
# stores the vectors in the rotation its build fits (--rotation auto); every other method gets
# the model's vectors, whose order does not matter to full-dimension search.
SMALL = ["--queries", "128", "--latency-queries", "30", "--min-seconds", "0.2"]
LARGE = ["--queries", "128", "--latency-queries", "20", "--min-seconds", "0.2"]
RUNS = {
    "10k": [("10k", "minilm", SMALL)],
    "100k": [("100k", "minilm", SMALL)],
    "1m": [("1m", "static", LARGE)],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", nargs="+", choices=list(RUNS), default=list(RUNS))
    parser.add_argument("--out", default=None, help="results folder (default: benchmarks/results/recall-latency)")
    args = parser.parse_args()
    out = ["--out", args.out] if args.out else []
    python = sys.executable
    subprocess.run([python, "-m", "benchmarks.recall_latency.corpus", "--minilm-100k", "--static"], check=True)
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
