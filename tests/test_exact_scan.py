"""The exact scan behind ``full:K``: Panorama and the flat scan return the same top-k, the choice
between them follows the stored spectrum, and ``full:K`` runs on every index, deletions and all."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import assert_same_ranking, vector_index

from funnel.indexes.builder import IndexConfig
from funnel.indexes.index import Index
from funnel.indexes.shortlist import make_spec
from funnel.indexes.updates import add_documents, delete_documents
from funnel.search.exact import (
    PANORAMA_BATCH,
    PANORAMA_LEVEL_DIMS,
    PANORAMA_MIN_DIM,
    PANORAMA_MIN_ROWS,
    PANORAMA_WIDE_BATCH,
    PANORAMA_WIDE_LEVEL_DIMS,
    PANORAMA_WIDE_MIN_FRONT_ENERGY,
    PANORAMA_WIDE_MIN_ROWS,
    ExactReference,
    ScanChoice,
    choose_scan,
)
from funnel.search.plan import Plan
from funnel.search.run import run_funnel

DIM = 128
# A spectrum like a rotated embedding's: the first dims carry most of the energy.
FRONT_LOADED = np.exp(-np.arange(DIM) / 20.0)


def front_loaded(rng: np.random.Generator, count: int) -> np.ndarray:
    return (rng.normal(size=(count, DIM)) * np.sqrt(FRONT_LOADED)).astype(np.float32)


@pytest.fixture(scope="module")
def index(tmp_path_factory) -> Index:
    path = vector_index(
        tmp_path_factory.mktemp("exact") / "index",
        front_loaded(np.random.default_rng(0), 3000),
        IndexConfig(shortlists=(make_spec(16, "hnsw"),)),
        batch=1000,
    )
    return Index.load(path)


def unit(vectors: np.ndarray) -> np.ndarray:
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize(("levels", "batch"), [(8, 128), (4, PANORAMA_WIDE_BATCH)])  # narrow levels; wide ones
def test_panorama_returns_the_flat_scans_top_k(index, levels, batch):
    queries = unit(front_loaded(np.random.default_rng(1), 40))
    flat = ExactReference(index, scan=ScanChoice(False))
    panorama = ExactReference(index, scan=ScanChoice(True, levels=levels, batch=batch))
    assert type(panorama.flat).__name__ == "IndexFlatIPPanorama"
    assert_same_ranking(*panorama.search(queries, 20), *flat.search(queries, 20), tolerance=1e-5)
    stored = unit(index.all_vectors())
    cosines = np.sort(stored @ index.stored_queries(queries).vectors.T, axis=0)[::-1][:20].T
    np.testing.assert_allclose(panorama.search(queries, 20)[0], cosines, atol=1e-5)


def test_the_scan_follows_the_spectrum_and_the_size():
    rng = np.random.default_rng(2)
    rotated = unit(front_loaded(rng, 500))
    even = unit(rng.normal(size=(500, DIM)).astype(np.float32))
    chosen = choose_scan(rotated, PANORAMA_MIN_ROWS, DIM)
    assert chosen.panorama and DIM % chosen.levels == 0 and chosen.front_energy > 0.5
    assert not choose_scan(even, PANORAMA_MIN_ROWS, DIM).panorama  # energy spread evenly: little to prune
    assert not choose_scan(rotated, PANORAMA_MIN_ROWS - 1, DIM).panorama  # too small to pay
    assert not choose_scan(rotated[:, : PANORAMA_MIN_DIM // 2], PANORAMA_MIN_ROWS, PANORAMA_MIN_DIM // 2).panorama


def test_levels_widen_for_large_front_loaded_indexes_with_dims_enough_for_four_of_them():
    dim = 4 * PANORAMA_WIDE_LEVEL_DIMS

    def decaying(scale: float) -> np.ndarray:  # energy falling as exp(-dim / scale)
        rng = np.random.default_rng(int(scale))
        return unit((rng.normal(size=(500, dim)) * np.exp(-np.arange(dim) / scale / 2)).astype(np.float32))

    rotated = decaying(40.0)  # front quarter: 0.8 of the energy
    narrow = choose_scan(rotated, PANORAMA_WIDE_MIN_ROWS - 1, dim)
    assert (narrow.levels, narrow.batch) == (dim // PANORAMA_LEVEL_DIMS, PANORAMA_BATCH)
    wide = choose_scan(rotated, PANORAMA_WIDE_MIN_ROWS, dim)
    assert wide.front_energy >= PANORAMA_WIDE_MIN_FRONT_ENERGY
    assert (wide.levels, wide.batch) == (dim // PANORAMA_WIDE_LEVEL_DIMS, PANORAMA_WIDE_BATCH)
    half = choose_scan(rotated[:, : dim // 2], PANORAMA_WIDE_MIN_ROWS, dim // 2)  # two wide levels: too few
    assert half.levels == dim // 2 // PANORAMA_LEVEL_DIMS
    spread = choose_scan(decaying(80.0), PANORAMA_WIDE_MIN_ROWS, dim)  # front 0.57: too weak to prune on alone
    assert spread.panorama and spread.front_energy < PANORAMA_WIDE_MIN_FRONT_ENERGY
    assert spread.levels == dim // PANORAMA_LEVEL_DIMS


def test_full_k_runs_on_an_index_without_a_full_dim_shortlist(index):
    queries = unit(front_loaded(np.random.default_rng(3), 5))
    result = run_funnel(index, queries, Plan.parse("full:10"), 10)
    assert_same_ranking(result.scores, result.positions, *ExactReference(index).search(queries, 10))
    narrowed = run_funnel(index, queries, Plan.parse("full:50,full:10"), 10)
    assert_same_ranking(narrowed.scores, narrowed.positions, result.scores, result.positions)


def test_full_k_skips_deleted_rows_across_segments(tmp_path):
    from helpers import documents

    rng = np.random.default_rng(4)
    path = vector_index(tmp_path / "index", front_loaded(rng, 400), IndexConfig(shortlists=(make_spec(16),)))
    extra = unit(front_loaded(rng, 100))
    add_documents(path, [(documents(100, 400), extra)])
    queries = extra[:3]  # their best hit is themselves, which is then deleted
    delete_documents(path, [f"doc-{i}" for i in range(400, 403)])
    updated = Index.load(path)
    result = run_funnel(updated, queries, Plan.parse("full:10"), 10)
    live = set(updated.live_positions().tolist())
    assert set(result.positions.ravel().tolist()) <= live
    assert not set(result.positions.ravel().tolist()) & {400, 401, 402}
    assert_same_ranking(result.scores, result.positions, *ExactReference(updated).search(queries, 10))


def test_full_k_alone_is_exact_over_a_quantized_full_dim_shortlist(tmp_path):
    """A stored full-dim PQ shortlist proposes candidates for later stages, but a plan of one
    full-dim stage returns exact search's answer and is costed as exact search (it once was costed
    as a PQ scan, so the tuner took it for the cheapest plan)."""
    from funnel.search.run import first_stage
    from funnel.tuning.search_space import exact_cost, plan_cost

    rng = np.random.default_rng(5)
    index = Index.load(vector_index(tmp_path / "pq", front_loaded(rng, 1500), IndexConfig(shortlists=(make_spec(DIM, "pq-fastscan"),))))
    queries = unit(front_loaded(rng, 8))
    alone = run_funnel(index, queries, Plan.parse("full:10"), 10)
    exact = ExactReference(index).search(queries, 10)
    assert_same_ranking(alone.scores, alone.positions, *exact)
    proposed, _ = first_stage(index, index.stored_queries(queries), DIM, 10, final=False)
    assert not np.allclose(proposed, exact[0], atol=1e-3)  # the PQ codes' approximate scores
    assert plan_cost(index, Plan.parse("full:10")) == exact_cost(index)
