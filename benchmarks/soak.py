"""Soak: one writer changes an index as fast as it can while readers load and search it.

The writer process adds, deletes and compacts in a loop (bounded by ``--seconds``) and logs the
live ids of every version it publishes. Reader processes loop ``Index.load`` + search (half of
them reload only when ``changed_on_disk`` says so, like a server). Every answer is then checked
against an exact search over that version's live documents, computed afresh from the log: an
answer from a mix of versions, or any error, counts. Vectors are a fixed function of the id,
stored as float32, and the shortlist keeps every row, so the serial answer is unambiguous.

    python -m benchmarks.soak --seconds 60 --readers 3 --output benchmarks/results/soak/soak.json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import shutil
import sys
import tempfile
import time
import traceback
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import common

BENCHMARK = "soak"
DIM = 32
SHORTLIST_DIM = 16
START_DOCUMENTS = 200
K = 10
QUERIES = 4


def vector_of(doc_id: str) -> np.ndarray:
    """The document's vector, a fixed function of its id (so any version can be recomputed)."""
    rng = np.random.default_rng(zlib.crc32(doc_id.encode()))
    vector = rng.normal(size=DIM).astype(np.float32)
    return vector / np.linalg.norm(vector)


def batch_of(ids: list[str]) -> tuple[Any, np.ndarray]:
    return common.document_batch(ids, np.stack([vector_of(i) for i in ids]), [f"text {i}" for i in ids])


def query_vectors() -> np.ndarray:
    return np.stack([vector_of(f"query-{n}") for n in range(QUERIES)])


def writer(path: Path, log: Path, deadline: float, seed: int) -> None:
    from funnel.indexes.manifest import read_manifest
    from funnel.indexes.updates import add_documents, compact_index, delete_documents

    rng = np.random.default_rng(seed)
    live = [f"doc-{n}" for n in range(START_DOCUMENTS)]
    next_id = START_DOCUMENTS
    with log.open("a") as out:
        while time.time() < deadline:
            choice = rng.random()
            if choice < 0.45 or len(live) < 50:
                new = [f"doc-{next_id + n}" for n in range(5)]
                next_id += 5
                add_documents(path, [batch_of(new)])
                live += new
            elif choice < 0.9:
                gone = list(rng.choice(live, size=3, replace=False))
                delete_documents(path, gone)
                live = [i for i in live if i not in set(gone)]
            else:
                compact_index(path)
            generation = read_manifest(path).generation
            out.write(json.dumps({"generation": generation, "live": live}) + "\n")
            out.flush()


def reader(path: Path, results: Path, deadline: float, reload_only_on_change: bool) -> None:
    from funnel.indexes.index import Index
    from funnel.search.plan import Plan, Stage
    from funnel.search.run import run_funnel

    queries = query_vectors()
    records: list[dict[str, Any]] = []
    errors: list[str] = []
    index = None
    while time.time() < deadline:
        try:
            if index is None or not reload_only_on_change or index.changed_on_disk():
                index = Index.load(path)
            plan = Plan((Stage(SHORTLIST_DIM, max(index.rows, K)), Stage(None, K)))
            result = run_funnel(index, queries, plan, K)
            ids = index.ids()
            records.append(
                {
                    "generation": index.version,
                    "ids": [[ids[p] for p in row if p >= 0] for row in result.positions.tolist()],
                    "scores": result.scores.tolist(),
                }
            )
        except Exception:  # every error is a finding: count it and go on
            errors.append(traceback.format_exc(limit=3))
    results.write_text(json.dumps({"records": records, "errors": errors}))


def serial_answer(live: list[str], queries: np.ndarray) -> tuple[list[list[str]], np.ndarray]:
    vectors = np.stack([vector_of(i) for i in live])
    scores = queries @ vectors.T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :K]
    return [[live[j] for j in row] for row in order], np.take_along_axis(scores, order, axis=1)


def same_answer(ids: list[str], scores: list[float], want_ids: list[str], want_scores: np.ndarray, tolerance: float = 1e-5) -> bool:
    """Equal rankings, where documents whose scores tie within ``tolerance`` may swap."""
    if len(ids) != len(want_ids) or not np.allclose(scores, want_scores, atol=tolerance):
        return False
    return all(a == b or abs(scores[n] - float(want_scores[n])) <= tolerance and b in ids for n, (a, b) in enumerate(zip(ids, want_ids)))


def start(seconds: float, readers: int, workdir: Path) -> tuple[list[Path], Path, int | None, float]:
    """Write the first version, run the writer and the readers to the deadline: the readers'
    output files, the writer's log, its exit code and the wall seconds."""
    from funnel.indexes.shortlist import make_spec

    path = workdir / "index"
    first = [f"doc-{n}" for n in range(START_DOCUMENTS)]
    common.index_from_vectors(
        path, [batch_of(first)], dim=DIM, model="soak-vectors", shortlists=(make_spec(SHORTLIST_DIM),), vector_dtype="float32"
    )
    log = workdir / "writer.jsonl"
    log.write_text(json.dumps({"generation": 0, "live": first}) + "\n")
    context = multiprocessing.get_context("spawn")
    deadline = time.time() + seconds + 5  # the processes start within the first seconds
    processes = [context.Process(target=writer, args=(path, log, deadline, 0))]
    outputs = [workdir / f"reader-{n}.json" for n in range(readers)]
    processes += [context.Process(target=reader, args=(path, out, deadline, n % 2 == 1)) for n, out in enumerate(outputs)]
    started = time.perf_counter()
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=seconds + 120)
        if process.is_alive():
            process.kill()
    return outputs, log, processes[0].exitcode, time.perf_counter() - started


def check(outputs: list[Path], log: Path) -> dict[str, Any]:
    """Every reader's answer against the serial answer of the version it names."""
    versions = {row["generation"]: row["live"] for row in map(json.loads, log.read_text().splitlines())}
    queries = query_vectors()
    serial = {g: serial_answer(live, queries) for g, live in versions.items()}
    answers = mixed = 0
    errors: list[str] = []
    seen: set[int] = set()
    for out in outputs:
        if not out.exists():
            errors.append(f"{out.name}: the reader did not finish")
            continue
        data = json.loads(out.read_text())
        errors += data["errors"]
        for record in data["records"]:
            answers += 1
            seen.add(record["generation"])
            want = serial.get(record["generation"])
            ok = want is not None and all(
                same_answer(ids, scores, want_ids, want_scores)
                for ids, scores, want_ids, want_scores in zip(record["ids"], record["scores"], want[0], want[1])
            )
            mixed += not ok
    return {
        "writes": len(versions) - 1,
        "answers": answers,
        "versions_seen_by_readers": len(seen),
        "errors": len(errors),
        "error_samples": errors[:3],
        "mixed_answers": mixed,
    }


def run(seconds: float, readers: int, workdir: Path) -> dict[str, Any]:
    outputs, log, writer_exit, wall = start(seconds, readers, workdir)
    checked = check(outputs, log)
    return {
        "seconds": seconds,
        "wall_seconds": round(wall, 1),
        "readers": readers,
        "writes": checked.pop("writes"),
        "writer_exit_code": writer_exit,
        **checked,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="how long the writer writes")
    parser.add_argument("--readers", type=int, default=3, help="reader processes")
    parser.add_argument("--output", type=Path, help="write the summary here as JSON")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="funnel-soak-"))
    try:
        summary = run(args.seconds, args.readers, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if args.output:
        common.write_result(args.output, common.Result.make(BENCHMARK, common.parameters(args), summary))
    print(json.dumps(summary, indent=2, default=str))
    sys.exit(0 if summary["errors"] == 0 and summary["mixed_answers"] == 0 and summary["writer_exit_code"] == 0 else 1)


if __name__ == "__main__":
    main()
