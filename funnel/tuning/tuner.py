"""Choose a funnel plan for a recall target: the cheapest plan whose top-k agrees with exact search.

Method (see :mod:`funnel.tuning.evidence` for why prefixes suffice):

1. Calibration queries (a file, a list, vectors, or made from the corpus) are split by ``seed``
   into a *fit* half and a *held-out* half.
2. Exact full-dimension search gives each query's true top-k.
3. One deep shortlist per stored shortlist dim gives the recall of every two- and three-stage plan.
4. Feasible plans are those whose recall on the fit half has a one-sided lower confidence bound
   (normal approximation over per-query recall, ``confidence`` 0.95 by default) of at least the
   target plus a safety ``margin``. The default margin is a quarter of the allowed miss rate
   (1 − target) for queries made from the corpus, which can come out easier than the real ones,
   and none for queries given by the user (the lower bound already covers sampling).
   The cheapest by estimated latency wins (:class:`~funnel.tuning.search_space.Cost`: FLOPs,
   stored vectors gathered for rescoring, stages; then FLOPs, then fewer stages), which makes the
   choice reproducible. The few cheapest are also timed, and ``select="measured"`` picks the fastest
   measured one instead (not reproducible run to run: timings are noisy).
5. The chosen plan runs on the held-out half; that recall is the one reported and stored. If it
   falls short of the target, the choice is redone on all calibration queries, and the report says so.

A target of 1.0 or an index smaller than :data:`SMALL_INDEX` gives an exact plan, because no
measured sample can promise more than exact search does. A k of at least the index's document
count is refused: every search already returns the whole index, so there is no plan to choose.
Below :data:`TIMED_INDEX` documents nothing is timed or stored as ms: one search takes a fraction
of a millisecond there, and run-to-run noise (a 300-document tune stored 8.07 ms once and 0.06 ms
on a rerun) exceeds the differences between plans; the estimate alone ranks them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from statistics import NormalDist
from typing import TYPE_CHECKING, Any

import numpy as np

from funnel.agreement import recall_against
from funnel.errors import InputError
from funnel.search.plan import Plan, Stage
from funnel.tuning.calibration import CalibrationQueries, resolve_queries
from funnel.tuning.evidence import DimEvidence, corpus_in_memory, gather_evidence, without
from funnel.tuning.measure import TuningReference, plan_ms_per_query, run_plan
from funnel.tuning.search_space import Cost, SearchSpace, exact_cost, nice_counts, plan_cost

if TYPE_CHECKING:
    from pathlib import Path

    from funnel.indexes.index import Index
    from funnel.models import Encoder

SMALL_INDEX = 100
TIMED_INDEX = 1_000
# Default safety margin for corpus-made queries: a quarter of the allowed miss rate (0.0025 at a
# 0.99 target). On SciFact they came out about 0.002 easier than the real test queries. Given
# queries get none: they are the distribution the plan serves, and at 100k MiniLM documents the
# margin bought 150-300 shortlisted where 120-160 met the target on the measured queries.
SAFETY_SHARE = 0.25
EXACT_PLAN_CHECKS = 20
LEXICAL_CANDIDATES = 50
"""BM25 candidates a plan the tuner considers may add to its first stage (index with BM25 only):
each two-stage plan is also tried as its union with them, priced with the BM25 search."""
SELECTIONS = ("estimate", "measured")


@dataclass(frozen=True)
class PlanMeasurement:
    """One plan's figures: recall predicted on the fit half, recall measured on the held-out half
    (None where not run), mean ms per single-query search (None where not timed) and estimated cost."""

    name: str
    stages: str
    recall_fit: float | None
    recall_holdout: float | None
    ms_per_query: float | None
    flops: int
    bytes: int
    estimated_us: float


@dataclass(frozen=True)
class TunedPlan:
    """The chosen plan with the evidence for it; :meth:`to_manifest` is what an index stores."""

    stages: tuple[Stage, ...]
    k: int
    target_recall: float
    calibration: dict[str, Any]
    selection: str
    chosen: PlanMeasurement
    recall_fit_lower: float
    exact: PlanMeasurement
    baselines: tuple[PlanMeasurement, ...] = ()
    candidates: tuple[PlanMeasurement, ...] = ()
    notes: tuple[str, ...] = ()
    is_exact: bool = False
    plans_considered: int = 0
    query_encoder: dict[str, Any] | None = None
    """The precision ``--query-encoder auto`` runs queries at, as measured (:mod:`funnel.tuning.query_precision`)."""

    @property
    def stages_text(self) -> str:
        return str(Plan.of(self.stages))

    def to_manifest(self) -> dict[str, Any]:
        """The ``plan`` entry of an index manifest."""
        measured = {
            "recall": self.chosen.recall_holdout,
            "recall_fit": self.chosen.recall_fit,
            "recall_fit_lower": self.recall_fit_lower,
            "ms_per_query": self.chosen.ms_per_query,
            "flops": self.chosen.flops,
            "bytes": self.chosen.bytes,
            "estimated_us": round(self.chosen.estimated_us, 1),
            "exact_ms_per_query": self.exact.ms_per_query,
            "exact_flops": self.exact.flops,
        }
        return {
            "stages": self.stages_text,
            "k": self.k,
            "target_recall": self.target_recall,
            "calibration": self.calibration,
            "selection": self.selection,
            "measured": measured,
            "exact": self.is_exact,
            "notes": list(self.notes),
            **({"query_encoder": self.query_encoder} if self.query_encoder is not None else {}),
        }


@dataclass(frozen=True)
class TuneOptions:
    """Knobs of :func:`tune`; the defaults suit indexes from thousands to millions of documents."""

    seed: int = 0
    calibration_size: int = 400
    dims: tuple[int, ...] | None = None
    max_candidates: int | None = None
    max_stages: int = 3
    confidence: float = 0.95
    margin: float | None = None
    select: str = "estimate"
    measure: int = 4
    timing_queries: int = 50
    baselines: tuple[int, ...] = (4, 10)

    def __post_init__(self) -> None:
        if self.calibration_size < 2:
            raise InputError(f"tuning needs at least 2 calibration queries, not {self.calibration_size}")
        if not 0.5 <= self.confidence < 1:
            raise InputError(f"confidence must be in [0.5, 1), not {self.confidence}")
        if self.margin is not None and not 0 <= self.margin < 1:
            raise InputError(f"margin must be in [0, 1), not {self.margin}")
        if self.select not in SELECTIONS:
            raise InputError(f"select must be one of {', '.join(SELECTIONS)}, not {self.select!r}")


def check_target(target_recall: float, k: int) -> None:
    if not isinstance(target_recall, (int, float)) or not 0 < target_recall <= 1:
        raise InputError(f"target recall must be above 0 and at most 1 (e.g. 0.99), not {target_recall}")
    if k < 1:
        raise InputError(f"k must be at least 1, not {k}")


def tune(
    index: Index,
    encoder: Encoder | None,
    target_recall: float = 0.99,
    k: int = 10,
    queries: CalibrationQueries | Sequence[str] | np.ndarray | str | Path | None = None,
    options: TuneOptions = TuneOptions(),
) -> TunedPlan:
    """Calibrate a plan for ``index`` so its top-``k`` matches exact search at ``target_recall``."""
    check_target(target_recall, k)
    if index.count == 0:
        raise InputError("the index is empty: there is nothing to tune")
    if k >= index.count:
        raise InputError(
            f"k={k} {'exceeds' if k > index.count else 'equals'} the index's document count ({index.count}): every search "
            f"returns the whole index, so there is no plan to tune; tune with k below {index.count}"
        )
    calibration = resolve_queries(index, encoder, queries, options.calibration_size, options.seed)
    reference = TuningReference(index)
    rng = np.random.default_rng(options.seed)
    order = rng.permutation(calibration.count)
    fit, holdout = np.sort(order[: calibration.count // 2]), np.sort(order[calibration.count // 2 :])
    about = {"source": calibration.source, "queries": calibration.count, "fit": len(fit), "holdout": len(holdout), "seed": options.seed}
    truth = reference.search(calibration.vectors, k, calibration.documents)
    timed = index.count >= TIMED_INDEX
    timing = calibration.vectors[holdout[: options.timing_queries] if timed else holdout[:0]]
    untimed = () if timed else (_untimed_note(index, options),)
    exact = PlanMeasurement(
        "exact flat search",
        f"flat {index.dim}-d over {index.count}",
        1.0,
        1.0,
        reference.ms_per_query(timing, k) if len(timing) else None,
        *_cost(exact_cost(index)),
    )

    reason = _exact_reason(index, target_recall, k)
    if reason:
        return _exact_plan(index, calibration, truth, holdout, timing, k, target_recall, about, exact, (reason, *untimed))

    space = SearchSpace.for_index(index, k, dims=options.dims, max_candidates=options.max_candidates, max_stages=options.max_stages)
    prefixes = nice_counts(k, space.max_candidates)
    corpus = corpus_in_memory(index) if space.max_stages == 3 else None
    evidence = [
        gather_evidence(
            index,
            calibration.vectors,
            truth,
            dim,
            space.max_candidates,
            prefixes,
            [m for m in space.middle_dims if m > dim] if space.max_stages == 3 else [],
            corpus,
            calibration.documents,
        )
        for dim in space.shortlist_dims
    ]
    del corpus
    lexical = lexical_evidence(index, calibration, truth)
    notes: list[str] = list(untimed)
    margin = default_margin(calibration, target_recall) if options.margin is None else options.margin
    threshold = min(1.0, target_recall + margin)
    z = NormalDist().inv_cdf(options.confidence)
    ranked = _feasible(index, evidence, fit, k, threshold, z, lexical)
    selection = f"cheapest by estimated latency whose {options.confidence:.0%} lower bound of fit-half recall ≥ {threshold:g}"
    if not ranked:
        return _exact_plan(
            index,
            calibration,
            truth,
            holdout,
            timing,
            k,
            target_recall,
            about,
            exact,
            (
                f"no plan within a shortlist of {space.max_candidates} met the target; use exact search or tune with a larger max_candidates",
                *untimed,
            ),
        )
    considered = _count_plans(index, evidence, k, lexical)
    measured = _time_candidates(index, ranked[: max(1, options.measure)], timing, k, calibration, truth, holdout)
    by_ms = options.select == "measured" and timed
    pick = min(measured, key=lambda m: m[1].ms_per_query or 0.0) if by_ms else measured[0]
    if by_ms:
        selection = selection.replace("estimated latency", "measured ms/query")
    stages, chosen, lower = pick[0], pick[1], pick[2]
    if chosen.recall_holdout is not None and chosen.recall_holdout < target_recall:
        notes.append(
            f"held-out recall {chosen.recall_holdout:.4f} fell short of {target_recall:g} for {str(Plan.of(stages))}: "
            f"reselected on all {calibration.count} calibration queries, "
            f"keeping only plans that reach the target on the held-out half too (so that check is no longer independent)"
        )
        everyone = np.arange(calibration.count)
        ranked = _feasible(index, evidence, everyone, k, threshold, z, lexical, also=(holdout, target_recall)) or ranked
        stages, lower, _ = ranked[0]
        chosen = _measure(index, "tuned", stages, timing, k, calibration, truth, holdout, fit_recall=ranked[0][2])
    candidates = tuple(m[1] for m in measured)
    baselines = _baselines(
        index, stages[0].resolved_dim(index.dim), options.baselines, k, evidence, fit, timing, calibration, truth, holdout
    )
    chosen = replace(chosen, name="tuned")
    is_exact = tuple(stages) == exact_stages(index, k)
    if lexical is not None:
        notes.append(_lexical_note(index, tuple(stages), evidence, lexical, holdout))
    if is_exact:
        notes.append(
            f"exact search is the cheapest plan meeting the target here: over {index.count} documents it is estimated at "
            f"{exact.estimated_us:.0f} µs per query; a funnel pays off on larger indexes"
        )
    return TunedPlan(
        tuple(stages),
        k,
        target_recall,
        about,
        selection,
        chosen,
        lower,
        exact,
        baselines,
        candidates,
        tuple(notes),
        is_exact=is_exact,
        plans_considered=considered,
    )


def default_margin(calibration: CalibrationQueries, target_recall: float) -> float:
    """What a plan's fit-half lower bound must clear above the target: a share of the allowed
    miss rate for queries made from the corpus (``documents`` set), nothing for given queries."""
    return SAFETY_SHARE * (1 - target_recall) if calibration.documents is not None else 0.0


def _cost(cost: Cost) -> tuple[int, int, float]:
    return cost.flops, cost.bytes, cost.estimated_us


def _untimed_note(index: Index, options: TuneOptions) -> str:
    measured = (
        f"; select='measured' needs at least {TIMED_INDEX:,} documents, so the estimate chose" if options.select == "measured" else ""
    )
    return (
        f"no ms/query measured or stored: on {index.count} documents (fewer than {TIMED_INDEX:,}) one search takes a fraction of "
        f"a millisecond and run-to-run noise exceeds the differences between plans, so plans are ranked by estimated cost{measured}"
    )


def _exact_reason(index: Index, target_recall: float, k: int) -> str | None:
    if target_recall >= 1.0:
        return "a target of 1.0 can only be promised by exact search, so the plan is exact"
    if index.count < SMALL_INDEX:
        return (
            f"the index holds only {index.count} documents (fewer than {SMALL_INDEX}): a funnel saves nothing "
            f"at this size, so the plan is exact"
        )
    return None


def exact_stages(index: Index, k: int) -> tuple[Stage, ...]:
    """A plan equal to exact search: one stage at full dims (a stored flat shortlist there, else
    the exact scan, see :mod:`funnel.search.exact`)."""
    return (Stage(None, k),)


def _exact_plan(index, calibration, truth, holdout, timing, k, target, about, exact, reasons: tuple[str, ...]) -> TunedPlan:
    stages = exact_stages(index, k)
    # A few queries confirm exactness and time it.
    few = holdout[:EXACT_PLAN_CHECKS]
    chosen = _measure(index, "tuned", stages, timing[:EXACT_PLAN_CHECKS], k, calibration, truth, few, fit_recall=1.0)
    return TunedPlan(stages, k, target, about, "exact (see notes)", chosen, 1.0, exact, notes=reasons, is_exact=True, plans_considered=1)


def _plans(index: Index, evidence: Sequence[DimEvidence], k: int, lexical: np.ndarray | None = None):
    """Every (stages, per-query recall function) in the space, as (stages, lambda rows -> recall);
    with ``lexical`` (:func:`lexical_evidence`), each two-stage plan also as its union with BM25's
    candidates."""
    yield exact_stages(index, k), (lambda rows: np.ones(len(rows)))  # every index can scan exactly
    for ev in evidence:
        for n in ev.prefixes:
            yield (Stage(ev.dim, n), Stage(None, k)), (lambda rows, ev=ev, n=n: ev.two_stage(n, rows))
            if lexical is not None:
                yield (
                    (Stage(ev.dim, n, lexical=LEXICAL_CANDIDATES), Stage(None, k)),
                    (lambda rows, ev=ev, n=n: ((ev.shortlist_rank[rows] < n) | lexical[rows]).mean(axis=1)),
                )
        for middle_dim in ev.middle_rank:
            for p, n1 in enumerate(ev.prefixes):
                for n2 in ev.prefixes:
                    if k < n2 < n1:
                        yield (
                            (Stage(ev.dim, n1), Stage(middle_dim, n2), Stage(None, k)),
                            (lambda rows, ev=ev, p=p, m=middle_dim, n2=n2: ev.three_stage(p, m, n2, rows)),
                        )


def _count_plans(index: Index, evidence: Sequence[DimEvidence], k: int, lexical: np.ndarray | None = None) -> int:
    return sum(1 for _ in _plans(index, evidence, k, lexical))


def lexical_evidence(index: Index, calibration: CalibrationQueries, truth: np.ndarray) -> np.ndarray | None:
    """(q, k) whether each query's BM25 top :data:`LEXICAL_CANDIDATES` (its source document left
    out) holds each of its true documents; None where the index keeps no BM25 index or the
    queries came as vectors, without texts."""
    if index.lexical is None or len(calibration.texts) != calibration.count:
        return None
    found = without(index.lexical.search(calibration.texts, LEXICAL_CANDIDATES + 1)[1], calibration.documents, LEXICAL_CANDIDATES)
    return (found[:, :, None] == truth[:, None, :]).any(axis=1)


def _lexical_note(index: Index, stages: tuple[Stage, ...], evidence: Sequence[DimEvidence], lexical: np.ndarray, holdout) -> str:
    cost = plan_cost(index, (Stage(index.dim, 1, lexical=LEXICAL_CANDIDATES), Stage(None, 1))).lexical_us
    considered = f"plans adding +bm25:{LEXICAL_CANDIDATES} were considered (the BM25 search estimated at {cost:.0f} µs a query)"
    if not stages[0].lexical:
        return f"{considered}; the cheapest plan meeting the target adds none"
    ev = next(e for e in evidence if e.dim == stages[0].resolved_dim(index.dim))
    dense = float(ev.two_stage(stages[0].candidates, holdout).mean())
    union = float(((ev.shortlist_rank[holdout] < stages[0].candidates) | lexical[holdout]).mean())
    return f"{considered}; the cheapest plan meeting the target adds them: held-out recall {dense:.4f} without, {union:.4f} with"


def _feasible(index, evidence, rows, k, threshold, z, lexical=None, also=None) -> list[tuple[tuple[Stage, ...], float, float]]:
    """Plans meeting the threshold on ``rows``, cheapest first: (stages, lower bound, mean recall).
    ``also`` (rows, recall): a mean recall those rows must reach too."""
    found = []
    for stages, recall in _plans(index, evidence, k, lexical):
        if also is not None and recall(also[0]).mean() < also[1]:
            continue
        per_query = recall(rows)
        mean = float(per_query.mean())
        lower = mean - z * float(per_query.std(ddof=1)) / np.sqrt(len(per_query)) if len(per_query) > 1 else mean
        if lower >= threshold:
            cost = plan_cost(index, stages)
            found.append(((round(cost.estimated_us, 3), cost.flops, len(stages), str(Plan.of(stages))), stages, lower, mean))
    found.sort(key=lambda item: item[0])
    return [(stages, lower, mean) for _, stages, lower, mean in found]


def _measure(index, name, stages, timing, k, calibration: CalibrationQueries, truth, holdout, fit_recall) -> PlanMeasurement:
    sources = calibration.documents[holdout] if calibration.documents is not None else None
    texts = _texts(calibration, holdout)
    found = run_plan(index, calibration.vectors[holdout], stages, k, sources, texts)
    recall = float(recall_against(found, truth[holdout]).mean()) if len(holdout) else None
    # The timing queries are the first of the held-out ones (see tune).
    ms = plan_ms_per_query(index, timing, stages, k, texts[: len(timing)] if texts else None) if len(timing) else None
    return PlanMeasurement(name, str(Plan.of(stages)), fit_recall, recall, ms, *_cost(plan_cost(index, stages)))


def _texts(calibration: CalibrationQueries, rows: np.ndarray) -> list[str] | None:
    """The texts of calibration queries ``rows``; None for queries given as vectors."""
    return [calibration.texts[row] for row in rows] if len(calibration.texts) == calibration.count else None


def _time_candidates(index, ranked, timing, k, calibration, truth, holdout):
    out = []
    for number, (stages, lower, mean) in enumerate(ranked):
        out.append((stages, _measure(index, f"candidate {number + 1}", stages, timing, k, calibration, truth, holdout, mean), lower))
    return out


def _baselines(index, dim, multipliers, k, evidence, fit, timing, calibration, truth, holdout) -> tuple[PlanMeasurement, ...]:
    """Fixed rescore multipliers (shortlist m·k at the tuned plan's first dim, rescore at full dims)."""
    ev = next((e for e in evidence if e.dim == dim), None)
    out = []
    for multiplier in multipliers:
        n = min(multiplier * k, index.count)
        stages = (Stage(dim, n), Stage(None, k))
        fit_recall = float(ev.two_stage(n, fit).mean()) if ev is not None and n <= ev.max_candidates else None
        out.append(_measure(index, f"×{multiplier} rescore multiplier", stages, timing, k, calibration, truth, holdout, fit_recall))
    return tuple(out)
