import numpy as np
import pytest

from funnel.errors import InputError
from funnel.training.data import load_examples
from funnel.training.mining import NegativePool, easy_negatives, mine_negatives


def test_conan_drop_rule_on_hand_built_scores():
    original = np.array([0.90, 0.90, 0.90, 0.70, 0.50])
    current = np.array([0.85, 0.70, 0.82, 0.50, 0.45])
    # 0.85*1.15 > 0.9: still hard. 0.70*1.15 < 0.9 and < 0.8: easy. 0.82 fell far but is >= 0.8: kept.
    # 0.50*1.15 < 0.7: easy. 0.45*1.15 > 0.5: kept.
    assert easy_negatives(original, current).tolist() == [False, True, False, True, False]
    assert easy_negatives(original, current, factor=1.3, floor=0.6).tolist() == [False, False, False, True, False]
    with pytest.raises(InputError, match="score shapes differ"):
        easy_negatives(original, current[:2])


def test_mining_then_refresh_replaces_only_easy_negatives(tiny_model, debian_pairs):
    dataset, scores = mine_negatives(load_examples([debian_pairs], max_rows=32), tiny_model, 2, relative_margin=None)
    assert scores.shape == (len(dataset), 2)
    assert {"negative_1", "negative_2"} <= set(dataset.column_names)
    pool = NegativePool(dataset, scores)
    before = pool.negatives.copy()
    pool.scores[:] = 1.0  # as if every negative had been very close when mined: all now look easy
    pool.scores[0] = -1.0  # row 0 was never close: its negatives stay
    replaced = pool.refresh(tiny_model, floor=1.01, relative_margin=None)
    assert replaced > 0 and (pool.negatives[0] == before[0]).all()
    assert (pool.negatives != before).sum() == replaced
    row = pool.dataset()[0]
    assert set(row) == {"anchor", "positive", "negative_1", "negative_2"}
    assert all(pool.positives[r] not in pool.negatives[r] for r in range(len(pool.anchors)))


def test_mining_says_when_no_pair_keeps_negatives(tiny_model, debian_pairs):
    # An untrained model scores everything alike: no candidate stays 5% below its positive.
    with pytest.raises(InputError, match="no pair kept 2 negatives scoring below 0.95"):
        mine_negatives(load_examples([debian_pairs], max_rows=16), tiny_model, 2)
