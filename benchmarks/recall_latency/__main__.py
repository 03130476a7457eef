"""The whole suite in one command: vectors (cached), every run, then plots and tables.

    python -m benchmarks.recall_latency                 # 10k real MiniLM, 100k and 1M surrogate
    python -m benchmarks.recall_latency --scales 10k    # just the quick one

Each run is a separate process (``run.py``) so one run's memory is freed before the next.
"""
from __future__ import annotations

import argparse
import subprocess
import sys

# (scale, vectors, extra arguments): the settings the committed results were made with.
RUNS = {
    "10k": [("10k", "minilm", ["--queries", "128", "--latency-queries", "30", "--min-seconds", "0.2"])],
    "100k": [("100k", "surrogate", ["--queries", "128", "--latency-queries", "30", "--min-seconds", "0.2"])],
    "1m": [("1m", "surrogate", ["--queries", "128", "--latency-queries", "20", "--min-seconds", "0.2"])],
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
