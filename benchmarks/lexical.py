"""BM25 candidates in the funnel, on Cranfield, SciFact and Debian (their test queries).

    python -m benchmarks.lexical [--datasets cranfield scifact debian] [--model PATH]

For each dataset, one index of its whole corpus (funnel's own builder, default settings: a
rotated 64-dim flat shortlist and, new, the BM25 index), and four rankings of the top 10:

- ``exact``: ``full:10``, exact dense search;
- ``funnel``: ``64:400,full:10``;
- ``funnel+bm25``: ``64:400+bm25:50,full:10``, BM25's best 50 added to the 400 before the
  full-dim rescoring (so every score is still the exact cosine);
- ``hybrid``: ``64:400+bm25:50,full:10+rrf``, the union ranked by reciprocal-rank fusion (k=60)
  of its full-dim rank and its BM25 rank;
- ``tuned``: the plan ``funnel tune`` chooses for recall@10 ≥ 0.99 (its corpus-made calibration
  queries include rare-term spans; it keeps BM25 candidates only where they gain).

Reported per ranking: NDCG@10, MRR@10, the share of queries whose exact top 10 it keeps (the same
ten documents), the queries the lexical candidates rescued (exact top 10 kept with them, not
without), and the search time per query (one at a time, one thread; the BM25 search alone too).
Writes ``benchmarks/results/lexical/lexical.json`` and ``README.md``. The indexes are kept under
``~/.cache/funnel/bench/lexical`` (built once: MiniLM encodes Debian's 60k descriptions in about
36 minutes here; ``--model`` takes a faster one).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import common

OUT = Path(__file__).resolve().parent / "results" / "lexical"
WORKDIR = common.CACHE / "bench" / "lexical"
FUNNEL = "64:400,full:10"
LEXICAL = "64:400+bm25:50,full:10"
EXACT = "full:10"
HYBRID = LEXICAL + "+rrf"
K = 10
PLANS = {"exact": EXACT, "funnel": FUNNEL, "funnel+bm25": LEXICAL, "hybrid": HYBRID}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="*", default=["cranfield", "scifact", "debian"])
    parser.add_argument("--model", default=None, help="model folder (default: the offline all-MiniLM-L6-v2)")
    parser.add_argument("--timed", type=int, default=200, help="queries timed one at a time")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    from funnel.models import Encoder

    encoder = Encoder.load(args.model)
    results = {name: run_dataset(name, encoder, args.timed) for name in args.datasets}
    args.out.mkdir(parents=True, exist_ok=True)
    payload = {"benchmark": "lexical", "machine": common.machine(), "model": encoder.name, "plans": PLANS, "datasets": results}
    (args.out / "lexical.json").write_text(json.dumps(payload, indent=2) + "\n")
    (args.out / "README.md").write_text(render(payload))
    print(f"wrote {args.out}")


def run_dataset(name: str, encoder: Any, timed: int) -> dict[str, Any]:
    import faiss

    from funnel.evaluation import inputs
    from funnel.evaluation.metrics import evaluate_run, parse_metrics, run_from_arrays
    from funnel.search.plan import Plan
    from funnel.search.run import run_funnel
    from funnel.tuning import tune

    faiss.omp_set_num_threads(1)
    dataset = common.DATASETS[name].folder
    data = inputs.dataset_data(dataset, "test")
    index, _ = inputs.dataset_index(dataset, encoder, WORKDIR, None, False, print)
    if index.lexical is None:
        raise SystemExit(f"{index.path} has no lexical index: delete it and run again")
    query_ids = list(data.queries)
    texts = [data.queries[q] for q in query_ids]
    vectors = encoder.encode(texts, batch_size=64)
    ids = index.ids()
    metrics = parse_metrics(["ndcg@10", "mrr@10"])
    tuned = tune(index, encoder, 0.99, K)
    plans = {**PLANS, "tuned": tuned.stages_text}
    rankings: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for label, text in plans.items():
        result = run_funnel(index, vectors, Plan.parse(text), K, texts=texts)
        rankings[label] = (result.scores, result.positions)
    exact_sets = [set(row[row >= 0].tolist()) for row in rankings["exact"][1]]
    rows: dict[str, Any] = {}
    kept: dict[str, np.ndarray] = {}
    for label, (scores, positions) in rankings.items():
        run = run_from_arrays(query_ids, positions, scores, corpus_ids=ids)
        scored = evaluate_run(run, data.qrels, metrics)
        kept[label] = np.array([set(row[row >= 0].tolist()) == want for row, want in zip(positions, exact_sets)])
        rows[label] = {**{str(m): round(scored.means[str(m)], 4) for m in metrics}, "exact_top10_kept": round(float(kept[label].mean()), 4)}
    rescued = [query_ids[i] for i in np.flatnonzero(kept["funnel+bm25"] & ~kept["funnel"])]
    lost = [query_ids[i] for i in np.flatnonzero(kept["funnel"] & ~kept["funnel+bm25"])]
    timing = time_plans(index, plans, vectors[:timed], texts[:timed])
    print(f"{name}: {json.dumps(rows)} rescued {len(rescued)} lost {len(lost)} {json.dumps(timing)}")
    return {
        "documents": index.count,
        "queries": len(query_ids),
        "tuned": {"stages": tuned.stages_text, "notes": list(tuned.notes)},
        "rows": rows,
        "rescued": [{"id": q, "text": data.queries[q]} for q in rescued],
        "lost": [{"id": q, "text": data.queries[q]} for q in lost],
        "ms_per_query": timing,
        "lexical_bytes": sum(entry.bytes for entry in index.manifest.lexical.files.values()) if index.manifest.lexical else 0,
    }


def time_plans(index: Any, plans: dict[str, str], vectors: np.ndarray, texts: list[str]) -> dict[str, float]:
    """Median ms a query, one at a time: each plan, and the BM25 search alone."""
    from funnel.search.plan import Plan
    from funnel.search.run import run_funnel

    assert index.lexical is not None
    out = {}
    for label, text in plans.items():
        plan = Plan.parse(text)
        run_funnel(index, vectors[:1], plan, K, texts=texts[:1])
        out[label] = _median_ms(lambda i, plan=plan: run_funnel(index, vectors[i : i + 1], plan, K, texts=texts[i : i + 1]), len(texts))
    out["bm25 alone"] = _median_ms(lambda i: index.lexical.search(texts[i : i + 1], 50), len(texts))
    return out


def _median_ms(call: Any, count: int) -> float:
    times = []
    for i in range(count):
        started = time.perf_counter()
        call(i)
        times.append(time.perf_counter() - started)
    return round(1000 * float(np.median(times)), 3)


def render(payload: dict[str, Any]) -> str:
    lines = [
        "# BM25 candidates in the funnel",
        "",
        f"`python -m benchmarks.lexical` ({payload['model']}; {payload['machine']['cores']} cores, one search thread; "
        f"1-minute load average {payload['machine']['load_average'][0]:.1f}). Search ms: median over the first test queries, one at a time.",
        "",
        "Plans: " + "; ".join(f"**{label}** `{text}`" for label, text in payload["plans"].items()) + ".",
        "",
    ]
    for name, result in payload["datasets"].items():
        lines += [
            f"## {name} ({result['documents']} documents, {result['queries']} test queries; BM25 files {result['lexical_bytes'] / 1e6:.1f} MB)",
            "",
            "| ranking | NDCG@10 | MRR@10 | exact top-10 kept | ms/query |",
            "|---|---|---|---|---|",
        ]
        for label, row in result["rows"].items():
            ms = result["ms_per_query"].get(label)
            lines.append(
                f"| {label} | {row['ndcg@10']:.4f} | {row['mrr@10']:.4f} | {row['exact_top10_kept']:.4f} | {'' if ms is None else ms} |"
            )
        lines += ["", f"BM25 search alone: {result['ms_per_query']['bm25 alone']} ms a query."]
        lines += [f"Tuned (target recall@10 0.99): `{result['tuned']['stages']}`; " + " ".join(result["tuned"]["notes"])]
        rescued = ", ".join(f"{q['id']} ({q['text'][:60]!r})" for q in result["rescued"][:20]) or "none"
        lines += [f"Rescued by the lexical candidates ({len(result['rescued'])}): {rescued}.", ""]
        if result["lost"]:
            lines += [f"Lost with them ({len(result['lost'])}): " + ", ".join(q["id"] for q in result["lost"][:20]) + ".", ""]
    lines += [
        "The same plans through `funnel eval` on these indexes (its table adds the exact top-10 kept and names the",
        "queries the BM25 candidates rescued): [eval-cranfield](eval-cranfield/report.md), "
        "[eval-scifact](eval-scifact/report.md), [eval-debian](eval-debian/report.md); each report holds its command.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
