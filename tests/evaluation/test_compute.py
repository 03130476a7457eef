"""Compute accounting on known configurations: counts that can be worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import vector_index

from funnel.evaluation.compute import EncoderShape, count_tokens, funnel_costs, shortlist_cost, visited_per_query
from funnel.indexes.builder import IndexConfig
from funnel.indexes.index import Index
from funnel.indexes.shortlist import make_spec
from funnel.search.plan import Stage
from funnel.search.run import run_funnel


@pytest.fixture(scope="module")
def small_index(tmp_path_factory) -> Index:
    vectors = np.random.default_rng(7).normal(size=(300, 48)).astype(np.float32)
    path = vector_index(tmp_path_factory.mktemp("compute") / "idx", vectors, IndexConfig(shortlists=(make_spec(16),)))
    return Index.load(path)


def test_flat_shortlist_then_rescoring_counts(small_index: Index) -> None:
    queries = np.random.default_rng(8).normal(size=(4, 48)).astype(np.float32)
    result = run_funnel(small_index, queries, (Stage(16, 40), Stage(32, 20), Stage(None, 10)), k=10)
    shortlist, middle, last = funnel_costs(small_index, result.trace)
    # A flat shortlist over N=300 vectors at d=16 scans N·d values, float32.
    assert (shortlist.vectors, shortlist.multiply_adds, shortlist.bytes_read) == (300, 300 * 16, 300 * 16 * 4)
    # Rescoring n candidates at D dims is n·D multiply-adds; each reads a full 48-dim float16 row.
    assert (middle.vectors, middle.multiply_adds, middle.bytes_read) == (40, 40 * 32, 40 * 48 * 2)
    assert (last.vectors, last.multiply_adds, last.flops) == (20, 20 * 48, 2 * 20 * 48)
    assert [cost.role for cost in (shortlist, middle, last)] == ["shortlist", "rescore", "rescore"]


def test_binary_and_graph_shortlists(small_index: Index) -> None:
    binary = shortlist_cost(Stage(16, 40), make_spec(16, "binary"), 300)
    assert binary.bytes_read == 300 * 16 / 8 and binary.flops == 2 * 300 * 16 / 64
    small_index.add_shortlist(24, "hnsw", m=8)
    queries = np.random.default_rng(9).normal(size=(5, 48)).astype(np.float32)
    visited = visited_per_query(small_index, queries, 24, 20)
    assert visited is not None and 20 <= visited <= 300 * 2
    assert visited_per_query(small_index, queries, 16, 20) is None  # flat: everything is scanned


def test_encoder_flops_formula_and_tokens(encoder) -> None:
    shape = EncoderShape.of(encoder)
    assert (shape.layers, shape.hidden, shape.ffn) == (6, 384, 1536)
    per_layer = 2 * 10 * (4 * 384**2 + 2 * 384 * 1536) + 4 * 10**2 * 384
    assert shape.flops(10) == 6 * per_layer and shape.flops(10, layers=2) == 2 * per_layer
    # [CLS] wing flutter [SEP]
    assert count_tokens(encoder, ["wing flutter", ""]).tolist() == [4, 2]
