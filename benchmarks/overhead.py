"""funnel's fixed cost per query at 10k documents, this code against an earlier commit, in one run.

    python -m benchmarks.overhead --baseline 14038c0

One query at a time through :func:`funnel.search.run.run_funnel` (plan ``64:100,full:10`` over a
64-dim flat shortlist, 10,000 real MiniLM vectors of package summaries, real query texts' vectors)
and, beside it, the bare FAISS call that plan's first stage makes. The fixed cost is the
difference: everything funnel adds around FAISS (plan checks, rotation, gathering and rescoring
100 stored rows, sorting, bookkeeping). Fetching the 10 hits' documents is timed apart.

Each code version runs in its own process (the baseline from a temporary ``git worktree`` of the
given commit), alternating baseline and current several times so that a change in the machine's
load falls on both. Writes ``benchmarks/results/overhead/overhead.json``, ``README.md`` and a plot.

The child (``--child``) runs under the other commit's ``funnel`` and ``benchmarks`` (its tree
first on ``PYTHONPATH``), so it imports nothing from ``benchmarks`` and finds the plan API where
that commit has it.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from benchmarks.common import Result

BENCHMARK = "overhead"
PLAN = "64:100,full:10"
# (name, runs this tree's code, extra child flags): the earlier commit, today's default (two-stage
# plans compiled into one FAISS call), and today's Python stages (`run_funnel(..., compiled=False)`).
VERSIONS = (("baseline", False, ()), ("current", True, ()), ("current, Python stages", True, ("--python-stages",)))
OUT = Path(__file__).resolve().parent / "results" / "overhead"


def plan_api() -> tuple[Callable[[str], Any], Callable[..., Any]]:
    """(parse a plan, run_funnel) of the funnel this process imports: ``funnel.search`` since
    the plan was parsed once into a ``Plan``, ``funnel.stages`` at earlier commits."""
    try:
        plan = importlib.import_module("funnel.search.plan")
        run = importlib.import_module("funnel.search.run")
        return plan.Plan.parse, run.run_funnel
    except ImportError:
        stages = importlib.import_module("funnel.stages")
        return stages.parse_stages, stages.run_funnel


def child(vectors: Path, texts: Path, queries: Path, rounds: int, python_stages: bool) -> dict[str, Any]:
    """Run inside one code version (its ``funnel`` first on sys.path): time every query ``rounds`` times."""
    import faiss
    import pyarrow as pa

    import funnel
    from funnel.corpus import DOCUMENT_SCHEMA
    from funnel.indexes.builder import IndexConfig, write_index
    from funnel.indexes.index import Index
    from funnel.indexes.shortlist import make_spec

    parse, run_funnel = plan_api()

    if not Path(funnel.__file__).resolve().is_relative_to(Path.cwd().resolve()):
        raise SystemExit("the child imported funnel from another tree than the one it was started in")
    faiss.omp_set_num_threads(1)
    docs = np.load(vectors).astype(np.float32)
    names = json.loads(texts.read_text())
    query_vectors = np.load(queries).astype(np.float32)
    query_vectors /= np.linalg.norm(query_vectors, axis=1, keepdims=True)
    ids = pa.array([f"d{i}" for i in range(len(docs))])
    batch = pa.RecordBatch.from_arrays(
        [ids, pa.nulls(len(docs), pa.string()), pa.array(names), pa.nulls(len(docs), pa.string())], schema=DOCUMENT_SCHEMA
    )
    with tempfile.TemporaryDirectory() as folder:
        path = write_index(
            iter([(batch, docs)]),
            Path(folder) / "index",
            model="bench-vectors",
            dim=docs.shape[1],
            config=IndexConfig(shortlists=(make_spec(64),), rotation="none"),
        )
        index = Index.load(path)
        if python_stages:
            from funnel.search.run import compile_plans

            compile_plans(index, False)
        stages = parse(PLAN)
        flat = index.segments[0].shortlists[64][1]
        prefixes = query_vectors[:, :64] / np.linalg.norm(query_vectors[:, :64], axis=1, keepdims=True)
        total, bare, fetch = (np.zeros((rounds, len(query_vectors))) for _ in range(3))
        for query in query_vectors[:5]:  # warm-up: page cache, lazy imports
            index.documents([int(p) for p in run_funnel(index, query[None], stages, 10).positions[0]])
        for round_ in range(rounds):
            for number, query in enumerate(query_vectors):
                began = time.perf_counter()
                result = run_funnel(index, query[None], stages, 10)
                middle = time.perf_counter()
                index.documents([int(p) for p in result.positions[0]])
                ended = time.perf_counter()
                flat.search(prefixes[number : number + 1], 100)
                total[round_, number], fetch[round_, number] = middle - began, ended - middle
                bare[round_, number] = time.perf_counter() - ended
    per_query = {name: np.median(values, axis=0) * 1000 for name, values in (("search", total), ("faiss", bare), ("fetch", fetch))}
    return {
        "search_ms": float(np.median(per_query["search"])),
        "faiss_ms": float(np.median(per_query["faiss"])),
        "fixed_ms": float(np.median(per_query["search"] - per_query["faiss"])),
        "fetch_ms": float(np.median(per_query["fetch"])),
        "queries": len(query_vectors),
        "rounds": rounds,
    }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default="14038c0", help="the earlier commit to measure against (default: before issue 15)")
    parser.add_argument("--repeats", type=int, default=3, help="alternations of baseline and current processes")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5, help="times each query is timed per process")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--child", nargs=3, type=Path, metavar=("VECTORS", "TEXTS", "QUERIES"), help=argparse.SUPPRESS)
    parser.add_argument("--python-stages", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args()


def run_child(tree: Path, folder: Path, rounds: int, flags: tuple[str, ...]) -> dict[str, Any]:
    """One child process over the code of ``tree`` (its ``funnel`` first on the path)."""
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1"}
    inputs = [str(folder / "docs.npy"), str(folder / "texts.json"), str(folder / "queries.npy")]
    out = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--rounds", str(rounds), *flags, "--child", *inputs],
        check=True,
        capture_output=True,
        text=True,
        env=env,
        cwd=tree,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_versions(folder: Path, baseline: str, repeats: int, rounds: int) -> tuple[str, dict[str, list[dict[str, Any]]]]:
    """The baseline commit (checked out in a temporary worktree) and this tree, alternating
    ``repeats`` times: the baseline's full commit and each version's child results."""
    from benchmarks import common

    baseline_tree = folder / "baseline"
    subprocess.run(
        ["git", "-C", str(common.REPO), "worktree", "add", "--detach", str(baseline_tree), baseline], check=True, capture_output=True
    )
    commit = subprocess.run(
        ["git", "-C", str(baseline_tree), "rev-parse", "HEAD"], check=True, capture_output=True, text=True
    ).stdout.strip()
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name, _, _ in VERSIONS}
    try:
        for repeat in range(repeats):
            for name, current, flags in VERSIONS:
                runs[name].append(run_child(common.REPO if current else baseline_tree, folder, rounds, flags))
                print(
                    f"repeat {repeat + 1} {name:8s} " + " ".join(f"{k}={v:.3f}" for k, v in runs[name][-1].items() if k.endswith("_ms")),
                    flush=True,
                )
    finally:
        subprocess.run(
            ["git", "-C", str(common.REPO), "worktree", "remove", "--force", str(baseline_tree)], check=False, capture_output=True
        )
    return commit, runs


def measure(args: argparse.Namespace) -> Result:
    from benchmarks import common
    from benchmarks.recall_latency import corpus

    documents, queries = corpus.minilm_vectors()
    texts = corpus.corpus_texts()[: len(documents)]
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as work:
        folder = Path(work)
        np.save(folder / "docs.npy", documents)
        np.save(folder / "queries.npy", queries[np.random.default_rng(corpus.SEED).permutation(len(queries))[: args.queries]])
        (folder / "texts.json").write_text(json.dumps(texts))
        commit, runs = run_versions(folder, args.baseline, args.repeats, args.rounds)
    summary = {
        name: {key: float(np.median([r[key] for r in rows])) for key in rows[0] if key.endswith("_ms")} for name, rows in runs.items()
    }
    results = {
        "plan": PLAN,
        "documents": len(documents),
        "vectors": "all-MiniLM-L6-v2 (real), PyPI+npm package summaries; queries: real query texts of cranfield, scifact, debian",
        "baseline_commit": commit,
        "summary_median_over_processes": summary,
        "fixed_cost_ratio_current_over_baseline": summary["current"]["fixed_ms"] / summary["baseline"]["fixed_ms"],
        "fixed_cost_ratio_python_stages_over_baseline": summary["current, Python stages"]["fixed_ms"] / summary["baseline"]["fixed_ms"],
        "runs": runs,
        "load_average_start_end": [load_before, os.getloadavg()],
    }
    return common.Result.make(BENCHMARK, common.parameters(args, drop=("child", "python_stages")), results)


def main() -> None:
    args = parse_args()
    if args.child:
        vectors, texts, queries = args.child
        print(json.dumps(child(vectors, texts, queries, args.rounds, args.python_stages)))
        return
    from benchmarks import common

    result = measure(args)
    common.write_result(args.out / "overhead.json", result)
    write_readme(args.out, result)
    summary = result.results["summary_median_over_processes"]
    plot(args.out, summary)
    print(
        f"fixed cost per query: {summary['baseline']['fixed_ms']:.3f} → {summary['current']['fixed_ms']:.3f} ms "
        f"({result.results['fixed_cost_ratio_current_over_baseline']:.2f}×); wrote {common.shown(args.out)}"
    )


def write_readme(out: Path, result: Result) -> None:
    report = result.results
    summary = report["summary_median_over_processes"]
    rows = [
        f"| {name} | {s['search_ms']:.3f} | {s['faiss_ms']:.3f} | **{s['fixed_ms']:.3f}** | {s['fetch_ms']:.3f} |"
        for name, s in summary.items()
    ]
    load = report["load_average_start_end"]
    text = f"""# Fixed cost per query at 10k documents

`{result.command}`

One query at a time through `run_funnel` with plan `{report["plan"]}` (64-dim flat shortlist, 100 candidates rescored at
384 dims) over {report["documents"]:,} real MiniLM vectors; FAISS on one thread. *Fixed* = funnel's search minus the bare
FAISS call its first stage makes, per query, median over queries; each figure is the median over
{len(report["runs"]["current"])} processes per version, baseline and current alternating. Baseline: commit
`{report["baseline_commit"][:10]}`. Load average (1 min) at start / end: {load[0][0]:.2f} / {load[1][0]:.2f} on 2 cores.

| code | search ms | FAISS ms | fixed ms | fetch 10 documents ms |
|---|---:|---:|---:|---:|
{chr(10).join(rows)}

Fixed cost now / before: **{report["fixed_cost_ratio_current_over_baseline"]:.2f}×** (the default: a two-stage plan runs
as one FAISS call, `funnel/search/compiled.py`); with the Python stages (`run_funnel(..., compiled=False)`):
**{report["fixed_cost_ratio_python_stages_over_baseline"]:.2f}×**.
"""
    (out / "README.md").write_text(text)


def plot(out: Path, summary: dict[str, dict[str, float]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(summary)
    fig, ax = plt.subplots(figsize=(5, 3))
    faiss_ms = [summary[n]["faiss_ms"] for n in names]
    fixed = [summary[n]["fixed_ms"] for n in names]
    ax.barh(names, faiss_ms, label="FAISS shortlist search")
    ax.barh(names, fixed, left=faiss_ms, label="funnel's fixed cost")
    ax.set_xlabel("ms per query (10k documents, plan 64:100,full:10)")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "overhead.png", dpi=120)


if __name__ == "__main__":
    main()
