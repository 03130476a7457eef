"""Measure like a benchmark: recall against exact search, and latency with warm-up and repetition."""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from benchmarks.recall_latency.methods import SearchFn


@dataclass(frozen=True)
class Timing:
    """Wall-clock ms per query (median, p95, QPS) and CPU ms per query (median over the same calls).

    On a shared machine the wall clock includes waiting for a core; the CPU time does not, and is
    what the same call takes on an idle core (single-query calls run on one thread).
    """

    median_ms: float
    p95_ms: float
    qps: float
    samples: int
    cpu_median_ms: float
    cpu_p95_ms: float


def recall(found: np.ndarray, truth: np.ndarray, k: int) -> float:
    """Mean |found[:k] ∩ truth[:k]| / k over queries."""
    hits = [len(set(f[:k].tolist()) & set(t[:k].tolist())) for f, t in zip(found, truth)]
    return float(np.mean(hits) / k)


def batched(search: SearchFn, queries: np.ndarray, k: int, params: dict, batch: int = 64) -> tuple[np.ndarray, list[tuple[float, float]]]:
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
    wall = np.asarray([s[0] for s in seconds]) * 1000 / batch
    cpu = np.asarray([s[1] for s in seconds]) * 1000 / batch
    return Timing(float(np.median(wall)), float(np.percentile(wall, 95)), float(1000 / np.median(wall)), len(seconds),
                  float(np.median(cpu)), float(np.percentile(cpu, 95)))


def single_timing(search: SearchFn, queries: np.ndarray, k: int, params: dict, min_seconds: float, max_rounds: int = 20) -> Timing:
    """One query at a time: 3 warm-up queries, then rounds over ``queries`` until ``min_seconds``.

    Each query's latency is its median over rounds; the median and p95 are over queries. FAISS
    runs on one OpenMP thread here: a one-query search barely parallelizes, and on a shared
    machine an OpenMP barrier waiting for a descheduled thread costs milliseconds.
    """
    import faiss

    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        return _single_timing(search, queries, k, params, min_seconds, max_rounds)
    finally:
        faiss.omp_set_num_threads(threads)


def _single_timing(search: SearchFn, queries: np.ndarray, k: int, params: dict, min_seconds: float, max_rounds: int) -> Timing:
    for query in queries[:3]:
        search(query[None], k, params)
    rounds: list[list[float]] = []
    cpu_rounds: list[list[float]] = []
    spent = 0.0
    while not rounds or (spent < min_seconds and len(rounds) < max_rounds):
        times, cpu = [], []
        for query in queries:
            began, began_cpu = time.perf_counter(), time.thread_time()
            search(query[None], k, params)
            times.append(time.perf_counter() - began)
            cpu.append(time.thread_time() - began_cpu)
        rounds.append(times)
        cpu_rounds.append(cpu)
        spent += sum(times)
    per_query = np.median(np.asarray(rounds), axis=0) * 1000
    cpu_per_query = np.median(np.asarray(cpu_rounds), axis=0) * 1000
    return Timing(float(np.median(per_query)), float(np.percentile(per_query, 95)), float(1000 / per_query.mean()), len(rounds) * len(queries),
                  float(np.median(cpu_per_query)), float(np.percentile(cpu_per_query, 95)))
