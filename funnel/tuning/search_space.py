"""What the tuner may choose from, and what each choice costs by estimate (FLOPs and bytes read).

A plan is two stages (shortlist N at a stored shortlist dim, rescore at full dims) or three
(shortlist N1, rescore at a middle dim keeping N2, rescore at full dims). Candidate counts come
from a "nice number" ladder (10, 12, 15, 20, 25, 30, 40, 50, 60, 80, 100, …) so plans read well.
Layers are not searched: indexes store full-depth vectors only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from funnel.errors import InputError
from funnel.search.plan import Stage

if TYPE_CHECKING:
    from funnel.indexes.index import Index

NICE_STEPS = (1.0, 1.2, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0)
MIDDLE_DIMS = (64, 96, 128, 192, 256)


@dataclass(frozen=True)
class SearchSpace:
    """First-stage dims (must be shortlist indexes the index stores), middle-stage dims, the
    longest shortlist examined (``max_candidates``; plans keep at most that many), and at most 2 or 3 stages."""

    shortlist_dims: tuple[int, ...]
    middle_dims: tuple[int, ...] = MIDDLE_DIMS
    max_candidates: int = 2000
    max_stages: int = 3

    def __post_init__(self) -> None:
        if not self.shortlist_dims:
            raise InputError("the search space needs at least one shortlist dim")
        if self.max_candidates < 1:
            raise InputError(f"max_candidates (the longest shortlist examined) must be at least 1, not {self.max_candidates}")
        if self.max_stages not in (2, 3):
            raise InputError(f"plans have 2 or 3 stages; max_stages={self.max_stages} is not supported")

    @classmethod
    def for_index(
        cls, index: Index, k: int, *, dims: Sequence[int] | None = None, max_candidates: int | None = None, max_stages: int = 3
    ) -> SearchSpace:
        """Stored shortlist dims (or ``dims``, which must be stored), max_candidates max(2000, 200k) capped at the index size."""
        stored = index.shortlist_dims
        chosen = tuple(sorted(set(dims))) if dims else tuple(d for d in stored if d < index.dim) or tuple(stored)
        missing = [d for d in chosen if d not in stored]
        if missing:
            have = ", ".join(map(str, stored))
            raise InputError(
                f"dims {missing} have no shortlist index in this index (it has: {have}); rebuild with --shortlist-dim to tune them"
            )
        wanted = max_candidates if max_candidates is not None else max(2000, 200 * k)
        middle = tuple(d for d in MIDDLE_DIMS if d < index.dim)
        return cls(chosen, middle, max(1, min(wanted, index.count)), max_stages)


def nice_counts(low: int, high: int) -> list[int]:
    """Ladder of round candidate counts from ``low`` to ``high``, both included."""
    if high <= low:
        return [high]
    counts = {low, high}
    for exponent in range(int(math.log10(max(low, 1))), int(math.log10(high)) + 2):
        for step in NICE_STEPS:
            value = int(round(step * 10**exponent))
            if low < value < high:
                counts.add(value)
    return sorted(counts)


# A latency model with fixed constants, so that choosing by it is reproducible. Measured single-
# threaded on the project's 2-core machine (NOTES.md): a FAISS flat scan runs at ~2.5 GMAC/s
# (0.4 ns per multiply-add); gathering one stored float16 vector from a warm memory map, converting
# and normalizing it costs ~4 µs, i.e. as much as ~10,000 multiply-adds; each stage adds Python
# and sorting overhead. Only the ratios matter for the choice; measured ms are reported beside it.
# A two-stage plan that runs as one FAISS call (funnel.search.compiled) reads its candidates'
# float16 rows inside FAISS's refine index: ~0.1 µs a row besides the multiply-adds, and one call's
# overhead instead of one per stage.
NS_PER_FLOP = 0.2
US_PER_GATHERED_ROW = 4.0
US_PER_REFINED_ROW = 0.1
US_PER_STAGE = 40.0
# A BM25 search for one short query (funnel.indexes.lexical): tokenizing it and summing its terms'
# sparse score columns; measured 0.22 ms over 1.4k documents and 0.30 ms over 60k
# (benchmarks/results/lexical), so mostly a fixed cost plus a little per document.
US_PER_BM25_QUERY = 200.0
US_PER_BM25_DOCUMENT = 0.002


@dataclass(frozen=True)
class Cost:
    """Estimated work per query: floating-point operations, bytes read, stored vectors gathered
    for rescoring by the Python stages or refined inside one FAISS call, and calls made (stages,
    or 1 for a compiled plan); ``estimated_us`` weighs them into one latency estimate."""

    flops: int
    bytes: int
    gathered: int = 0
    stages: int = 1
    refined: int = 0
    lexical_us: float = 0.0
    """The BM25 search of a plan that adds its candidates."""

    @property
    def estimated_us(self) -> float:
        rows = self.gathered * US_PER_GATHERED_ROW + self.refined * US_PER_REFINED_ROW
        return self.flops * NS_PER_FLOP / 1000 + rows + self.stages * US_PER_STAGE + self.lexical_us


def first_stage_cost(index: Index, dim: int, candidates: int) -> Cost:
    """The shortlist search at ``dim``, by the kind of FAISS index stored for it: vectors visited
    (all of them for a scan, efSearch·M for a graph, the probed lists for IVF) times what scoring
    one code costs (:func:`~funnel.indexes.shortlist.score_flops`)."""
    from funnel.indexes.shortlist import KIND_INFO, code_bytes, make_spec, score_flops

    spec = index.segments[0].shortlists[dim][0] if index.segments else make_spec(dim)
    info, params, count = KIND_INFO[spec.kind], spec.params, index.count
    if info.graph:
        visited = min(count, max(params["ef_search"], candidates) * params["m"])  # a small graph is visited whole at most
    elif info.inverted:
        nlist = params["nlist"] or max(1, int(4 * math.sqrt(count)))
        visited = nlist + min(count, params["nprobe"] * count // nlist)
    else:
        visited = count
    return Cost(int(visited * score_flops(spec)), int(visited * code_bytes(spec)))


def plan_cost(index: Index, stages: Sequence[Stage]) -> Cost:
    """Estimated cost of a plan: the first stage's search plus, per later stage, gathering the
    full stored vectors of its input candidates (as :func:`funnel.search.run.run_funnel` does) and
    scoring them at its dims; a plan that runs as one FAISS call refines its candidates there."""
    from funnel.search.compiled import compilable
    from funnel.search.plan import Plan
    from funnel.search.run import scans_exactly, view_state

    first = stages[0]
    dim = first.resolved_dim(index.dim)
    exact = scans_exactly(index, dim, first.layer, final=len(stages) == 1)
    total = exact_cost(index) if exact else first_stage_cost(index, dim, first.candidates)
    flops, read, gathered = total.flops, total.bytes, 0
    itemsize = 2 if index.manifest.vector_dtype == "float16" else 4
    incoming = min(first.passes_on, index.count)
    for stage in stages[1:]:
        flops += 2 * incoming * stage.resolved_dim(index.dim)
        read += incoming * index.dim * itemsize
        gathered += incoming
        incoming = min(stage.candidates, incoming)
    if index.segments and view_state(index).compile_plans and compilable(index, Plan(tuple(stages))):
        return Cost(flops, read, stages=1, refined=gathered)
    lexical = US_PER_BM25_QUERY + US_PER_BM25_DOCUMENT * index.count if first.lexical else 0.0
    return Cost(flops, read, gathered, len(stages), lexical_us=lexical)


def exact_cost(index: Index) -> Cost:
    """Exhaustive search over every full vector (float32 flat index)."""
    return Cost(2 * index.count * index.dim, 4 * index.count * index.dim)
