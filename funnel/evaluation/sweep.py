"""Sweeps: a grid of funnel configurations, and the Pareto frontier of quality against cost.

A grid configuration ``(dim, n)`` shortlists ``n`` documents at ``dim`` dims and rescores them at
full dims, keeping ``min(n, k)``: a funnel that shortlists 50 returns at most 50 documents, so its
Recall@100 is what a user of that funnel gets, not a padded figure.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from funnel.errors import InputError
from funnel.search.plan import Plan, Stage

DEFAULT_DIMS = (16, 32, 64, 128, 256)
DEFAULT_SHORTLISTS = (50, 100, 200, 500)
REFERENCE = "exact"


@dataclass(frozen=True)
class Configuration:
    """A funnel to evaluate: its plan (``stages``) and how many documents its ranking returns (``k``)."""

    stages: tuple[Stage, ...]
    k: int
    name: str = ""

    def __post_init__(self) -> None:
        if not self.stages:
            raise InputError("a configuration needs at least one stage")
        if self.k < 1:
            raise InputError(f"a configuration must return at least 1 document, not k={self.k}")
        if not self.name:
            object.__setattr__(self, "name", str(Plan.of(self.stages)))

    @property
    def shortlist_dim(self) -> int | None:
        return self.stages[0].dim

    @property
    def shortlist_size(self) -> int:
        return self.stages[0].candidates


def reference(k: int) -> Configuration:
    """Exact search: every document scored at full dims (a flat full-dimension shortlist)."""
    return Configuration((Stage(dim=None, candidates=k),), k, REFERENCE)


def grid(
    dims: Iterable[int], shortlist_sizes: Iterable[int], k: int, full_dim: int | None = None, layer: int | None = None
) -> list[Configuration]:
    """Two-stage configurations for every (dim, shortlist size): shortlist at dim, rescore at full.

    ``layer``: shortlist with the model cut after that many layers (queries and documents), then
    rescore with the full model: ``layer:dim:n,full:k``.
    """
    configurations = []
    for dim in dims:
        if full_dim is not None and dim > full_dim:
            raise InputError(f"shortlist dim {dim} is more than the model's {full_dim} dims: choose dims up to {full_dim}")
        for size in shortlist_sizes:
            keep = min(size, k)
            if full_dim is not None and dim == full_dim and layer is None:
                stages: tuple[Stage, ...] = (Stage(dim=None, candidates=keep),)
            else:
                stages = (Stage(dim=dim, candidates=size, layer=layer), Stage(dim=None, candidates=keep))
            configurations.append(Configuration(stages, keep))
    return configurations


def plan_configuration(text: str | Sequence[Stage], k: int) -> Configuration:
    """A configuration from a plan, written (``"32:500,128:100,full:100"``) or as stages."""
    stages = Plan.parse(text).stages if isinstance(text, str) else tuple(text)
    return Configuration(stages, min(k, stages[-1].candidates))


def parse_sizes(text: str, what: str) -> tuple[int, ...]:
    """``"16,32,64"`` → (16, 32, 64); InputError naming ``what`` for anything but positive integers."""
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        values = ()
    if not values or min(values) < 1:
        raise InputError(f"{what} {text!r} is not a comma-separated list of positive integers (e.g. 16,32,64)")
    return values


def pareto_frontier(costs: Sequence[float], qualities: Sequence[float]) -> list[int]:
    """Indices of the points no other point beats: none is as cheap and as good, and better in one.

    Returned in order of increasing cost. Equal points are all kept.
    """
    if len(costs) != len(qualities):
        raise InputError(f"{len(costs)} costs but {len(qualities)} qualities")
    order = sorted(range(len(costs)), key=lambda i: (costs[i], -qualities[i]))
    frontier: list[int] = []
    best = float("-inf")
    best_cost = None
    for i in order:
        if qualities[i] > best or (qualities[i] == best and costs[i] == best_cost):
            frontier.append(i)
            best, best_cost = qualities[i], costs[i]
    return frontier
