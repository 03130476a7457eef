"""How often does a funnel's top-k equal exact full-dimension search's?

Runs every query of a BEIR dataset against an index built by `funnel index`, once with exact
full-dim search and once per funnel plan, and reports the fraction of queries whose top-k set is
identical, plus mean overlap@k (:func:`funnel.agreement.recall_against`). Writes JSON to --output.

    funnel index ../shared/data/cranfield -o indexes/cranfield -d 64 -d 128 --skip-invalid
    python -m benchmarks.shortlist_agreement indexes/cranfield ../shared/data/cranfield \
        --plans 64:200,full:10 128:200,full:10 --output benchmarks/results/shortlist-agreement/cranfield.json
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

from benchmarks import common


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("index", type=Path)
    parser.add_argument("dataset", type=Path, help="BEIR folder whose queries.jsonl is used")
    parser.add_argument("--plans", nargs="+", default=["64:200,full:10", "128:200,full:10"])
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from funnel import Retriever
    from funnel.agreement import recall_against
    from funnel.readers import load_queries
    from funnel.stages import exact_search, parse_stages

    retriever = Retriever.load(args.index)
    queries = list(load_queries(args.dataset / "queries.jsonl").values())
    vectors = retriever.encode_queries(queries)
    _, exact = exact_search(retriever.index, vectors, args.k)
    rows = []
    for plan in args.plans:
        first = parse_stages(plan)[0].resolved_dim(retriever.index.dim)
        if first not in retriever.index.shortlist_dims:
            retriever.index.add_shortlist(first)  # in memory only: the index on disk is unchanged
        result = retriever.search_vectors(vectors, args.k, parse_stages(plan))
        overlap = recall_against(result.positions[:, : args.k], exact[:, : args.k])
        same = overlap == 1.0
        rows.append({"plan": plan, "identical_top_k": float(np.mean(same)), "mean_overlap": float(np.mean(overlap))})
        print(f"{plan:<24} identical top-{args.k}: {np.mean(same):.2%}   mean overlap@{args.k}: {np.mean(overlap):.4f}")
    report = {
        "index": common.shown(args.index),
        "dataset": common.shown(args.dataset),
        "queries": len(queries),
        "documents": retriever.index.count,
        "model": retriever.index.manifest.model,
        "k": args.k,
        "results": rows,
        "command": common.command(),
        "machine": common.machine(),
    }
    if args.output:
        common.write_json(args.output, report)


if __name__ == "__main__":
    main()
