"""Soak of a served index: clients search `funnel serve` while a writer changes the folder under it.

    python -m benchmarks.serve_soak --seconds 60 --clients 4

`funnel serve` runs as a child process on 127.0.0.1 over an index of real Debian package
descriptions (MiniLM vectors, encoded once here). Client threads post searches back to back; a
writer in this process adds, deletes, compacts and rebuilds the index with ``--overwrite`` (from
the cached vectors), and once, half-way, publishes a version that cannot be read (manifest.json
replaced by a folder for a few seconds, then put back). Every answer is checked against the writer's
log of the live ids of each version it published:

- ``errors_5xx``: answers with a 5xx status (or no answer);
- ``mixed_or_deleted``: answers holding an id that is not live in the version the answer names;
- ``stale_after_write``: answers naming a version older than one whose write had returned before
  the request was sent (outside the unreadable window, when the server must keep the old one).

Writes ``benchmarks/results/soak/serve-soak.json``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import common
from benchmarks.common import REPO, RESULTS
from benchmarks.serve_load import free_port, start_server, wait_healthy

BENCHMARK = "serve_soak"
OUT = RESULTS / "soak"
CORPUS = REPO / "examples" / "debian-300.parquet"
QUERIES = REPO / "tests" / "data" / "debian" / "queries.jsonl"
K = 10


class Log:
    """The live ids of every version the writer published, and when each write returned."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.live: dict[int, frozenset[str]] = {}
        self.returned: list[tuple[float, int]] = []  # (time the write returned, version it made)
        self.unreadable: tuple[float, float] | None = None

    def publish(self, version: int, live: set[str]) -> None:
        with self.lock:
            self.live[version] = frozenset(live)
            self.returned.append((time.monotonic(), version))

    def newest_before(self, moment: float) -> int:
        with self.lock:
            versions = [version for returned, version in self.returned if returned < moment]
        return max(versions, default=-1)


def write_version(path: Path, batch: tuple[Any, np.ndarray], encoder: Any, overwrite: bool) -> None:
    """A whole new version of the index at ``path`` from one batch of (documents, vectors)."""
    common.index_from_vectors(
        path, [batch], dim=encoder.dim, model=encoder.name, rotation="none", model_metadata=encoder.metadata, overwrite=overwrite
    )


def encode_pool() -> tuple[Any, np.ndarray, Any]:
    """The corpus's documents (DOCUMENT_SCHEMA) and their MiniLM vectors, encoded once."""
    import pyarrow as pa

    from funnel.corpus import document_text, open_corpus
    from funnel.models import Encoder

    documents = pa.Table.from_batches(list(open_corpus(CORPUS).batches()))
    encoder = Encoder.load()
    texts = [document_text(t, x) for t, x in zip(documents.column("title").to_pylist(), documents.column("text").to_pylist())]
    return documents.combine_chunks(), encoder.encode(texts, batch_size=64), encoder


def rows(documents: Any, vectors: np.ndarray, ids: list[str]) -> tuple[Any, np.ndarray]:
    import pyarrow as pa

    index_of = {doc_id: n for n, doc_id in enumerate(documents.column("id").to_pylist())}
    take = [index_of[i] for i in ids]
    return documents.take(pa.array(take)).to_batches()[0], vectors[take]


def writer(path: Path, documents: Any, vectors: np.ndarray, encoder: Any, log: Log, deadline: float, seed: int) -> dict[str, int]:
    from funnel.indexes.lock import writer_lock
    from funnel.indexes.manifest import MANIFEST_FILE, read_manifest
    from funnel.indexes.updates import add_documents, compact_index, delete_documents

    rng = np.random.default_rng(seed)
    pool = documents.column("id").to_pylist()
    live = set(pool[:200])
    counts = {"add": 0, "delete": 0, "compact": 0, "overwrite": 0, "unreadable": 0}
    halfway = time.monotonic() + (deadline - time.monotonic()) / 2
    while time.monotonic() < deadline:
        if log.unreadable is None and time.monotonic() > halfway:
            # A version nobody can read: manifest.json a folder, as a broken writer could leave.
            with writer_lock(path):
                hidden = path / ".manifest.soak"
                os.replace(path / MANIFEST_FILE, hidden)
                (path / MANIFEST_FILE).mkdir()
                started = time.monotonic()
                time.sleep(3.0)
                (path / MANIFEST_FILE).rmdir()
                os.replace(hidden, path / MANIFEST_FILE)
                log.unreadable = (started, time.monotonic())
            counts["unreadable"] += 1
            continue
        choice = rng.random()
        unused = [i for i in pool if i not in live]
        if choice < 0.4 and unused:
            new = list(rng.choice(unused, size=min(5, len(unused)), replace=False))
            add_documents(path, [rows(documents, vectors, new)])
            live |= set(new)
            counts["add"] += 1
        elif choice < 0.8 and len(live) > 50:
            gone = list(rng.choice(sorted(live), size=3, replace=False))
            delete_documents(path, gone)
            live -= set(gone)
            counts["delete"] += 1
        elif choice < 0.93:
            compact_index(path)
            counts["compact"] += 1
        else:
            chosen = sorted(rng.choice(pool, size=150, replace=False))
            write_version(path, rows(documents, vectors, chosen), encoder, overwrite=True)
            live = set(chosen)
            counts["overwrite"] += 1
        log.publish(read_manifest(path).generation, live)
        time.sleep(0.05)
    return counts


def client(port: int, queries: list[str], log: Log, deadline: float, seed: int, results: list[dict[str, Any]]) -> None:
    rng = np.random.default_rng(seed)
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    while time.monotonic() < deadline:
        query = queries[int(rng.integers(len(queries)))]
        sent = time.monotonic()
        record: dict[str, Any] = {"sent": sent, "newest_returned": log.newest_before(sent)}
        try:
            connection.request("POST", "/search", body=json.dumps({"query": query, "k": K}), headers={"Content-Type": "application/json"})
            response = connection.getresponse()
            data = response.read()
            record["status"] = response.status
            if response.status == 200:
                answer = json.loads(data)
                record["version"] = answer["version"]
                record["ids"] = [hit["id"] for hit in answer["results"][0]["hits"]]
            else:
                record["detail"] = data[:300].decode("utf-8", "replace")
        except (OSError, http.client.HTTPException) as exc:
            record["status"] = 0
            record["detail"] = f"{type(exc).__name__}: {exc}"
            connection.close()
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        results.append(record)


def health_during_unreadable(port: int, path: Path, log: Log, deadline: float) -> dict[str, Any] | None:
    """GET /health once while the unreadable version is on disk."""
    while time.monotonic() < deadline:
        if log.unreadable is None and (path / "manifest.json").is_dir():
            time.sleep(1.0)
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            connection.request("GET", "/health")
            response = connection.getresponse()
            return {"status": response.status, "body": json.loads(response.read())}
        time.sleep(0.05)
    return None


def judge(results: list[dict[str, Any]], log: Log) -> dict[str, Any]:
    window = log.unreadable or (float("inf"), float("inf"))
    errors = [r for r in results if r["status"] >= 500 or r["status"] == 0]
    other = [r for r in results if 400 <= r["status"] < 500]
    answered = [r for r in results if r["status"] == 200]
    mixed = [r for r in answered if r["version"] in log.live and not set(r["ids"]) <= log.live[r["version"]]]
    unknown = [r for r in answered if r["version"] not in log.live]
    stale = [r for r in answered if r["version"] < r["newest_returned"] and not (window[0] - 1 <= r["sent"] <= window[1] + 1)]
    return {
        "requests": len(results),
        "answered": len(answered),
        "errors_5xx": len(errors),
        "errors_4xx": len(other),
        "mixed_or_deleted": len(mixed),
        "versions_not_logged": len(unknown),
        "stale_after_write": len(stale),
        "versions_answered": len({r["version"] for r in answered}),
        "examples": [{k: v for k, v in r.items() if k != "ids"} for r in (errors + other + mixed + stale)[:5]],
    }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0, help="how long the writer and clients run (default: %(default)s)")
    parser.add_argument("--clients", type=int, default=4, help="client threads (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the writer's and clients' choices (default: %(default)s)")
    parser.add_argument("--output", type=Path, default=OUT / "serve-soak.json", help="result file (default: %(default)s)")
    return parser.parse_args()


def soak(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    """Serve a first version, then run the clients, the probe and the writer until the deadline; judge every answer."""
    documents, vectors, encoder = encode_pool()
    queries = [json.loads(line)["text"] for line in QUERIES.read_text().splitlines() if line.strip()]
    path = folder / "index"
    log = Log()
    first = documents.column("id").to_pylist()[:200]
    write_version(path, rows(documents, vectors, first), encoder, overwrite=False)
    log.publish(0, set(first))
    port = free_port()
    server = start_server(path, port, 1)
    try:
        wait_healthy(f"http://127.0.0.1:{port}", server, 120.0)
        deadline = time.monotonic() + args.seconds
        results: list[dict[str, Any]] = []
        threads = [
            threading.Thread(target=client, args=(port, queries, log, deadline, args.seed + n, results)) for n in range(args.clients)
        ]
        health: list[dict[str, Any] | None] = [None]
        probe = threading.Thread(target=lambda: health.__setitem__(0, health_during_unreadable(port, path, log, deadline)))
        for thread in (*threads, probe):
            thread.start()
        counts = writer(path, documents, vectors, encoder, log, deadline, args.seed)
        for thread in (*threads, probe):
            thread.join()
    finally:
        server.terminate()
        server.wait(timeout=30)
    return {"writes": counts, "versions_published": len(log.live), "health_while_unreadable": health[0], **judge(results, log)}


def main() -> None:
    args = parse_args()
    folder = Path(tempfile.mkdtemp(prefix="serve-soak-"))
    try:
        results = soak(args, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    common.write_result(args.output, common.Result.make(BENCHMARK, common.parameters(args), results))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
