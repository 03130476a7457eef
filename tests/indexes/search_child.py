"""Child process for the concurrency test: search one index over and over, reloading when a
writer changes it, and print one JSON line per search: the version seen and the ids found.

Usage: python search_child.py INDEX QUERIES.npy STOPFILE MIN_SEARCHES
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from funnel.indexes.index import Index
from funnel.search.plan import Plan
from funnel.search.run import run_funnel


def main() -> None:
    path, queries, stop, minimum = Path(sys.argv[1]), np.load(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4])
    index = Index.load(path)
    done = 0
    while done < minimum or not stop.exists():
        if index.changed_on_disk():
            index = Index.load(path)
        result = run_funnel(index, queries, Plan.two_stage(64, 30, 10), 10)
        ids = index.ids()
        print(json.dumps({"version": index.version, "ids": [[ids[p] for p in row] for row in result.positions.tolist()]}), flush=True)
        done += 1
    # One last search after the writer finished: it must see the final version.
    print(json.dumps({"final": Index.load(path).version}), flush=True)


if __name__ == "__main__":
    main()
