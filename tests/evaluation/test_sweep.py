"""Sweep grids and the Pareto frontier on hand-made points."""

from __future__ import annotations

import pytest

from funnel.errors import InputError
from funnel.evaluation.sweep import Configuration, grid, pareto_frontier, parse_sizes, plan_configuration, reference
from funnel.search.plan import Stage


def test_grid_shortlists_then_rescores_and_returns_at_most_the_shortlist() -> None:
    configs = grid([16, 64], [50, 200], k=100, full_dim=384)
    assert [c.name for c in configs] == ["16:50,full:50", "16:200,full:100", "64:50,full:50", "64:200,full:100"]
    assert [c.k for c in configs] == [50, 100, 50, 100]
    assert grid([384], [20], k=10, full_dim=384)[0].stages == (Stage(None, 10),)
    with pytest.raises(InputError, match="shortlist dim 512 is more than the model's 384 dims"):
        grid([512], [20], k=10, full_dim=384)


def test_reference_and_chains() -> None:
    assert reference(100) == Configuration((Stage(None, 100),), 100, "exact")
    assert plan_configuration("32:500,128:100,full:50", k=100).k == 50
    assert plan_configuration("32:500,full:100", k=10).name == "32:500,full:100"


def test_pareto_frontier_on_hand_made_points() -> None:
    costs = [1.0, 2.0, 2.0, 3.0, 4.0, 5.0, 0.5]
    quality = [0.5, 0.7, 0.6, 0.65, 0.9, 0.9, 0.1]
    # 2 loses to 1 (same cost, worse); 3 loses to 1 (dearer, worse); 5 ties 4's quality at more cost.
    assert pareto_frontier(costs, quality) == [6, 0, 1, 4]
    assert pareto_frontier([1.0, 1.0], [0.3, 0.3]) == [0, 1]
    assert pareto_frontier([], []) == []


@pytest.mark.parametrize("text", ["16,x", "0,16", "", "16.5"])
def test_parse_sizes_rejects_non_integers(text: str) -> None:
    with pytest.raises(InputError, match="--dims .* is not a comma-separated list of positive integers"):
        parse_sizes(text, "--dims")
