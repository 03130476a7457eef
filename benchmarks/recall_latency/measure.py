"""Measure like a benchmark: recall against exact search, and latency with warm-up and repetition.

Recall is :func:`benchmarks.common.recall_against` and every latency a
:class:`funnel.evaluation.timing.Timing` (:func:`benchmarks.common.time_calls`), the same
measure and record as funnel's own reports.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from benchmarks.common import Calls, recall_against, time_calls
from benchmarks.recall_latency.methods import SearchFn
from funnel.evaluation.timing import Timing, faiss_threads


def recall(found: np.ndarray, truth: np.ndarray, k: int) -> float:
    """Mean |found[:k] ∩ truth[:k]| / k over queries."""
    return recall_against(found, truth, k)


def batched(
    search: SearchFn, queries: np.ndarray, k: int, params: dict[str, Any], batch: int = 64
) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """Search all queries in batches; returns positions and each full batch's (wall, CPU) seconds.

    CPU is the whole process's (all threads), so it counts every core a batch keeps busy.
    """
    out, seconds = [], []
    for start in range(0, len(queries), batch):
        part = queries[start : start + batch]
        began, began_cpu = time.perf_counter(), time.process_time()
        out.append(search(part, k, params))
        if len(part) == batch:
            seconds.append((time.perf_counter() - began, time.process_time() - began_cpu))
    return np.concatenate(out), seconds


def batch_timing(seconds: list[tuple[float, float]], batch: int) -> Timing:
    """Per-query ms of full batches: median and p95 over batches; QPS from the median batch."""
    wall = np.asarray([s[0] for s in seconds]) * 1000 / batch
    cpu = np.asarray([s[1] for s in seconds]) * 1000 / batch
    return Timing(
        float(np.median(wall)),
        float(np.percentile(wall, 95)),
        float(1000 / np.median(wall)),
        len(seconds),
        float(np.median(cpu)),
        float(np.percentile(cpu, 95)),
    )


def single_timing(
    search: SearchFn, queries: np.ndarray, k: int, params: dict[str, Any], min_seconds: float, max_rounds: int = 20
) -> Timing:
    """One query at a time: 3 warm-up queries, then rounds over ``queries`` until ``min_seconds``.

    Each query's latency is its median over rounds; the median and p95 are over queries. FAISS
    runs on one OpenMP thread here: a one-query search barely parallelizes, and on a shared
    machine an OpenMP barrier waiting for a descheduled thread costs milliseconds.
    """
    with faiss_threads(1):
        calls: Calls = time_calls(
            lambda query: search(query[None], k, params), list(queries), min_seconds=min_seconds, max_rounds=max_rounds, warmup=3
        )
    return calls.per_input()
