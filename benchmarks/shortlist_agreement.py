"""How often does a funnel's top-k equal exact full-dimension search's?

Runs every query of a BEIR dataset against an index built by `funnel index`, once with exact
full-dim search and once per funnel plan, and reports the fraction of queries whose top-k set is
identical, plus mean overlap@k (:func:`benchmarks.common.recall_against`). Writes JSON to --output.

    funnel index ../shared/data/cranfield -o indexes/cranfield -d 64 -d 128 --skip-invalid
    python -m benchmarks.shortlist_agreement indexes/cranfield ../shared/data/cranfield \
        --plans 64:200,full:10 128:200,full:10 --output benchmarks/results/shortlist-agreement/cranfield.json
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from benchmarks import common

BENCHMARK = "shortlist_agreement"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("index", type=Path)
    parser.add_argument(
        "dataset", type=common.dataset_path, help="BEIR folder (or the name of a shared dataset) whose queries.jsonl is used"
    )
    parser.add_argument("--plans", nargs="+", default=["64:200,full:10", "128:200,full:10"])
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--output", type=Path)
    return parser.parse_args()


def agreement(index: Path, dataset: Path, plans: list[str], k: int) -> dict[str, Any]:
    """Every query of ``dataset`` by exact search and by each plan: per plan, the share of queries
    with the identical top-k set and the mean overlap@k."""
    from funnel import Retriever
    from funnel.readers import QUERIES_FILE, load_queries
    from funnel.search.exact import exact_search
    from funnel.search.plan import Plan

    retriever = Retriever.load(index)
    queries = list(load_queries(dataset / QUERIES_FILE).values())
    vectors = retriever.encode_queries(queries)
    _, exact = exact_search(retriever.index, vectors, k)
    rows = []
    for text in plans:
        plan = Plan.parse(text)
        first = plan[0].resolved_dim(retriever.index.dim)
        if first not in retriever.index.shortlist_dims:
            retriever.index.add_shortlist(first)  # in memory only: the index on disk is unchanged
        found = retriever.search_vectors(vectors, k, plan).positions
        identical, overlap = common.identical_share(found, exact, k), common.recall_against(found, exact, k)
        rows.append({"plan": text, "identical_top_k": identical, "mean_overlap": overlap})
        print(f"{text:<24} identical top-{k}: {identical:.2%}   mean overlap@{k}: {overlap:.4f}")
    return {
        "index": common.shown(index),
        "dataset": common.shown(dataset),
        "queries": len(queries),
        "documents": retriever.index.count,
        "model": retriever.index.manifest.model,
        "k": k,
        "results": rows,
    }


def main() -> None:
    args = parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    results = agreement(args.index, args.dataset, args.plans, args.k)
    if args.output:
        common.write_result(args.output, common.Result.make(BENCHMARK, common.parameters(args), results))


if __name__ == "__main__":
    main()
