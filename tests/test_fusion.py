"""Reciprocal-rank fusion: a document both lists rank well beats one only a single list ranks."""

from __future__ import annotations

import numpy as np

from funnel.search.fusion import reciprocal_rank_fusion


def test_rrf_sums_reciprocal_ranks_over_the_lists():
    dense = np.array([[5, 7, 9, -1]])
    lexical = np.array([[9, 3, -1, -1]])
    scores, positions = reciprocal_rank_fusion([dense, lexical], 4, offset=60)
    # 9: 1/63 + 1/61; 5: 1/61; 7: 1/62; 3: 1/62 (ties broken by lower position)
    assert positions.tolist() == [[9, 5, 3, 7]]
    np.testing.assert_allclose(scores[0], [1 / 63 + 1 / 61, 1 / 61, 1 / 62, 1 / 62], rtol=1e-6)


def test_rrf_pads_short_results():
    scores, positions = reciprocal_rank_fusion([np.array([[2, -1]]), np.array([[-1, -1]])], 3)
    assert positions.tolist() == [[2, -1, -1]] and scores[0, 1] == 0
