"""recall_against: the one overlap measure of the tuner, the evaluation and the benchmarks."""

from __future__ import annotations

import numpy as np

from funnel.agreement import recall_against


def test_share_of_the_truth_found_in_any_order() -> None:
    truth = np.array([[1, 2, 3, 4], [5, 6, 7, 8]])
    found = np.array([[4, 3, 2, 1, 9], [5, 9, 10, 11, 6]])
    assert recall_against(found, truth).tolist() == [1.0, 0.5]
    assert recall_against(found[:, :2], truth[:, :2]).tolist() == [0.0, 0.5]  # overlap@2


def test_blocks_of_queries_give_the_same_answer_as_one() -> None:
    rng = np.random.default_rng(0)
    truth = np.stack([rng.permutation(5000)[:100] for _ in range(40)])
    found = np.stack([rng.permutation(5000)[:4000] for _ in range(40)])  # 40 × 4000 × 100 > one block
    expected = [len(set(f) & set(t)) / 100 for f, t in zip(found.tolist(), truth.tolist())]
    assert np.allclose(recall_against(found, truth), expected)
