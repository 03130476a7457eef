"""Past one machine, measured on one: the funnel served by Qdrant beside the local index, and a
Ray build beside the single-process build, on the same real corpus and queries.

    python -m benchmarks.scale --corpus ../shared/data/cranfield --output benchmarks/results/scale

Qdrant runs in qdrant-client's embedded mode (``:memory:``: the client's own Python engine, exact
scoring, no HNSW, no server): its recall shows that the plans run the same funnel; its latency is
that of the embedded engine, not of a Qdrant server. Ray runs locally with --workers encoder
actors; the single-process build encodes with one process. Both builds use the same threads per
encoder (OMP_NUM_THREADS, recorded). Writes scale.json and README.md under --output.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from benchmarks import common

if TYPE_CHECKING:
    from funnel.indexes.builder import IndexConfig
    from funnel.indexes.index import Index
    from funnel.models import Encoder

BENCHMARK = "scale"
PLANS = ["64:100,full:10", "64:200,full:10", "128:100,full:10", "64:300,128:50,full:10"]
T = TypeVar("T")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--corpus",
        type=common.dataset_path,
        default=common.DATASETS["cranfield"].folder,
        help="BEIR folder (corpus.jsonl, queries.jsonl), or the name of a shared dataset",
    )
    parser.add_argument("--queries", type=int, default=225, help="queries from queries.jsonl")
    parser.add_argument("--workers", type=int, default=2, help="Ray encoder actors")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes over the queries (the median is kept)")
    parser.add_argument("--output", type=Path, default=common.RESULTS / "scale")
    return parser.parse_args()


def read_queries(path: Path, limit: int) -> list[str]:
    with path.open() as handle:
        return [json.loads(line)["text"] for line in handle][:limit]


def to_parquet_shards(corpus: Path, folder: Path, shards: int) -> Path:
    """The BEIR corpus as ``shards`` parquet files (the form a Ray build reads)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from funnel.readers import CORPUS_FILE, read_jsonl

    rows = [row for _, row in read_jsonl(corpus / CORPUS_FILE)]
    table = pa.table(
        {"id": [str(r["_id"]) for r in rows], "title": [r.get("title") or None for r in rows], "text": [r.get("text") or "" for r in rows]}
    )
    folder.mkdir(parents=True)
    step = -(-table.num_rows // shards)
    for number in range(shards):
        pq.write_table(table.slice(number * step, step), folder / f"part-{number:03d}.parquet")
    return folder


def timed(fn: Callable[[], T], repeats: int) -> tuple[float, T]:
    """Median seconds of ``repeats`` calls of ``fn`` and the last call's result."""
    seconds, results = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        results.append(fn())
        seconds.append(time.perf_counter() - started)
    return float(np.median(seconds)), results[-1]


def per_query_ms(search: Callable[[np.ndarray], object], vectors: np.ndarray, repeats: int) -> dict[str, float]:
    """One query per call, as a service sees them: median and p95 over all calls of all passes."""
    timing = common.time_calls(lambda row: search(row[None, :]), list(vectors), rounds=repeats).every_call()
    return {"median_ms": round(timing.median_ms, 3), "p95_ms": round(timing.p95_ms, 3)}


def encoder_env(workers: int) -> dict[str, str]:
    """What every encoder process runs with: the caller's thread settings, offline."""
    env = {name: os.environ.get(name, "") for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS") if os.environ.get(name)}
    env.update({"TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"})
    return env


def builds(args: argparse.Namespace, encoder: Encoder, config: IndexConfig, work: Path) -> tuple[Index, dict[str, Any], int]:
    """The single-process build, then Ray over the same documents as parquet shards: the local
    index, the build figures and the number of documents."""
    from funnel.backends.ray_build import RayOptions, build_with_ray, sharded_corpus
    from funnel.corpus import open_corpus
    from funnel.indexes.builder import build_index
    from funnel.indexes.index import Index

    corpus = open_corpus(args.corpus, skip_invalid=True)
    documents = corpus.validate()
    started = time.perf_counter()
    local_path = build_index(corpus, encoder, work / "local", config)
    single_seconds = time.perf_counter() - started
    shards = to_parquet_shards(args.corpus, work / "shards", max(2, args.workers))
    cpus = os.cpu_count() or 2
    options = RayOptions(
        workers=args.workers, num_cpus=cpus, cpus_per_worker=min(1.0, (cpus - 1) / args.workers), env=encoder_env(args.workers)
    )
    started = time.perf_counter()
    ray_path = build_with_ray(sharded_corpus(shards, skip_invalid=True), encoder, work / "ray", config, options)
    ray_seconds = time.perf_counter() - started
    local_index, ray_index = Index.load(local_path), Index.load(ray_path)
    build = {
        "single_process": {"seconds": round(single_seconds, 2), "docs_per_s": round(documents / single_seconds, 1)},
        "ray": {
            "workers": args.workers,
            "seconds": round(ray_seconds, 2),
            "docs_per_s": round(documents / ray_seconds, 1),
            "includes": "Ray start, actor model loads, encoding, writing",
        },
        "ray_over_single_speed": round(single_seconds / ray_seconds, 3),
        "same_ids": local_index.ids() == ray_index.ids(),
        "max_vector_difference": float(np.abs(local_index.all_vectors() - ray_index.all_vectors()).max()),
    }
    return local_index, build, documents


def serving(
    args: argparse.Namespace, encoder: Encoder, local_index: Index, queries: list[str]
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The local index against its export to embedded Qdrant, on the same query vectors: a row
    per plan (recall@10 against exact search, latency), and the export's figures."""
    from funnel.backends.qdrant import ExportOptions, connect, export_index
    from funnel.backends.qdrant_retriever import QdrantIndex, QdrantRetriever
    from funnel.retriever import Retriever
    from funnel.search.exact import exact_search

    vectors = encoder.encode(queries)
    local = Retriever(local_index, encoder)
    client = connect(":memory:")
    started = time.perf_counter()
    export = export_index(local_index, client, ExportOptions("scale"), location=":memory:")
    export_seconds = time.perf_counter() - started
    remote = QdrantRetriever(QdrantIndex(client, "scale", ":memory:"), encoder)
    ids = local_index.ids()
    _, exact_positions = exact_search(local_index, vectors, 10)
    truth = [[ids[p] for p in row] for row in exact_positions]
    rows = [plan_row(plan, local, remote, vectors, ids, truth, args.repeats) for plan in PLANS]
    qdrant = {
        "mode": "embedded (qdrant-client :memory:, exact scoring, no server)",
        "export_seconds": round(export_seconds, 2),
        "points": export.points,
    }
    return rows, qdrant


def plan_row(
    plan: str, local: Any, remote: Any, vectors: np.ndarray, ids: list[str], truth: list[list[str]], repeats: int
) -> dict[str, Any]:
    """One plan on the local index and on Qdrant: recall@10 against ``truth``, batch and per-query latency."""

    def searches(retriever: Any) -> tuple[Callable[[], Any], Callable[[np.ndarray], Any]]:
        return (lambda: retriever.search_vectors(vectors, 10, plan)), (lambda rows: retriever.search_vectors(rows, 10, plan))

    (local_all, local_one), (remote_all, remote_one) = searches(local), searches(remote)
    local_batch, local_result = timed(local_all, repeats)
    remote_batch, remote_result = timed(remote_all, repeats)
    local_ids = [[ids[p] for p in row if p >= 0] for row in local_result.positions]
    row = {
        "plan": plan,
        "local": {
            "recall@10": round(common.recall_against(local_ids, truth, 10), 4),
            "batch_ms_per_query": round(1000 * local_batch / len(vectors), 3),
            **per_query_ms(local_one, vectors, repeats),
        },
        "qdrant_embedded": {
            "recall@10": round(common.recall_against(remote_result.ids, truth, 10), 4),
            "batch_ms_per_query": round(1000 * remote_batch / len(vectors), 3),
            **per_query_ms(remote_one, vectors, repeats),
        },
        "same_top10_as_local": round(float(np.mean([a == b for a, b in zip(local_ids, remote_result.ids)])), 4),
    }
    print(json.dumps(row), file=sys.stderr)
    return row


def main() -> None:
    args = parse_args()
    from funnel.indexes.builder import IndexConfig
    from funnel.indexes.shortlist import make_spec
    from funnel.models import Encoder

    work = Path(tempfile.mkdtemp(prefix="funnel-scale-"))
    load_before = os.getloadavg()
    encoder = Encoder.load()
    config = IndexConfig(shortlists=(make_spec(64), make_spec(128)))
    local_index, build, documents = builds(args, encoder, config, work)
    queries = read_queries(args.corpus / "queries.jsonl", args.queries)
    rows, qdrant = serving(args, encoder, local_index, queries)
    results = {
        "corpus": args.corpus.name,
        "documents": documents,
        "queries": len(queries),
        "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in os.getloadavg()],
        "threads_per_encoder": encoder_env(args.workers).get("OMP_NUM_THREADS", "default"),
        "build": build,
        "qdrant": qdrant,
        "plans": rows,
    }
    result = common.Result.make(BENCHMARK, common.parameters(args), results, common.machine(packages=("qdrant-client", "ray")))
    common.write_result(args.output / "scale.json", result)
    (args.output / "README.md").write_text(report(result))
    shutil.rmtree(work, ignore_errors=True)


def report(outcome: common.Result) -> str:
    result = outcome.results
    build = result["build"]
    lines = [
        "# Qdrant and Ray beside the local funnel",
        "",
        (
            f"`{outcome.command}` — {result['corpus']}, {result['documents']} documents, {result['queries']} queries; "
            f"{outcome.machine['cores']} CPUs, load average {result['load_before'][0]} before and "
            f"{result['load_after'][0]} after (the machine is shared: read ratios, not absolutes)."
        ),
        "",
        "## Serving: recall@10 against exact full-dim search, latency per query",
        "",
        (
            f"Qdrant mode: **{result['qdrant']['mode']}**. The same funnel runs as one Query API request per query "
            "(nested prefetch); the latency is the embedded Python engine's, not a Qdrant server's."
        ),
        "",
        "| plan | local recall@10 | Qdrant recall@10 | same top-10 | local ms (median / p95) | Qdrant ms (median / p95) | batch ms/query local / Qdrant |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in result["plans"]:
        mine, theirs = row["local"], row["qdrant_embedded"]
        lines.append(
            f"| `{row['plan']}` | {mine['recall@10']:.4f} | {theirs['recall@10']:.4f} | {row['same_top10_as_local']:.1%} | "
            f"{mine['median_ms']} / {mine['p95_ms']} | {theirs['median_ms']} / {theirs['p95_ms']} | "
            f"{mine['batch_ms_per_query']} / {theirs['batch_ms_per_query']} |"
        )
    single, ray = build["single_process"], build["ray"]
    lines += [
        "",
        "## Building: single process against a local Ray",
        "",
        "| build | seconds | documents/s |",
        "|---|---|---|",
        f"| single process | {single['seconds']} | {single['docs_per_s']} |",
        f"| Ray, {ray['workers']} encoder actors ({ray['includes']}) | {ray['seconds']} | {ray['docs_per_s']} |",
        "",
        (
            f"Ray / single-process speed: {build['ray_over_single_speed']}×, threads per encoder: "
            f"{result['threads_per_encoder']}. Same ids in the same order: {build['same_ids']}; largest vector difference "
            f"{build['max_vector_difference']:.2g} (float16 storage)."
        ),
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
