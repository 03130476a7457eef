"""The tuner on indexes too small to tune: a k at or past the document count is refused in words
that say so, and below TIMED_INDEX documents no ms/query is measured or stored."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import vector_index

from funnel.errors import InputError
from funnel.indexes.builder import IndexConfig
from funnel.indexes.index import Index
from funnel.indexes.shortlist import make_spec
from funnel.tuning import TuneOptions, tune
from funnel.tuning.tuner import TIMED_INDEX

CONFIG = IndexConfig(shortlists=(make_spec(8), make_spec(16)))
OPTIONS = TuneOptions(seed=1, timing_queries=5, calibration_size=120)


def synthetic(tmp_path, count: int) -> Index:
    rng = np.random.default_rng(count)
    vectors = rng.normal(size=(count, 48)) * np.linspace(2.0, 0.2, 48)
    return Index.load(vector_index(tmp_path / f"index-{count}", vectors, CONFIG, batch=500))


@pytest.mark.parametrize(("count", "k", "word"), [(5, 11, "exceeds"), (5, 5, "equals"), (40, 50, "exceeds")])
def test_k_at_or_past_the_document_count_is_refused_plainly(tmp_path, count, k, word):
    with pytest.raises(InputError) as refused:
        tune(synthetic(tmp_path, count), None, 0.99, k, None, OPTIONS)
    message = str(refused.value)
    assert message.startswith(f"k={k} {word} the index's document count ({count})") and f"tune with k below {count}" in message
    assert "keeps more candidates than" not in message


def test_a_small_index_stores_no_ms_and_says_why(tmp_path):
    index = synthetic(tmp_path, 300)
    plan = tune(index, None, 0.95, 10, None, OPTIONS)
    assert plan.chosen.ms_per_query is None and plan.exact.ms_per_query is None
    measured = plan.to_manifest()["measured"]
    assert measured["ms_per_query"] is None and measured["exact_ms_per_query"] is None
    assert any(note.startswith("no ms/query measured or stored: on 300 documents") for note in plan.notes), plan.notes


def test_an_index_of_timed_size_still_measures_ms(tmp_path):
    plan = tune(synthetic(tmp_path, TIMED_INDEX), None, 0.95, 10, None, OPTIONS)
    assert plan.chosen.ms_per_query is not None and plan.chosen.ms_per_query > 0
    assert not any(note.startswith("no ms/query measured") for note in plan.notes)
