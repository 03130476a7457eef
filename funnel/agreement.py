"""How far a funnel's top-k agrees with exact search: the one recall (overlap) measure.

The tuner, the evaluation and the benchmarks all ask the same question of a plan — what share of
the exact top-k did it find? — and answer it here, so "recall@k against exact search" means one
thing in every report.
"""

from __future__ import annotations

import numpy as np

_CHUNK = 16_000_000  # comparisons per block of queries (16 MB of booleans)


def recall_against(found: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per-query recall (q,): the share of each row of ``truth`` (q, k) found anywhere in the same
    row of ``found`` (q, n). Cut both to k first for overlap@k (``found[:, :k]``, ``truth[:, :k]``);
    a row of ``found`` that is ``truth``'s in another order scores 1."""
    found, truth = np.asarray(found), np.asarray(truth)
    if truth.shape[1] == 0:
        return np.ones(len(truth))
    step = max(1, _CHUNK // max(1, found.shape[1] * truth.shape[1]))
    parts = [
        (found[start : start + step, :, None] == truth[start : start + step, None, :]).any(axis=1).mean(axis=1)
        for start in range(0, len(truth), step)
    ]
    return np.concatenate(parts) if parts else np.zeros(0)
