"""Wall time per query and per stage: each query searched alone, repeated, summarized as median and p95.

Each query runs ``repeats`` times on its own (a batch of one, as a live search would); a query's
time is the median of its repeats, which drops one-off stalls from a busy machine; the set is then
summarized by the median and the 95th percentile over queries. FAISS (and torch, for query
encoding) runs on one thread while timing, so a measurement depends less on how many cores happen
to be free on a shared machine. Encoding is timed on a seeded sample of queries (50 by default):
a model call costs milliseconds where a search costs microseconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from funnel.models import swapped_threads

if TYPE_CHECKING:
    from funnel.indexes.index import Index
    from funnel.layers import LayeredEncoder
    from funnel.search.plan import Stage

TIMING_THREADS = 1


@dataclass(frozen=True)
class Timing:
    """Milliseconds per query over a query set: the one timing record of reports and benchmarks.

    ``median_ms`` and ``p95_ms`` are wall clock over queries; ``qps`` is queries per second and
    ``samples`` how many calls were timed; ``cpu_median_ms`` / ``cpu_p95_ms``, where measured, are
    the CPU time of the same calls (on a shared machine the wall clock includes waiting for a core,
    the CPU time does not).
    """

    median_ms: float
    p95_ms: float
    qps: float | None = None
    samples: int | None = None
    cpu_median_ms: float | None = None
    cpu_p95_ms: float | None = None

    @classmethod
    def of(cls, seconds: np.ndarray, cpu_seconds: np.ndarray | None = None, samples: int | None = None) -> Timing:
        """Summarize per-query seconds (shape (q,)), and their CPU seconds when given; ``samples``
        defaults to q (say more when each value is already a median of repeats)."""
        if len(seconds) == 0:
            return cls(0.0, 0.0, samples=0)
        ms = np.asarray(seconds, dtype=np.float64) * 1000.0
        cpu = None if cpu_seconds is None else np.asarray(cpu_seconds, dtype=np.float64) * 1000.0
        return cls(
            float(np.median(ms)),
            float(np.percentile(ms, 95)),
            float(1000.0 / ms.mean()) if ms.mean() > 0 else None,
            len(ms) if samples is None else samples,
            None if cpu is None else float(np.median(cpu)),
            None if cpu is None else float(np.percentile(cpu, 95)),
        )


@dataclass(frozen=True)
class FunnelTiming:
    """Per-stage and whole-search timings of one configuration."""

    stages: tuple[Timing, ...]
    total: Timing


def faiss_threads(count: int) -> AbstractContextManager[None]:
    """Run FAISS on ``count`` threads inside the block, restoring the setting after."""
    import faiss

    return swapped_threads(faiss.omp_get_max_threads, faiss.omp_set_num_threads, count)


def time_funnel(
    index: Index,
    queries: np.ndarray | Mapping[int | str | None, np.ndarray],
    stages: Sequence[Stage],
    k: int,
    repeats: int = 3,
    *,
    texts: Sequence[str] | None = None,
) -> FunnelTiming:
    """Time ``run_funnel`` for each query (q, dim) alone, ``repeats`` times. ``queries``: full-model
    vectors, or a mapping {layer: vectors} for stages that name layers (search time only);
    ``texts``: the query texts, for stages that add BM25 candidates (their search is timed too).

    The total is the default path's; a two-stage plan that runs as one FAISS call there
    (:mod:`funnel.search.compiled`) has no per-stage times, so those come from the same plan
    run through the Python stages.
    """
    from funnel.search.compiled import compilable
    from funnel.search.plan import Plan
    from funnel.search.run import run_funnel

    plan = Plan.of(stages)  # parsed once for every timed run
    fused = compilable(index, plan)

    def rows(start: int, stop: int) -> np.ndarray | dict[int | str | None, np.ndarray]:
        if isinstance(queries, Mapping):
            return {layer: vectors[start:stop] for layer, vectors in queries.items()}
        return queries[start:stop]

    count = len(next(iter(queries.values()))) if isinstance(queries, Mapping) else len(queries)
    repeats = max(1, repeats)
    per_stage = np.zeros((count, repeats, len(stages)))
    total = np.zeros((count, repeats))

    def text(row: int) -> list[str] | None:
        return None if texts is None else [texts[row]]

    with faiss_threads(TIMING_THREADS):
        run_funnel(index, rows(0, 1), plan, k, texts=text(0))  # warm caches and lazy allocations
        for row in range(count):
            query = rows(row, row + 1)
            for repeat in range(repeats):
                started = time.perf_counter()
                result = run_funnel(index, query, plan, k, texts=text(row))
                total[row, repeat] = time.perf_counter() - started
                if fused:
                    result = run_funnel(index, query, plan, k, compiled=False, texts=text(row))
                per_stage[row, repeat] = [step.seconds for step in result.trace]
    medians = np.median(per_stage, axis=1)
    return FunnelTiming(tuple(Timing.of(medians[:, s]) for s in range(len(stages))), Timing.of(np.median(total, axis=1)))


def time_layers(layered: LayeredEncoder, texts: Sequence[str], layers: Sequence[int]) -> np.ndarray:
    """Cumulative ms for each text, encoded alone, to reach each of ``layers`` (ascending), each
    continuing from the one before, with a vector at each (what a layered funnel pays):
    shape (len(texts), len(layers))."""
    if texts:
        layered.embed(layered.advance(layered.start(list(texts[:1])), max(layers)))  # the first call pays for lazy setup
    out = np.zeros((len(texts), len(layers)))
    for row, text in enumerate(texts):
        started = time.perf_counter()
        states = layered.start([text])
        for column, layer in enumerate(layers):
            states = layered.advance(states, layer)
            layered.embed(states)
            out[row, column] = 1000 * (time.perf_counter() - started)
    return out


def sample(texts: Sequence[str], size: int, seed: int = 0) -> list[str]:
    """A seeded sample of ``size`` texts (all of them when there are fewer), in their order."""
    if len(texts) <= size:
        return list(texts)
    picks = np.sort(np.random.default_rng(seed).choice(len(texts), size=size, replace=False))
    return [texts[i] for i in picks]


def time_each(function: Callable[[str], object], texts: Sequence[str], repeats: int = 1) -> np.ndarray:
    """Seconds ``function(text)`` takes for each text (median of ``repeats``), shape (len(texts),)."""
    if texts:
        function(texts[0])  # the first call pays for lazy setup
    seconds = np.zeros((len(texts), max(1, repeats)))
    for row, text in enumerate(texts):
        for repeat in range(seconds.shape[1]):
            started = time.perf_counter()
            function(text)
            seconds[row, repeat] = time.perf_counter() - started
    return np.median(seconds, axis=1)
