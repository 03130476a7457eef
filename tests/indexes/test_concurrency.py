"""Many readers, one writer: every search answers exactly as a serial search of one version would
(the version it saw), never a mix, while add, delete and compact run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from helpers import documents

from funnel.indexes.index import Index
from funnel.indexes.updates import add_documents, compact_index, delete_documents
from funnel.retriever import Retriever
from funnel.search.plan import Plan
from funnel.search.run import run_funnel

REPO = Path(__file__).resolve().parents[2]
THREADS = 8
SEARCHES = 8  # per thread, at least (each a batch of 5 queries)
STAGES = "64:40,full:10"


def as_tuples(hits_per_query) -> list[list[tuple[str, float]]]:
    return [[(hit.id, round(hit.score, 4)) for hit in hits] for hits in hits_per_query]


def writes(path: Path, query_vectors: np.ndarray):
    """The writer's sequence: add a document equal to each query (changes every answer), delete half of them, compact."""
    yield lambda: add_documents(path, [(documents(len(query_vectors), 5000), query_vectors)])
    yield lambda: delete_documents(path, [f"doc-{5000 + i}" for i in range(0, len(query_vectors), 2)])
    yield lambda: compact_index(path)


@pytest.mark.slow
def test_threads_search_while_a_writer_changes_the_index(index_copy, encoder, cranfield_queries, query_vectors):
    batches = [cranfield_queries[i : i + 5] for i in range(0, 20, 5)]
    retriever = Retriever(Index.load(index_copy), encoder, stages=STAGES)
    answers: dict[int, list] = {}

    def serial_answers() -> None:
        index = Index.load(index_copy)
        serial = Retriever(index, encoder, stages=STAGES)
        answers[index.version] = [as_tuples(serial.search_batch(batch, k=10)) for batch in batches]

    serial_answers()
    started, writer_done = threading.Barrier(THREADS + 1), threading.Event()
    records: list[tuple[int, list]] = []
    errors: list[BaseException] = []

    def reader(number: int) -> None:
        try:
            started.wait()
            done = 0
            while done < SEARCHES or not writer_done.is_set():
                retriever.reload_if_changed()
                which = (number + done) % len(batches)
                records.append((which, as_tuples(retriever.search_batch(batches[which], k=10))))
                done += 1
        except BaseException as exc:  # reported below: a thread's failure must fail the test
            errors.append(exc)

    threads = [threading.Thread(target=reader, args=(n,)) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    started.wait()
    for write in writes(index_copy, query_vectors):
        write()
        serial_answers()
    writer_done.set()
    for thread in threads:
        thread.join(timeout=300)
    assert not errors, errors
    assert len(answers) == 4 and len(records) >= THREADS * SEARCHES
    seen = set()
    for which, result in records:
        matching = {v for v, per_batch in answers.items() if per_batch[which] == result}
        assert matching, f"a search answered like no version of the index: {result[0][:3]}"
        seen |= matching
    assert len(seen) >= 2, "the readers should have seen the index change"
    retriever.reload_if_changed()
    assert retriever.index.version == max(answers)


@pytest.mark.slow
def test_processes_search_while_a_writer_changes_the_index(index_copy, query_vectors, tmp_path):
    queries = tmp_path / "queries.npy"
    np.save(queries, query_vectors[:6])
    stop = tmp_path / "stop"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = Path(__file__).resolve().parent / "search_child.py"
    readers = [
        subprocess.Popen(
            [sys.executable, str(child), str(index_copy), str(queries), str(stop), "20"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    answers = {}

    def serial_answers() -> None:
        index = Index.load(index_copy)
        result = run_funnel(index, query_vectors[:6], Plan.two_stage(64, 30, 10), 10)
        ids = index.ids()
        answers[index.version] = [[ids[p] for p in row] for row in result.positions.tolist()]

    serial_answers()
    for readers_started in [r.stdout.readline() for r in readers]:  # each has searched once
        assert readers_started.startswith("{"), readers_started
    for write in writes(index_copy, query_vectors):
        write()
        serial_answers()
    stop.touch()
    for reader in readers:
        out, err = reader.communicate(timeout=300)
        assert reader.returncode == 0, err[-2000:]
        # Native libraries may write to the same stdout (no newline of their own): read each
        # line's JSON object from its first brace.
        lines = [json.loads(line[line.index("{") :]) for line in out.splitlines() if "{" in line]
        assert lines[-1] == {"final": max(answers)}
        for line in lines[:-1]:
            assert line["ids"] == answers[line["version"]], f"version {line['version']} answered differently from a serial search"
