"""What the integrity contract costs: opening a 1M-document index with every byte checked
(``full``, the default) against the sampled check (sizes and each file's first and last 64 KiB).

    python -m benchmarks.integrity --documents 1000000

The index holds 384-dim float16 vectors (what MiniLM gives), a 64-dim flat shortlist and short
documents; hashing costs by bytes, not by what they say, so the vectors are seeded random unit
rows. Each load runs in a fresh process (nothing verified before), alternating full and sampled
``--rounds`` times with the files in the page cache (a server's reload; a cold disk adds its read
time to both). Also timed: a reload after one ``add`` in the same process (only the new segment is
hashed). Writes ``benchmarks/results/integrity/integrity.json`` and ``README.md``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import common

BENCHMARK = "integrity"
OUT = common.RESULTS / "integrity"
DIM = 384
BATCH = 50_000


def batches(documents: int, seed: int, start: int = 0) -> Iterator[tuple[Any, np.ndarray]]:
    """``documents`` seeded random unit rows with short texts, ids from ``doc-<start>``, in batches."""
    rng = np.random.default_rng(seed)
    for offset in range(0, documents, BATCH):
        size = min(BATCH, documents - offset)
        vectors = rng.standard_normal((size, DIM), dtype=np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        ids = [f"doc-{start + offset + i}" for i in range(size)]
        texts = [f"package {start + offset + i}: a short description of what it does and for whom" for i in range(size)]
        yield common.document_batch(ids, vectors, texts)


def build(path: Path, documents: int, seed: int) -> None:
    from funnel.indexes.shortlist import make_spec

    common.index_from_vectors(
        path, batches(documents, seed), dim=DIM, model="random-unit-rows", shortlists=(make_spec(64),), rotation="none"
    )


def child(path: Path, integrity: str, reload_after_add: bool) -> dict[str, float]:
    """One fresh process: time the load; optionally add a small segment and time the reload."""
    from funnel.indexes.index import Index
    from funnel.indexes.updates import add_documents

    start = time.perf_counter()
    index = Index.load(path, use_gpu=False, integrity=integrity)
    out = {"load_s": time.perf_counter() - start, "documents": float(index.count)}
    if reload_after_add:
        add_documents(path, batches(1000, seed=99, start=10_000_000 + index.rows))  # new ids on every call
        start = time.perf_counter()
        Index.load(path, use_gpu=False, integrity=integrity)
        out["reload_after_add_s"] = time.perf_counter() - start
    return out


def run_child(path: Path, integrity: str, reload_after_add: bool = False) -> dict[str, float]:
    args = [sys.executable, "-m", "benchmarks.integrity", "--child", str(path), "--integrity", integrity]
    args += ["--reload-after-add"] if reload_after_add else []
    result = subprocess.run(args, cwd=common.REPO, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--documents", type=int, default=1_000_000, help="index size (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=3, help="loads per check, alternating (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the vectors (default: %(default)s)")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--integrity", default="full", help=argparse.SUPPRESS)
    parser.add_argument("--reload-after-add", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args()


def measure(documents: int, rounds: int, seed: int) -> dict[str, Any]:
    """Build the index in a temp folder, then time opens in fresh processes, full and sampled alternating."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "index"
        started = time.perf_counter()
        build(path, documents, seed)
        build_s = time.perf_counter() - started
        sizes = {p.name: p.stat().st_size for p in sorted((path / "seg-000000").iterdir()) if not p.name.startswith(".")}
        loads: dict[str, list[float]] = {"full": [], "sampled": []}
        for _ in range(rounds):
            for level in loads:
                loads[level].append(run_child(path, level)["load_s"])
        reload = {level: run_child(path, level, reload_after_add=True) for level in ("sampled", "full")}
    medians = {level: statistics.median(times) for level, times in loads.items()}
    total = sum(sizes.values())
    return {
        "documents": documents,
        "dim": DIM,
        "bytes": sizes,
        "total_bytes": total,
        "build_s": round(build_s, 1),
        "load_s": {level: [round(t, 3) for t in times] for level, times in loads.items()},
        "median_load_s": {level: round(t, 3) for level, t in medians.items()},
        "full_over_sampled": round(medians["full"] / medians["sampled"], 2),
        "full_extra_s": round(medians["full"] - medians["sampled"], 3),
        "hashed_gb_per_s": round(total / max(medians["full"] - medians["sampled"], 1e-9) / 1e9, 2),
        "reload_after_add_s": {level: round(r["reload_after_add_s"], 3) for level, r in reload.items()},
    }


def readme(result: common.Result) -> str:
    figures = result.results
    loads, medians = figures["load_s"], figures["median_load_s"]
    return (
        "# Integrity check at open\n\n"
        f"`{result.command}`\n\n"
        f"{figures['documents']:,} documents, {DIM}-dim float16 vectors, a 64-dim flat shortlist: {figures['total_bytes'] / 1e6:,.0f} MB in the segment.\n\n"
        "| check | median open (s) | loads (s) | reload after one add (s) |\n|---|---:|---:|---:|\n"
        + "".join(
            f"| {level} | {medians[level]:.3f} | {', '.join(f'{t:.3f}' for t in loads[level])} | {figures['reload_after_add_s'][level]:.3f} |\n"
            for level in loads
        )
        + f"\nFull costs {figures['full_extra_s']:.2f} s more per open ({figures['full_over_sampled']}× the sampled open; "
        f"{figures['hashed_gb_per_s']} GB/s hashed); a reload after an add hashes only the new segment.\n"
    )


def main() -> None:
    args = parse_args()
    if args.child is not None:
        print(json.dumps(child(args.child, args.integrity, args.reload_after_add)))
        return
    figures = measure(args.documents, args.rounds, args.seed)
    result = common.Result.make(BENCHMARK, common.parameters(args, drop=("child", "integrity", "reload_after_add")), figures)
    common.write_result(OUT / "integrity.json", result)
    (OUT / "README.md").write_text(readme(result))
    print(json.dumps({k: figures[k] for k in ("median_load_s", "full_over_sampled", "reload_after_add_s")}))


if __name__ == "__main__":
    main()
