"""Tune the funnel on a BEIR dataset's cached embeddings; check the plan on the real test queries.

The index is built from the cached corpus embeddings (``python -m benchmarks.embed_cache``), so nothing is
re-encoded but the calibration queries, which are made from the corpus (random 5–10 word
spans of sampled documents), never from the test queries: the test queries stay truly held out. Reports the tuned
plan's recall@k against exact full-dimension search on every test query, its ms/query (single
query at a time, single-threaded FAISS) and FLOPs against exact flat search and against fixed
rescore multipliers (×4, ×10), nDCG@10 from the qrels, and what per-query adaptive widening buys.

    python -m benchmarks.tune_debian                       # ../shared/data/debian, recall 0.99, k 10
    python -m benchmarks.tune_debian --data ../shared/data/cranfield --out benchmarks/results/tune-cranfield

Writes OUT/results.json and OUT/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from benchmarks import common

if TYPE_CHECKING:
    from funnel.indexes.index import Index
    from funnel.models import Encoder
    from funnel.search.plan import Stage
    from funnel.tuning.measure import TuningReference
    from funnel.tuning.tuner import TunedPlan

BENCHMARK = "tune_debian"
CACHE = common.CACHE
Plans = dict[str, "tuple[Stage, ...] | None"]
"""The plans compared, by label; None is exact search."""


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", type=common.dataset_path, default=common.DATASETS["debian"].folder, help="a BEIR folder, or the name of a shared dataset"
    )
    parser.add_argument("--embeddings", type=Path, default=None, help="cached embeddings [default: CACHE/embeddings/all-MiniLM-L6-v2/NAME]")
    parser.add_argument("--index", type=Path, default=None, help="index folder, built if missing [default: CACHE/indexes/NAME-minilm]")
    parser.add_argument("--shortlist-dims", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument("--recall", type=float, default=0.99)
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--calibration-size", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="FAISS threads while timing")
    parser.add_argument("--timing-queries", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds (median reported)")
    parser.add_argument(
        "--user-queries",
        type=Path,
        default=None,
        help="also tune on real-style queries from this JSONL ('query' field), e.g. training pairs disjoint from the test queries",
    )
    parser.add_argument("--out", type=Path, default=common.RESULTS / "tune-debian")
    return parser.parse_args()


def build_index(data: Path, embeddings: Path, target: Path, dims: list[int]) -> None:
    """Index the corpus with its cached vectors, rows aligned with the documents open_corpus keeps."""
    from funnel.corpus import open_corpus
    from funnel.indexes.shortlist import make_spec
    from funnel.models import DEFAULT_MODEL

    vectors = cached_corpus(embeddings)
    cached_ids = corpus_line_ids(data)
    corpus = open_corpus(data / "corpus.jsonl", skip_invalid=True, batch_size=4096)

    def batches() -> Iterator[tuple[Any, np.ndarray]]:
        pointer = 0
        for documents in corpus.batches():
            rows = []
            for doc_id in documents.column("id").to_pylist():
                while pointer < len(vectors) and cached_ids[pointer] != doc_id:  # skipped rows (repeated ids) have no vector
                    pointer += 1
                if pointer >= len(vectors):  # a partial cache: index the documents encoded so far
                    break
                rows.append(pointer)
                pointer += 1
            if rows:
                yield documents.slice(0, len(rows)), np.asarray(vectors[rows], dtype=np.float32)
            if pointer >= len(vectors):
                return

    common.index_from_vectors(
        target,
        batches(),
        dim=vectors.shape[1],
        model=DEFAULT_MODEL,
        shortlists=tuple(make_spec(d) for d in dims),
        source={"path": common.shown(data / "corpus.jsonl"), "embeddings": common.shown(embeddings), "skipped": corpus.skipped},
    )


def cached_corpus(embeddings: Path) -> np.ndarray:
    """The cached corpus vectors, or, while the cache is still being encoded, its finished parts
    (the first documents of the corpus, in file order)."""
    if (embeddings / "corpus.npy").exists():
        return np.load(embeddings / "corpus.npy", mmap_mode="r")
    parts = sorted((embeddings / "corpus.parts").glob("[0-9]*.npy"))
    if not parts:
        raise SystemExit(f"no cached corpus embeddings in {embeddings}: run python -m benchmarks.embed_cache first")
    return np.concatenate([np.load(part) for part in parts])


def corpus_line_ids(data: Path) -> list[str]:
    """The id of every line of corpus.jsonl (repeats too), as the embeddings cache holds them."""
    from funnel.readers import read_jsonl, string_field

    file = data / "corpus.jsonl"
    return [string_field(row, "_id", file, line) for line, row in read_jsonl(file)]


def shown_source(manifest: dict[str, Any]) -> dict[str, Any]:
    """A tuned plan's manifest with its calibration file named relative to the repository."""
    source = manifest["calibration"]["source"]
    if source.startswith("file: "):
        manifest["calibration"]["source"] = "file: " + common.shown(source.removeprefix("file: "))
    return manifest


def timed(index: Index, queries: np.ndarray, plans: Plans, reference: TuningReference, k: int, rounds: int) -> dict[str, float]:
    from funnel.tuning.measure import plan_ms_per_query

    samples: dict[str, list[float]] = {name: [] for name in plans}
    for _ in range(rounds):  # interleaved, so load changes on a shared machine hit every plan alike
        for name, stages in plans.items():
            ms = reference.ms_per_query(queries, k) if stages is None else plan_ms_per_query(index, queries, stages, k)
            samples[name].append(ms)
    return {name: float(np.median(values)) for name, values in samples.items()}


def adaptive_tradeoff(
    index: Index, test: np.ndarray, truth: np.ndarray, dim: int, k: int, narrow: int, wide: int
) -> list[dict[str, float]]:
    """Widen from ``narrow`` to ``wide`` candidates only where the shortlist's score gap between
    rank k and rank ``narrow`` is small; recall and mean candidates per threshold, and a fixed
    shortlist of about the same mean size for comparison."""
    from funnel.tuning.evidence import true_ranks

    scores, positions = index.shortlist(index.stored_queries(test), dim, wide)  # into the index's stored basis
    ranks = true_ranks(positions, truth)
    gap = scores[:, k - 1] - scores[:, narrow - 1]
    rows = []
    for share in (0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0):
        threshold = np.quantile(gap, share) if share < 1 else np.inf
        widen = gap < threshold if share > 0 else np.zeros(len(gap), bool)
        budget = np.where(widen, wide, narrow)
        recall = float((ranks < budget[:, None]).mean())
        mean_n = float(budget.mean())
        fixed = float((ranks < int(round(mean_n))).mean())
        rows.append({"widened_share": float(widen.mean()), "mean_candidates": mean_n, "recall": recall, "fixed_same_mean_recall": fixed})
    return rows


@dataclass
class Tuned:
    """What tuning found: the plan (twice with the same seed), with seed + 1, on user queries."""

    plan: TunedPlan
    runs: list[dict[str, Any]]
    other: TunedPlan
    user_plan: TunedPlan | None
    encode_seconds: float


def open_index(args: argparse.Namespace) -> tuple[Index, Path, int, bool]:
    """The index of the cached embeddings (built once): the index, the embeddings folder, how
    many corpus vectors the cache holds, and whether that is only a first part of the corpus."""
    from funnel.indexes.index import Index

    name = args.data.resolve().name
    embeddings = args.embeddings or CACHE / "embeddings" / common.MODEL_TAG / name
    vectors_available = len(cached_corpus(embeddings))
    subset = not (embeddings / "corpus.npy").exists()
    index_path = args.index or CACHE / "indexes" / (f"{name}-minilm-first{vectors_available}" if subset else f"{name}-minilm")
    if not (index_path / "manifest.json").exists():
        started = time.perf_counter()
        build_index(args.data, embeddings, index_path, args.shortlist_dims)
        print(f"built {index_path} in {time.perf_counter() - started:.0f} s", flush=True)
    return Index.load(index_path), embeddings, vectors_available, subset


def tune_plans(args: argparse.Namespace, index: Index, encoder: Encoder) -> Tuned:
    from funnel.readers import read_jsonl, string_field
    from funnel.tuning import TuneOptions, tune
    from funnel.tuning.calibration import corpus_queries

    options = TuneOptions(seed=args.seed, calibration_size=args.calibration_size, timing_queries=100)
    started = time.perf_counter()
    # Resolved calibration queries are taken as they are: encoded once for both runs.
    calibration = corpus_queries(index, encoder, args.calibration_size, args.seed)
    encode_seconds = round(time.perf_counter() - started, 1)
    runs = []
    for attempt in range(2):  # twice with the same seed: the plan must not change
        started = time.perf_counter()
        plan = tune(index, encoder, args.recall, args.k, calibration, options)
        runs.append({"stages": plan.stages_text, "seconds": round(time.perf_counter() - started, 1)})
        print(f"tuning run {attempt + 1}: {runs[-1]} (+{encode_seconds} s encoding the calibration queries)", flush=True)
    other = tune(index, encoder, args.recall, args.k, None, TuneOptions(**{**options.__dict__, "seed": args.seed + 1}))
    user_plan = None
    if args.user_queries:
        args.out.mkdir(parents=True, exist_ok=True)
        lines = [string_field(row, "query", args.user_queries, line) for line, row in read_jsonl(args.user_queries)]
        picked = np.random.default_rng(args.seed).choice(len(lines), min(args.calibration_size, len(lines)), replace=False)
        query_file = args.out / "user-calibration-queries.txt"
        query_file.write_text("".join(" ".join(lines[i].split()) + "\n" for i in sorted(picked)))
        user_plan = tune(index, encoder, args.recall, args.k, query_file, options)
    return Tuned(plan, runs, other, user_plan, encode_seconds)


@dataclass(frozen=True)
class HeldOutQueries:
    """The judged test queries: cached vectors (q, dim), ids, qrels, and exact search's top-k (q, k)."""

    vectors: np.ndarray
    ids: list[str]
    qrels: dict[str, dict[str, int]]
    truth: np.ndarray

    @classmethod
    def load(cls, data: Path, embeddings: Path, reference: TuningReference, k: int) -> HeldOutQueries:
        from funnel.readers import load_qrels

        vectors = np.load(embeddings / "queries.npy").astype(np.float32)
        ids = json.loads((embeddings / "queries_ids.json").read_text())
        qrels = load_qrels(data / "qrels" / "test.tsv")
        keep = [i for i, query_id in enumerate(ids) if query_id in qrels]
        return cls(vectors[keep], [ids[i] for i in keep], qrels, reference.search(vectors[keep], k))


def compared_plans(index: Index, tuned: Tuned, k: int) -> Plans:
    """Exact search, the tuned plan(s), and fixed rescore multipliers ×4 and ×10 at the tuned plan's first dims and at 64."""
    from funnel.search.plan import Stage

    plan = tuned.plan
    plans: Plans = {"exact flat search": None, f"tuned ({plan.stages_text})": plan.stages}
    if tuned.user_plan is not None:
        plans[f"tuned on user queries ({tuned.user_plan.stages_text})"] = tuned.user_plan.stages
    first_dim = plan.stages[0].resolved_dim(index.dim)
    for dim in sorted({first_dim, 64} & set(index.shortlist_dims)):
        for multiplier in (4, 10):
            plans[f"×{multiplier} at {dim} dims ({dim}:{multiplier * k},full:{k})"] = (Stage(dim, multiplier * k), Stage(None, k))
    return plans


def plan_rows(
    index: Index, plans: Plans, ms: dict[str, float], test: HeldOutQueries, reference: TuningReference, k: int
) -> list[dict[str, Any]]:
    """Each plan on the test queries: recall@k against exact search, nDCG@10, ms per query, FLOPs and bytes, and the ratios to exact."""
    from funnel.search.plan import Plan
    from funnel.tuning.measure import run_plan
    from funnel.tuning.search_space import exact_cost, plan_cost

    corpus_ids = index.ids()
    rows: list[dict[str, Any]] = []
    for label, stages in plans.items():
        if stages is None:
            found = reference.search(test.vectors, k)
            cost = exact_cost(index)
        else:
            found = run_plan(index, test.vectors, stages, k)
            cost = plan_cost(index, stages)
        rank_scores = np.tile(-np.arange(found.shape[1], dtype=np.float32), (len(found), 1))  # nDCG needs the order only
        rows.append(
            {
                "plan": label,
                "stages": "exact" if stages is None else str(Plan.of(stages)),
                "recall_at_k_vs_exact": common.recall_against(found, test.truth, k),
                "ndcg@10": round(common.ndcg(test.ids, found, rank_scores, corpus_ids, test.qrels), 4),
                "ms_per_query": round(ms[label], 3),
                "flops": cost.flops,
                "bytes": cost.bytes,
                "estimated_us": round(cost.estimated_us, 1),
            }
        )
    exact_row = rows[0]
    for row in rows:
        row["ms_vs_exact"] = round(row["ms_per_query"] / exact_row["ms_per_query"], 3)
        row["flops_vs_exact"] = round(row["flops"] / exact_row["flops"], 4)
    return rows


def main() -> None:
    args = parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import faiss

    from funnel.models import Encoder
    from funnel.tuning.measure import TuningReference

    index, embeddings, vectors_available, subset = open_index(args)
    encoder = Encoder.load()
    faiss.omp_set_num_threads(args.threads)
    tuned = tune_plans(args, index, encoder)
    plan = tuned.plan

    reference = TuningReference(index)
    test = HeldOutQueries.load(args.data, embeddings, reference, args.k)
    plans = compared_plans(index, tuned, args.k)
    timing = test.vectors[np.random.default_rng(args.seed).permutation(len(test.vectors))[: args.timing_queries]]
    ms = timed(index, timing, plans, reference, args.k, args.rounds)
    rows = plan_rows(index, plans, ms, test, reference, args.k)
    first_dim = plan.stages[0].resolved_dim(index.dim)
    wide = plan.stages[0].candidates
    adaptive = adaptive_tradeoff(index, test.vectors, test.truth, first_dim, args.k, max(args.k, 4 * args.k), max(wide, 10 * args.k))

    results = {
        "dataset": common.shown(args.data),
        "documents": index.count,
        "subset": f"the first {vectors_available} corpus lines (the cache was still being encoded)" if subset else None,
        "test_queries": len(test.ids),
        "k": args.k,
        "target_recall": args.recall,
        "shortlist_dims": index.shortlist_dims,
        "tuned": plan.to_manifest(),
        "tuned_on_user_queries": shown_source(tuned.user_plan.to_manifest()) if tuned.user_plan else None,
        "tuning_runs_same_seed": tuned.runs,
        "calibration_encoding_seconds": tuned.encode_seconds,
        "tuned_with_seed_plus_1": tuned.other.stages_text,
        "candidates_timed_while_tuning": [m.__dict__ for m in plan.candidates],
        "plans_considered": plan.plans_considered,
        "test": rows,
        "adaptive_widening": adaptive,
    }
    result = common.Result.make(BENCHMARK, common.parameters(args), results, common.machine(faiss_threads=args.threads))
    common.write_result(args.out / "results.json", result)
    (args.out / "README.md").write_text(markdown(result))
    print(markdown(result))


def markdown(result: common.Result) -> str:
    r, record = result.results, result.machine
    t = r["tuned"]
    lines = [
        f"# Tuning the funnel on {Path(r['dataset']).name}: recall@{r['k']} ≥ {r['target_recall']} against exact search",
        "",
        f"`{result.command}`",
        "",
        *(
            [
                f"- **Subset:** {r['subset']}; recall is against exact search over this subset, and nDCG@10 counts "
                "relevant documents outside it as missed."
            ]
            if r.get("subset")
            else []
        ),
        f"- {r['documents']} documents, all-MiniLM-L6-v2 (384 dims, float16 vectors), flat shortlists at {r['shortlist_dims']} dims.",
        f"- Calibration: {t['calibration']['queries']} queries, {t['calibration']['source']} "
        f"(fit {t['calibration']['fit']}, held out {t['calibration']['holdout']}, seed {t['calibration']['seed']}); "
        f"the {r['test_queries']} real test queries were not used for tuning.",
        f"- Selection: {t['selection']}; {r['plans_considered']} plans considered.",
        f"- **Tuned plan: `{t['stages']}`** — calibration recall fit {t['measured']['recall_fit']:.4f} "
        f"(lower bound {t['measured']['recall_fit_lower']:.4f}), held-out {t['measured']['recall']:.4f}.",
        f"- Same seed twice: {', '.join(x['stages'] + ' (' + str(x['seconds']) + ' s)' for x in r['tuning_runs_same_seed'])}; "
        f"seed + 1: {r['tuned_with_seed_plus_1']}; encoding the calibration queries took {r['calibration_encoding_seconds']} s more.",
    ]
    lines += [f"- Note: {note}" for note in t.get("notes", [])]
    u = r.get("tuned_on_user_queries")
    if u:
        lines.append(
            f"- Also tuned on user queries: {u['calibration']['queries']} queries ({u['calibration']['source']}) → "
            f"`{u['stages']}` (held-out calibration recall {u['measured']['recall']:.4f})."
        )
    lines += [
        "",
        f"## On the {r['test_queries']} real test queries",
        "",
        f"| plan | recall@{r['k']} vs exact | nDCG@10 | ms/query | × exact ms | MFLOPs | × exact FLOPs |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in r["test"]:
        lines.append(
            f"| {row['plan']} | {row['recall_at_k_vs_exact']:.4f} | {row['ndcg@10']:.4f} | {row['ms_per_query']:.2f} | "
            f"{row['ms_vs_exact']:.2f} | {row['flops'] / 1e6:.2f} | {row['flops_vs_exact']:.3f} |"
        )
    lines += [
        "",
        "ms/query: one query at a time, FAISS single-threaded, median of interleaved rounds on a shared "
        f"machine (load average {record['load_average'][0]:.1f} on {record.get('cores', record.get('cpus'))} CPUs): compare ratios, not absolutes.",
        "",
        "## Per-query adaptive widening (test queries, analysis only)",
        "",
        "Shortlist narrow by default; widen only queries whose shortlist score gap between rank k and the narrow cut is smallest.",
        "",
        "| widened share | mean candidates | recall | fixed shortlist of the same mean size |",
        "|---|---|---|---|",
    ]
    for row in r["adaptive_widening"]:
        lines.append(
            f"| {row['widened_share']:.0%} | {row['mean_candidates']:.0f} | {row['recall']:.4f} | {row['fixed_same_mean_recall']:.4f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
