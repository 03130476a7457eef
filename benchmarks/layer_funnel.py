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
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from benchmarks import common

if TYPE_CHECKING:
    from funnel.evaluation.datasets import BeirDataset
    from funnel.indexes.index import Index
    from funnel.models import Encoder
    from funnel.search.plan import Plan

BENCHMARK = "layer_funnel"
RESULTS = common.RESULTS / "layers"
METRICS = ("ndcg@10", "mrr@10", "recall@100")
Row = dict[str, Any]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a sentence-transformers model folder (Starbucks-trained: see results/layers)")
    parser.add_argument("--dataset", type=common.dataset_path, required=True, help="a BEIR folder, or the name of a shared dataset")
    parser.add_argument("--dims", default="32,64,128", help="shortlist dims")
    parser.add_argument("--sizes", default="50,100,200", help="shortlist sizes")
    parser.add_argument("--margins", default="0.02,0.05,0.1", help="early-exit margins (top-1 minus top-2 score)")
    parser.add_argument("--index-dir", type=Path, default=common.CACHE / "layer-indexes")
    parser.add_argument("--tag", help="results file name [default: <dataset>-<model folder>]")
    return parser.parse_args()


@dataclass
class Bench:
    """One model over one dataset's index of every depth, with its queries' vectors at every depth
    and what each query costs to encode to each depth."""

    index: Index
    data: BeirDataset
    query_ids: list[str]
    texts: list[str]
    vectors: dict[int, np.ndarray]  # depth → (queries, dim)
    depth: int
    encode_ms: np.ndarray  # (queries, depth): cumulative ms, one query at a time, one thread
    flops: np.ndarray  # (queries, depth)
    tokens: np.ndarray  # (queries,)
    corpus_ids: list[str]  # the index's ids, by position

    def cost(self, layer: int) -> dict[str, float]:
        return {
            "layers_run": layer,
            "encode_gflops": round(float(self.flops[:, layer - 1].mean()) / 1e9, 4),
            "encode_ms": round(float(np.median(self.encode_ms[:, layer - 1])), 3),
        }

    def score(self, positions: np.ndarray, scores: np.ndarray) -> dict[str, float]:
        """:data:`METRICS` of a ranking, by :mod:`funnel.evaluation.metrics`."""
        from funnel.evaluation.metrics import evaluate_run, parse_metrics, run_from_arrays

        run = run_from_arrays(self.query_ids, positions, scores, corpus_ids=self.corpus_ids)
        return {name: round(value, 4) for name, value in evaluate_run(run, self.data.qrels, parse_metrics(METRICS)).means.items()}

    def search_ms(self, plan: Plan) -> float:
        """Median ms of one query's search, each of the first 50 queries alone."""
        from funnel.search.run import run_funnel

        def one(row: int) -> object:
            return run_funnel(self.index, {layer: vectors[row : row + 1] for layer, vectors in self.vectors.items()}, plan, 10)

        return round(common.time_calls(one, list(range(min(50, len(self.texts)))), warmup=1).per_input().median_ms, 3)


def open_index(args: argparse.Namespace, encoder: Encoder, depth: int, dims: list[int], tag: str, documents: int) -> Index:
    """The index of every depth (built once, under ``--index-dir``), with full-dim flat shortlists
    at every depth added in memory for the shallow models alone."""
    from funnel.corpus import open_corpus
    from funnel.indexes.builder import IndexConfig, build_index
    from funnel.indexes.index import Index
    from funnel.indexes.shortlist import make_spec

    path = args.index_dir / tag
    if not path.exists():
        print(f"indexing {documents} documents at layers 1..{depth}", flush=True)
        config = IndexConfig(shortlists=tuple(make_spec(d) for d in dims), layers=tuple(range(1, depth)))
        build_index(open_corpus(args.dataset, skip_invalid=True), encoder, path, config, show_progress=True)
    index = Index.load(path)
    for layer in range(1, depth + 1):
        index.add_shortlist(encoder.dim, "flat", layer=layer)
    return index


def prepare(args: argparse.Namespace, dims: list[int], tag: str) -> tuple[Bench, Encoder]:
    from funnel.evaluation.compute import EncoderShape, count_tokens
    from funnel.evaluation.datasets import load_beir
    from funnel.evaluation.timing import time_layers
    from funnel.layers import LayeredEncoder
    from funnel.models import Encoder, torch_threads

    encoder = Encoder.load(args.model)
    layered = LayeredEncoder(encoder)
    depth = layered.num_layers
    data = load_beir(args.dataset)
    index = open_index(args, encoder, depth, dims, tag, len(data.corpus_ids))
    query_ids = list(data.queries)
    texts = [data.queries[q] for q in query_ids]
    vectors = layered.encode_layers(texts, list(range(1, depth + 1)))
    print("timing query encoding, layer by layer, one query at a time", flush=True)
    shape = EncoderShape.of(encoder)
    if shape is None:
        raise SystemExit(f"{args.model} is not a transformer with layers: the layer funnel needs one")
    tokens = count_tokens(encoder, texts)
    with torch_threads(1):  # one query at a time on one thread, as the harness times it
        encode_ms = time_layers(layered, texts, list(range(1, depth + 1)))
    flops = np.array([[shape.flops(int(n), layer) for layer in range(1, depth + 1)] for n in tokens], dtype=np.float64)
    return Bench(index, data, query_ids, texts, vectors, depth, encode_ms, flops, tokens, index.ids()), encoder


def plan_rows(bench: Bench, dims: list[int], sizes: list[int]) -> list[Row]:
    """The reference (full model, exact) first, then every plan family."""
    from funnel.search.exact import exact_search
    from funnel.search.plan import Plan
    from funnel.search.run import run_funnel

    depth = bench.depth
    exact_scores, exact_positions = exact_search(bench.index, bench.vectors[depth], 100)
    rows = [
        {
            "name": "full model, exact",
            "family": "reference",
            "stages": f"{depth}:full:100",
            **bench.score(exact_positions, exact_scores),
            **bench.cost(depth),
        }
    ]

    def add(name: str, family: str, text: str, k: int = 100) -> None:
        plan = Plan.parse(text)
        result = run_funnel(bench.index, bench.vectors, plan, min(k, plan[-1].candidates))
        deepest = max(depth if stage.layer is None else stage.layer for stage in plan)
        rows.append(
            {
                "name": name,
                "family": family,
                "stages": text,
                **bench.score(result.positions, result.scores),
                **bench.cost(deepest),
                "search_ms": bench.search_ms(plan),
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
    return rows


def early_exit_rows(bench: Bench, margins: list[float]) -> list[Row]:
    """Stop after the shallow stage when its top hit leads the second by ``margin``, else rescore at full depth."""
    from funnel.search.plan import Plan
    from funnel.search.run import run_funnel

    depth, early = bench.depth, []
    for layer in range(1, depth):
        for dim in (64,):
            shallow = run_funnel(bench.index, bench.vectors, Plan.parse(f"{layer}:{dim}:200,{layer}:full:100"), 100)
            deep = run_funnel(bench.index, bench.vectors, Plan.parse(f"{layer}:{dim}:200,{depth}:full:100"), 100)
            gap = shallow.scores[:, 0] - shallow.scores[:, 1]
            for margin in margins:
                stop = gap >= margin
                positions = np.where(stop[:, None], shallow.positions, deep.positions)
                scores = np.where(stop[:, None], shallow.scores, deep.scores)
                ms = np.where(stop, bench.encode_ms[:, layer - 1], bench.encode_ms[:, depth - 1])
                gf = np.where(stop, bench.flops[:, layer - 1], bench.flops[:, depth - 1])
                early.append(
                    {
                        "name": f"{layer}:{dim}:200, exit if top-1 leads by ≥ {margin}",
                        "layer": layer,
                        "margin": margin,
                        "exit_rate": round(float(stop.mean()), 3),
                        **bench.score(positions, scores),
                        "encode_gflops": round(float(gf.mean()) / 1e9, 4),
                        "encode_ms": round(float(np.median(ms)), 3),
                        "encode_ms_mean": round(float(ms.mean()), 3),
                    }
                )
    return early


def main() -> None:
    args = parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    started = time.time()
    dims = [int(d) for d in args.dims.split(",")]
    sizes = [int(n) for n in args.sizes.split(",")]
    tag = args.tag or f"{args.dataset.resolve().name}-{Path(args.model).name}"
    bench, encoder = prepare(args, dims, tag)
    rows = plan_rows(bench, dims, sizes)
    early = early_exit_rows(bench, [float(m) for m in args.margins.split(",")])
    reference = rows[0]
    for row in rows + early:
        row["ndcg_kept_pct"] = round(100 * row["ndcg@10"] / reference["ndcg@10"], 1)
        row["encode_time_ratio"] = round(row["encode_ms"] / reference["encode_ms"], 3)
    results = {
        "model": common.shown(args.model),
        "model_metadata": {k: v for k, v in encoder.metadata.items() if k != "loss_log"},
        "dataset": common.shown(args.dataset),
        "documents": bench.index.count,
        "queries": len(bench.query_ids),
        "tokens_per_query": round(float(bench.tokens.mean()), 1),
        "depth": bench.depth,
        "dim": encoder.dim,
        "encode_ms_by_layer": [round(float(np.median(bench.encode_ms[:, i])), 3) for i in range(bench.depth)],
        "rows": rows,
        "early_exit": early,
        "seconds": round(time.time() - started, 1),
    }
    result = common.Result.make(BENCHMARK, common.parameters(args), results)
    common.write_result(RESULTS / f"{tag}.json", result)
    (RESULTS / f"{tag}.md").write_text(_markdown(result))
    print(_markdown(result))


def _markdown(result: common.Result) -> str:
    record = result.results
    ref = record["rows"][0]
    lines = [
        f"# Layer funnel on {Path(record['dataset']).name}: {record['documents']} documents, {record['queries']} queries",
        "",
        f"`{result.command}`",
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
