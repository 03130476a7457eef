"""Transitional: the plan and its running live in :mod:`funnel.search` (removed once every caller moved)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from funnel.search.exact import exact_search
from funnel.search.plan import Plan, Stage, check_k, check_plan, parse_stage
from funnel.search.run import FunnelResult, LayeredQueries, QuerySource, StageTrace, as_query_vectors, run_funnel

if TYPE_CHECKING:
    from funnel.indexes.index import Index

__all__ = [
    "FunnelResult",
    "LayeredQueries",
    "QuerySource",
    "Stage",
    "StageTrace",
    "as_query_vectors",
    "check_k",
    "exact_search",
    "format_stages",
    "parse_stage",
    "parse_stages",
    "run_funnel",
    "two_stage",
    "validate_plan",
]


def parse_stages(text: str) -> tuple[Stage, ...]:
    return Plan.parse(text).stages


def format_stages(stages: Sequence[Stage]) -> str:
    return ",".join(map(str, stages))


def two_stage(shortlist_dim: int, shortlist_size: int, k: int) -> tuple[Stage, ...]:
    return Plan.two_stage(shortlist_dim, shortlist_size, k).stages


def validate_plan(stages: Sequence[Stage], k: int, index: Index) -> None:
    check_plan(Plan.of(stages), k, index)
