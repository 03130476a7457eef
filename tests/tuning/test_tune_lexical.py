"""The tuner and the lexical index: calibration spans include rare-term ones, BM25 candidates are
tried on the held-out queries, and kept (in the stored plan) only when they gain recall."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from helpers import HashEncoder

from funnel.corpus import DOCUMENT_SCHEMA
from funnel.indexes.builder import IndexConfig, write_index
from funnel.indexes.index import Index
from funnel.indexes.shortlist import make_spec
from funnel.tuning import TuneOptions, tune
from funnel.tuning import tuner as tuner_module
from funnel.tuning.calibration import RARE_TERM_EVERY, corpus_queries
from funnel.tuning.evidence import DimEvidence
from funnel.tuning.search_space import plan_cost

FIXTURES = Path(__file__).resolve().parents[1] / "data"
OPTIONS = TuneOptions(seed=3, timing_queries=5, calibration_size=120)
SPECTRUM = np.linspace(2.0, 0.2, 32)


class NestedHashEncoder(HashEncoder):
    """HashEncoder's vectors with a decaying spectrum, so that prefixes shortlist well and the
    tuner picks a funnel over exact search (BM25 candidates are only tried on a funnel)."""

    def encode(self, texts, batch_size=64):
        vectors = super().encode(texts, batch_size) * SPECTRUM
        return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def index(tmp_path_factory) -> Index:
    """Every fixture document (Debian, Cranfield, SciFact slices): real text for BM25."""
    rows = [json.loads(line) for name in ("debian", "cranfield", "scifact") for line in (FIXTURES / name / "corpus.jsonl").open()]
    rows = [row for row in rows if row["text"].strip()]
    documents = pa.RecordBatch.from_arrays(
        [
            pa.array([f"{number}-{r['_id']}" for number, r in enumerate(rows)]),
            pa.array([None] * len(rows), pa.string()),
            pa.array([r["text"] for r in rows]),
            pa.array([None] * len(rows), pa.string()),
        ],
        schema=DOCUMENT_SCHEMA,
    )
    vectors = NestedHashEncoder().encode([r["text"] for r in rows])
    config = IndexConfig(shortlists=(make_spec(8),), rotation="none")
    path = write_index([(documents, vectors)], tmp_path_factory.mktemp("tune") / "index", model="hash", dim=32, config=config)
    return Index.load(path)


def test_every_fourth_corpus_query_holds_its_documents_rarest_term(index):
    queries = corpus_queries(index, NestedHashEncoder(), 40, seed=5)
    assert "rarest term" in queries.source and index.lexical is not None
    documents = index.documents([int(p) for p in queries.documents])
    for number in range(0, len(queries.texts), RARE_TERM_EVERY):
        words = documents[number]["text"].split()
        rarity = index.lexical.word_rarity(words)
        if len(words) > 10 and np.isfinite(rarity).any():
            assert words[int(np.argmin(rarity))] in queries.texts[number].split()


def test_plans_with_bm25_candidates_are_considered_and_said(index):
    plan = tune(index, NestedHashEncoder(), 0.6, 10, None, OPTIONS)
    (note,) = [n for n in plan.notes if n.startswith("plans adding +bm25:50 were considered")]
    # Hash vectors share nothing with the words: BM25 finds no true neighbour, so no union pays.
    assert not plan.stages[0].lexical and note.endswith("the cheapest plan meeting the target adds none")


def test_a_union_is_chosen_where_only_bm25_finds_what_the_shortlist_misses(index):
    """Evidence where one true document in ten lies beyond every shortlist but within BM25's
    candidates: no dense funnel reaches 0.99, every union does, priced with the BM25 search (over
    779 documents that search costs more than exact search, which stays the cheapest)."""
    queries, k = 40, 10
    ranks = np.tile(np.arange(k), (queries, 1))
    ranks[:, -1] = 10_000  # beyond the deepest shortlist
    lexical = np.zeros((queries, k), bool)
    lexical[:, -1] = True
    evidence = DimEvidence(dim=8, max_candidates=200, shortlist_rank=ranks, prefixes=(10, 20, 50, 100, 200), middle_rank={})
    rows = np.arange(queries)
    feasible = [stages for stages, _, _ in tuner_module._feasible(index, [evidence], rows, k, 0.99, 0.0, lexical)]
    funnels = [stages for stages in feasible if len(stages) > 1]
    assert funnels and all(stages[0].lexical == tuner_module.LEXICAL_CANDIDATES for stages in funnels)
    assert funnels[0][0].candidates == k  # the cheapest union: the fewest dense candidates
    assert [len(stages) for stages, _, _ in tuner_module._feasible(index, [evidence], rows, k, 0.99, 0.0, None)] == [1]
    exact, union = plan_cost(index, feasible[0]), plan_cost(index, funnels[0])
    assert len(feasible[0]) == 1 and exact.estimated_us < union.estimated_us and union.lexical_us > 0


def test_queries_given_as_vectors_leave_the_plan_dense(index):
    vectors = NestedHashEncoder().encode([f"query {i}" for i in range(60)])
    plan = tune(index, None, 0.6, 10, vectors, OPTIONS)
    assert not plan.stages[0].lexical and not any(n.startswith("BM25 candidates") for n in plan.notes)
