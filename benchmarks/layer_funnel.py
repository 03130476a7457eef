"""Shallow-layer shortlists, deeper rescoring: quality against query-side compute.

For one model and one BEIR dataset: builds an index that stores the vectors of every depth
(``funnel index --layers 1,2,...``; documents pass through the encoder once), then runs

- the full model, exact (every document scored at full depth and full dims): the reference;
- shallow shortlist + full rescore, ``L:d:n,full:10``, for every depth L, dims d and size n;
- the shallow model alone at full dims, ``L:full:10`` (its query costs L layers, nothing more);
- shallow shortlist + shallow full-dim rescore, ``L:d:n,L:full:10``;
- the dims-only funnel, ``d:n,full:10``;
- early exit (optional, measured): stop after the shallow stage when its first hit leads the
  second by at least a margin; otherwise continue to the full rescore.

Query-side compute per configuration: encoding FLOPs (the layers its deepest stage needs, counted
from each query's tokens with :class:`funnel.evaluation.compute.EncoderShape`) and encoding time,
measured per query, one at a time, on one thread, with continuation (a plan that needs layers 2
and 6 runs 6 layers, not 8); plus search time per query. Writes
``benchmarks/results/layers/<dataset>-<model>.{json,md}``.

    python -m benchmarks.layer_funnel --model ../models/starbucks-distill --dataset ../shared/data/cranfield
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from benchmarks import common

RESULTS = common.RESULTS / "layers"
METRICS = ("ndcg@10", "mrr@10", "recall@100")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a sentence-transformers model folder (Starbucks-trained: see results/layers)")
    parser.add_argument("--dataset", type=Path, required=True, help="a BEIR folder")
    parser.add_argument("--dims", default="32,64,128", help="shortlist dims")
    parser.add_argument("--sizes", default="50,100,200", help="shortlist sizes")
    parser.add_argument("--margins", default="0.02,0.05,0.1", help="early-exit margins (top-1 minus top-2 score)")
    parser.add_argument("--index-dir", type=Path, default=common.CACHE / "layer-indexes")
    parser.add_argument("--tag", help="results file name [default: <dataset>-<model folder>]")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from funnel.corpus import open_corpus
    from funnel.evaluation.compute import EncoderShape, count_tokens
    from funnel.evaluation.datasets import load_beir
    from funnel.evaluation.metrics import evaluate_run, parse_metrics, run_from_arrays
    from funnel.evaluation.timing import Timing, time_each, time_layers
    from funnel.indexes.builder import IndexConfig, build_index
    from funnel.indexes.index import Index
    from funnel.indexes.shortlist import make_spec
    from funnel.layers import LayeredEncoder
    from funnel.models import Encoder, torch_threads
    from funnel.stages import exact_search, parse_stages, run_funnel

    started = time.time()
    dims = [int(d) for d in args.dims.split(",")]
    sizes = [int(n) for n in args.sizes.split(",")]
    encoder = Encoder.load(args.model)
    layered = LayeredEncoder(encoder)
    depth, full_dim = layered.num_layers, encoder.dim
    data = load_beir(args.dataset)
    tag = args.tag or f"{args.dataset.resolve().name}-{Path(args.model).name}"

    path = args.index_dir / tag
    if not path.exists():
        print(f"indexing {len(data.corpus_ids)} documents at layers 1..{depth}", flush=True)
        config = IndexConfig(shortlists=tuple(make_spec(d) for d in dims), layers=tuple(range(1, depth)))
        build_index(open_corpus(args.dataset, skip_invalid=True), encoder, path, config, show_progress=True)
    index = Index.load(path)
    for layer in range(1, depth + 1):  # the shallow models alone need full-dim flat shortlists too
        index.add_shortlist(full_dim, "flat", layer=layer)
    ids = index.ids()

    query_ids = list(data.queries)
    texts = [data.queries[q] for q in query_ids]
    vectors = layered.encode_layers(texts, list(range(1, depth + 1)))
    metrics = parse_metrics(METRICS)

    print("timing query encoding, layer by layer, one query at a time", flush=True)
    shape = EncoderShape.of(encoder)
    tokens = count_tokens(encoder, texts)
    with torch_threads(1):  # one query at a time on one thread, as the harness times it
        encode_ms = time_layers(layered, texts, list(range(1, depth + 1)))  # (queries, depth): cumulative ms
    flops = np.array([[shape.flops(int(n), layer) for layer in range(1, depth + 1)] for n in tokens], dtype=float)

    def cost(layer: int) -> dict[str, float]:
        return {
            "layers_run": layer,
            "encode_gflops": round(float(flops[:, layer - 1].mean()) / 1e9, 4),
            "encode_ms": round(float(np.median(encode_ms[:, layer - 1])), 3),
        }

    def score(positions: np.ndarray, scores: np.ndarray) -> dict[str, float]:
        run = run_from_arrays(query_ids, positions, scores, corpus_ids=ids)
        return {name: round(value, 4) for name, value in evaluate_run(run, data.qrels, metrics).means.items()}

    def search_ms(plan) -> float:
        """Median ms of one query's search, each of the first 50 queries alone."""
        rows = list(range(min(50, len(texts))))
        seconds = time_each(lambda row: run_funnel(index, {layer: vectors[layer][row : row + 1] for layer in vectors}, plan, 10), rows)
        return round(Timing.of(seconds).median_ms, 3)

    rows = []
    exact_scores, exact_positions = exact_search(index, vectors[depth], 100)
    rows.append(
        {
            "name": "full model, exact",
            "family": "reference",
            "stages": f"{depth}:full:100",
            **score(exact_positions, exact_scores),
            **cost(depth),
        }
    )

    def add(name: str, family: str, text: str, k: int = 100) -> None:
        plan = parse_stages(text)
        result = run_funnel(index, vectors, plan, min(k, plan[-1].candidates))
        deepest = max(depth if stage.layer is None else stage.layer for stage in plan)
        rows.append(
            {
                "name": name,
                "family": family,
                "stages": text,
                **score(result.positions, result.scores),
                **cost(deepest),
                "search_ms": search_ms(plan),
            }
        )

    for layer in range(1, depth):
        add(f"layer {layer} alone", "shallow model", f"{layer}:full:100")
        for dim in dims:
            for size in sizes:
                add(
                    f"{layer}:{dim} shortlist {size} → full",
                    "shallow shortlist + full rescore",
                    f"{layer}:{dim}:{size},{depth}:full:{min(size, 100)}",
                )
            add(f"{layer}:{dim} shortlist 200 → {layer}:full", "shallow shortlist + shallow rescore", f"{layer}:{dim}:200,{layer}:full:100")
    for dim in dims:
        for size in sizes:
            add(f"{dim} shortlist {size} → full", "dims-only funnel", f"{dim}:{size},full:{min(size, 100)}")

    early = []
    margins = [float(m) for m in args.margins.split(",")]
    for layer in range(1, depth):
        for dim in (64,):
            shallow = run_funnel(index, vectors, parse_stages(f"{layer}:{dim}:200,{layer}:full:100"), 100)
            deep = run_funnel(index, vectors, parse_stages(f"{layer}:{dim}:200,{depth}:full:100"), 100)
            gap = shallow.scores[:, 0] - shallow.scores[:, 1]
            for margin in margins:
                stop = gap >= margin
                positions = np.where(stop[:, None], shallow.positions, deep.positions)
                scores = np.where(stop[:, None], shallow.scores, deep.scores)
                ms = np.where(stop, encode_ms[:, layer - 1], encode_ms[:, depth - 1])
                gf = np.where(stop, flops[:, layer - 1], flops[:, depth - 1])
                early.append(
                    {
                        "name": f"{layer}:{dim}:200, exit if top-1 leads by ≥ {margin}",
                        "layer": layer,
                        "margin": margin,
                        "exit_rate": round(float(stop.mean()), 3),
                        **score(positions, scores),
                        "encode_gflops": round(float(gf.mean()) / 1e9, 4),
                        "encode_ms": round(float(np.median(ms)), 3),
                        "encode_ms_mean": round(float(ms.mean()), 3),
                    }
                )

    reference = rows[0]
    for row in rows + early:
        row["ndcg_kept_pct"] = round(100 * row["ndcg@10"] / reference["ndcg@10"], 1)
        row["encode_time_ratio"] = round(row["encode_ms"] / reference["encode_ms"], 3)
    record = {
        "command": common.command(),
        "model": common.shown(args.model),
        "model_metadata": {k: v for k, v in encoder.metadata.items() if k != "loss_log"},
        "dataset": common.shown(args.dataset),
        "documents": index.count,
        "queries": len(query_ids),
        "tokens_per_query": round(float(tokens.mean()), 1),
        "depth": depth,
        "dim": full_dim,
        "encode_ms_by_layer": [round(float(np.median(encode_ms[:, i])), 3) for i in range(depth)],
        "rows": rows,
        "early_exit": early,
        "seconds": round(time.time() - started, 1),
        "machine": common.machine(),
    }
    common.write_json(RESULTS / f"{tag}.json", record)
    (RESULTS / f"{tag}.md").write_text(_markdown(record))
    print(_markdown(record))


def _markdown(record: dict) -> str:
    ref = record["rows"][0]
    lines = [
        f"# Layer funnel on {Path(record['dataset']).name}: {record['documents']} documents, {record['queries']} queries",
        "",
        f"`{record['command']}`",
        "",
        f"Model: `{record['model']}` ({record['depth']} layers, {record['dim']} dims; "
        f"scheme {record['model_metadata'].get('scheme', '?')}). Query encoding per layer (median ms, one query, one thread, "
        f"cumulative with continuation): {', '.join(f'L{i + 1} {ms}' for i, ms in enumerate(record['encode_ms_by_layer']))}; "
        f"{record['tokens_per_query']} tokens per query on average.",
        "",
        "| configuration | stages | NDCG@10 | kept | MRR@10 | R@100 | layers | query GFLOPs | encode ms | × full encode | search ms |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in record["rows"]:
        lines.append(
            f"| {row['name']} | `{row['stages']}` | {row['ndcg@10']:.4f} | {row['ndcg_kept_pct']}% | {row['mrr@10']:.4f} | "
            f"{row['recall@100']:.4f} | {row['layers_run']} | {row['encode_gflops']} | {row['encode_ms']} | "
            f"{row['encode_time_ratio']} | {row.get('search_ms', '')} |"
        )
    lines += [
        "",
        "## Early exit",
        "",
        "| configuration | exits | NDCG@10 | kept | MRR@10 | query GFLOPs | encode ms (median / mean) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in record["early_exit"]:
        lines.append(
            f"| {row['name']} | {100 * row['exit_rate']:.1f}% | {row['ndcg@10']:.4f} | {row['ndcg_kept_pct']}% | {row['mrr@10']:.4f} | "
            f"{row['encode_gflops']} | {row['encode_ms']} / {row['encode_ms_mean']} |"
        )
    best = [r for r in record["rows"][1:] if r["ndcg_kept_pct"] >= 99.0 and r["encode_time_ratio"] <= 0.5]
    lines += ["", f"Reference: full model exact, NDCG@10 {ref['ndcg@10']:.4f}, {ref['encode_ms']} ms to encode a query.", ""]
    if best:
        pick = min(best, key=lambda r: r["encode_ms"])
        lines.append(
            f"Halves query encoding within 1% NDCG@10: **{pick['name']}** (`{pick['stages']}`), {pick['ndcg_kept_pct']}% kept at {pick['encode_time_ratio']}× the encode time."
        )
    else:
        lines.append("No configuration halves query-encoding time while keeping 99% of the full model's NDCG@10 (see the frontier above).")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
