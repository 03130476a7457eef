"""Exact search on a rotated index: FAISS's Panorama scan against the flat scan, same run.

    python -m benchmarks.exact_scan [--scale 100k] [--vectors minilm|static] [--query-set held-out|suite]

The recall-latency suite's real vectors (``benchmarks.recall_latency.corpus``: MiniLM for 10k and
100k package summaries, the static model for up to 1M) go into one funnel index each way they can
be stored: rotated (funnel's default, PCA axes first) and in the model's order (``--rotation
none``). On each, :class:`funnel.search.exact.ExactReference` is built with the flat scan and with
Panorama at several level counts (in the batch of rows funnel would choose at that size, and with
funnel's own level count among them), then queries are searched one per call, one thread (the search
path's setting), scans interleaved round by round: held-out corpus texts (in-distribution, never
indexed; the default) or the suite's real query texts (far from package summaries, so each top-10
is a loose cluster of near ties and Panorama prunes less).

Reported per row: p50/p90 ms, the ratio flat p50 ÷ row p50 in the same run, and whether its top-10
equals the flat scan's (positions, and scores to 1e-5): Panorama must give exact search's answer.
The row funnel picks by itself (:func:`funnel.search.exact.choose_scan`) is marked.

Writes ``benchmarks/results/exact-scan/exact-scan-<scale>-<vectors>-<query set>.json``.
"""

from __future__ import annotations

import argparse
import tempfile
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import (
    RESULTS,
    Result,
    index_from_vectors,
    machine,
    parameters,
    percentiles_ms,
    shown,
    time_calls,
    vector_batches,
    write_result,
)
from benchmarks.recall_latency import corpus

BENCHMARK = "exact_scan"
OUT = RESULTS / "exact-scan"
SCALES = {"10k": 10_000, "100k": 100_000, "1m": 1_000_000}
LEVELS = (4, 8, 12, 16)
K = 10


def main() -> None:
    parser = argparse.ArgumentParser(description="Panorama against the flat scan for exact search on funnel's indexes.")
    parser.add_argument("--scale", choices=tuple(SCALES), default="100k", help="documents (default: 100k)")
    parser.add_argument("--vectors", choices=("minilm", "static"), default="minilm", help="which real vectors (default: minilm)")
    corpus.add_query_set_option(parser, default="held-out")
    parser.add_argument("--queries", type=int, default=300, help="query vectors timed, one per call (default: 300)")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds over the queries (default: 3)")
    parser.add_argument("--workdir", type=Path, default=None, help="where the indexes are written (default: a temporary folder)")
    parser.add_argument("--out", type=Path, default=OUT, help=f"result folder (default: {shown(OUT)})")
    args = parser.parse_args()
    import faiss

    from funnel.indexes.index import Index
    from funnel.search.exact import PANORAMA_BATCH, ExactReference, ScanChoice, choose_scan

    faiss.omp_set_num_threads(1)
    documents, queries, source = corpus.load(args.vectors, SCALES[args.scale], args.query_set)
    query_vectors = np.asarray(queries[: args.queries], dtype=np.float32)
    query_vectors /= np.linalg.norm(query_vectors, axis=1, keepdims=True)
    dim = documents.shape[1]
    rows: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(dir=args.workdir) as scratch:
        for basis, rotation in (("rotated", "pca"), ("model order", "none")):
            path = index_from_vectors(Path(scratch) / basis.replace(" ", "-"), vector_batches(documents), dim=dim, rotation=rotation)
            index = Index.load(path)
            chosen = choose_scan(index.segments[0].vectors, index.count, dim)
            scans = {"flat": ExactReference(index, scan=ScanChoice(False))}
            batch = chosen.batch if chosen.panorama else PANORAMA_BATCH  # the batch funnel would scan in
            for levels in sorted({*LEVELS, chosen.levels} - {0}):
                choice = ScanChoice(True, levels, batch)
                scans[choice.name] = ExactReference(index, scan=choice)
            stored = index.stored_queries(query_vectors).vectors
            timings: dict[str, list[np.ndarray]] = {name: [] for name in scans}
            singles = [stored[row : row + 1] for row in range(len(stored))]
            for _ in range(args.rounds):  # interleaved: load drifts hit every scan alike
                for name, scan in scans.items():
                    calls = time_calls(partial(scan.search_stored, k=K), singles, warmup=3)
                    timings[name].append(calls.wall.ravel())
            flat_scores, flat_positions = scans["flat"].search_stored(stored, K)
            flat_p50 = float(np.median(np.concatenate(timings["flat"])))
            for name, scan in scans.items():
                scores, positions = scan.search_stored(stored, K)
                seconds = np.concatenate(timings[name])
                rows[f"{basis}: {name}"] = {
                    **percentiles_ms(seconds),
                    "speedup_vs_flat": round(flat_p50 / float(np.median(seconds)), 2),
                    "same_top10_as_flat": bool(np.array_equal(positions, flat_positions) and np.allclose(scores, flat_scores, atol=1e-5)),
                    "chosen_by_funnel": name == chosen.name,
                    "batch_rows": scan.scan.batch,
                    "front_energy": round(chosen.front_energy, 3),
                }
                print(f"{basis:12s} {name:22s} {rows[f'{basis}: {name}']}", flush=True)
    result = Result.make(
        BENCHMARK,
        parameters(args),
        {"documents": len(documents), "dim": dim, "k": K, "threads": 1, "source": source, "rows": rows},
        machine(("faiss-cpu",)),
    )
    out = args.out / f"exact-scan-{args.scale}-{args.vectors}-{args.query_set}.json"
    print(f"wrote {shown(write_result(out, result))}")


if __name__ == "__main__":
    main()
