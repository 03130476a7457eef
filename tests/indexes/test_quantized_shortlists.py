"""Quantized prefix shortlists (sq8, hnsw-sq8, pq-fastscan, ivf-pq-fastscan, opq-fastscan) over real MiniLM vectors:
they shortlist well enough for exact rescoring to recover the top-k, take the bytes their codes
promise, and the tuner's cost model knows them."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
from helpers import SAMPLE, vector_index, write_signed_manifest

from funnel.agreement import recall_against
from funnel.errors import IndexFormatError, InputError
from funnel.indexes import shortlist
from funnel.indexes.builder import IndexConfig
from funnel.indexes.index import Index
from funnel.search.exact import exact_search
from funnel.search.plan import Plan
from funnel.search.run import run_funnel
from funnel.tuning.search_space import first_stage_cost
from funnel.vectors import truncate

QUANTIZED = ("sq8", "hnsw-sq8", "pq-fastscan", "ivf-pq-fastscan", "opq-fastscan")


@pytest.fixture(scope="module")
def real_vectors(sample_index) -> np.ndarray:
    """The 300 Debian descriptions' MiniLM vectors in the model's order (rotation undone)."""
    index = Index.load(sample_index)
    rotation = index.rotation()
    stored = index.all_vectors()
    return stored if rotation is None else stored @ rotation.T


@pytest.fixture(scope="module")
def real_queries(encoder, data_dir) -> np.ndarray:
    lines = (data_dir / "debian" / "queries.jsonl").read_text().splitlines()[:40]
    return encoder.encode([json.loads(line)["text"] for line in lines])


@pytest.fixture(scope="module")
def indexes(tmp_path_factory, real_vectors) -> dict[str, Index]:
    folder = tmp_path_factory.mktemp("quantized")
    return {
        kind: Index.load(vector_index(folder / kind, real_vectors, IndexConfig(shortlists=(shortlist.make_spec(64, kind),)), batch=100))
        for kind in ("flat", *QUANTIZED)
    }


@pytest.mark.parametrize("kind", QUANTIZED)
def test_quantized_shortlist_then_exact_rescore_recovers_the_top_10(indexes, real_queries, kind):
    index = indexes[kind]
    truth = exact_search(index, real_queries, 10)[1]
    found = run_funnel(index, real_queries, Plan.parse("64:60,full:10"), 10)
    assert recall_against(found.positions, truth).mean() >= 0.97
    # The last stage's scores are exact cosines, whatever the shortlist's codes were.
    np.testing.assert_allclose(found.scores[:, 0], exact_search(index, real_queries, 1)[0][:, 0], atol=1e-3)


@pytest.mark.parametrize("kind", QUANTIZED)
def test_quantized_shortlist_alone_ranks_close_to_the_float_prefix(indexes, real_queries, kind):
    """The codes approximate the 64-dim prefix: their top-10 mostly agrees with flat's."""
    flat = indexes["flat"].shortlist(indexes["flat"].stored_queries(real_queries), 64, 10)[1]
    coded = indexes[kind].shortlist(indexes[kind].stored_queries(real_queries), 64, 10)[1]
    assert recall_against(coded, flat).mean() >= 0.6


def shortlist_bytes(index: Index) -> int:
    return sum(p.stat().st_size for p in index.path.rglob("shortlist-*"))


def test_codes_take_the_bytes_they_promise(indexes):
    flat = shortlist_bytes(indexes["flat"])
    assert shortlist_bytes(indexes["sq8"]) < flat / 3
    # Fast-scan codes fill whole blocks: 300 vectors take the room of 384.
    blocks = -(-300 // shortlist.FAST_SCAN_BLOCK) * shortlist.FAST_SCAN_BLOCK
    assert shortlist_bytes(indexes["pq-fastscan"]) < flat / 8 * blocks / 300
    spec = indexes["pq-fastscan"].manifest.shortlists[0]
    assert shortlist.code_bytes(spec) == 64 / 4 and shortlist.code_bytes(indexes["flat"].manifest.shortlists[0]) == 64 * 4


def test_cost_model_sees_fewer_bytes_and_cheaper_scans(indexes):
    flat = first_stage_cost(indexes["flat"], 64, 100)
    sq8 = first_stage_cost(indexes["sq8"], 64, 100)
    pq = first_stage_cost(indexes["pq-fastscan"], 64, 100)
    assert sq8.bytes * 4 == flat.bytes and pq.bytes * 16 == flat.bytes
    assert pq.estimated_us < sq8.estimated_us <= flat.estimated_us
    graph = first_stage_cost(indexes["hnsw-sq8"], 64, 100)
    assert graph.bytes == sq8.bytes  # efSearch·M exceeds 300 codes: the graph is visited whole, no more


@pytest.mark.parametrize("kind", ("pq-fastscan", "opq-fastscan", "model-pq-fastscan"))
def test_exhaustive_fast_scan_codes_come_in_large_blocks_and_rank_as_in_small_ones(real_vectors, real_queries, kind):
    """Blocks of FAST_SCAN_BLOCK vectors scan faster one query at a time than FAISS's default 32
    (see shortlist.py); the same codes in 32-vector blocks give the same top-n, padding included
    (300 vectors fill no block of 128)."""
    import faiss

    full = real_vectors.shape[1]
    spec = shortlist.make_spec(full if kind == "model-pq-fastscan" else 64, kind, pq_m=16)
    built = shortlist.build(spec, lambda: iter([real_vectors]), len(real_vectors))
    chain = faiss.downcast_index(built.index) if isinstance(built, faiss.IndexPreTransform) else built
    assert chain.bbs == shortlist.FAST_SCAN_BLOCK == 128
    small = faiss.IndexPQ(spec.dim, 16, 4, faiss.METRIC_INNER_PRODUCT)
    small.pq, small.is_trained = chain.pq, True
    steps = [faiss.downcast_VectorTransform(built.chain.at(i)) for i in range(built.chain.size())] if chain is not built else []

    def coded(vectors: np.ndarray) -> np.ndarray:  # what the codes take: OPQ's rotation first, where there is one
        vectors = np.ascontiguousarray(truncate(vectors, spec.dim))
        for step in steps:
            vectors = step.apply(vectors)
        return vectors

    small.add(coded(real_vectors))
    reference = faiss.IndexPQFastScan(small, 32)
    queries, moved = np.ascontiguousarray(truncate(real_queries, spec.dim)), coded(real_queries)
    for n in (10, 60):
        np.testing.assert_array_equal(np.sort(built.search(queries, n)[1], axis=1), np.sort(reference.search(moved, n)[1], axis=1))


def test_training_sample_spans_the_whole_stream():
    count = 3 * shortlist.TRAINING_ROWS
    angles = np.arange(count) / count  # row i is the unit vector at angle i/count: normalizing keeps it
    rows = np.stack([np.cos(angles), np.sin(angles)], axis=1).astype(np.float32)
    sample = shortlist._training_sample(2, lambda: (rows[s : s + 10_000] for s in range(0, count, 10_000)), count)
    taken = np.rint(np.arctan2(sample[:, 1], sample[:, 0]) * count).astype(np.int64)
    assert len(sample) == shortlist.TRAINING_ROWS
    assert taken[0] == 0 and taken[-1] >= count - 3 and np.all(np.diff(taken) == 3)


def test_pq_parts_must_divide_the_dims():
    with pytest.raises(InputError, match="pq_m=5 does not divide 64"):
        shortlist.make_spec(64, "pq-fastscan", pq_m=5)
    assert shortlist.make_spec(64, "ivf-pq-fastscan", pq_m=16).params == {"nlist": 0, "nprobe": 16, "pq_m": 16}


def test_a_manifest_claiming_another_quantized_kind_is_refused(tmp_path, real_vectors):
    path = vector_index(tmp_path / "index", real_vectors[:100], IndexConfig(shortlists=(shortlist.make_spec(32, "hnsw-sq8"),)))
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["shortlists"][0] = {"dim": 32, "kind": "sq8", "params": {}}
    write_signed_manifest(path, manifest)
    with pytest.raises(IndexFormatError, match="IndexHNSWSQ.*sq8 shortlist"):
        Index.load(path)


def test_cli_builds_a_quantized_shortlist(tmp_path):
    corpus = tmp_path / "debian-40.parquet"
    pq.write_table(pq.read_table(SAMPLE).slice(0, 40), corpus)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}

    def funnel(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "funnel", *args], capture_output=True, text=True, env=env, timeout=300)

    # No --shortlist-dim: the kind applies to the default shortlist (64 dims) too.
    built = funnel("index", str(corpus), "-o", str(tmp_path / "pq"), "--shortlist-index", "pq-fastscan", "--json")
    assert built.returncode == 0, built.stderr
    assert json.loads(built.stdout)["shortlists"] == [{"dim": 64, "kind": "pq-fastscan"}]
    found = funnel("search", str(tmp_path / "pq"), "apt package manager", "--stages", "64:20,full:3", "--json")
    assert found.returncode == 0 and len(json.loads(found.stdout)["hits"]) == 3, found.stderr
    bad = funnel("index", str(corpus), "-o", str(tmp_path / "x"), "--shortlist-index", "pq8")
    assert bad.returncode == 2 and "unknown shortlist kind 'pq8'" in bad.stderr
