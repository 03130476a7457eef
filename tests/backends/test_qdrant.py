"""A funnel index exported to Qdrant (qdrant-client's embedded mode) answers like the local index."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
from helpers import SAMPLE, assert_same_ranking, vector_index

from funnel.corpus import open_corpus
from funnel.errors import InputError
from funnel.indexes.builder import IndexConfig, build_index
from funnel.indexes.index import Index
from funnel.indexes.shortlist import make_spec
from funnel.indexes.updates import add_corpus, delete_documents
from funnel.retriever import Retriever
from funnel.vectors import normalize

pytest.importorskip("qdrant_client")

from funnel.backends.qdrant import (
    ExportOptions,
    QdrantError,
    connect,
    export_index,
    index_batches,
    layout_of_index,
    point_id,
    upload,
)
from funnel.backends.qdrant_retriever import QdrantIndex, QdrantRetriever

QUERIES = [
    "play a puzzle game over the network",
    "read e-mail in a terminal",
    "python library for http requests",
    "compress files into an archive",
    "font for typesetting documents",
    "monitor network traffic",
    "a library to parse XML",
    "edit images from the command line",
    "chess engine",
    "backup files to a remote server",
    "perl module for dates and times",
    "documentation for developers",
    "music player for the desktop",
    "translate text between languages",
    "manage virtual machines",
    "a tool to check spelling",
]
PLANS = ["64:100,full:10", "128:40,full:10", "64:150,128:40,full:10", "64:20,128:12,full:10"]
INDEXED = 250  # rows of the sample in the index; the rest are added by the add test


@pytest.fixture(scope="module")
def sample_parts(tmp_path_factory):
    folder = tmp_path_factory.mktemp("qdrant-corpus")
    table = pq.read_table(SAMPLE)
    pq.write_table(table.slice(0, INDEXED), folder / "indexed.parquet")
    pq.write_table(table.slice(INDEXED, 10), folder / "more.parquet")
    return folder


@pytest.fixture(scope="module")
def local_index(tmp_path_factory, sample_parts, encoder):
    """A real index (64- and 128-dim flat shortlists, stored rotated) over 250 Debian descriptions. Read-only."""
    path = tmp_path_factory.mktemp("qdrant-index") / "debian"
    config = IndexConfig(shortlists=(make_spec(64), make_spec(128)), rotation="pca")
    return build_index(open_corpus(sample_parts / "indexed.parquet"), encoder, path, config)


def test_the_rotation_travels_with_the_export(local_index, exported):
    _, summary = exported
    rotation = Index.load(local_index).rotation(None)
    assert rotation is not None and summary.layout.rotation_matrix is not None
    np.testing.assert_array_equal(summary.layout.rotation_matrix, rotation)


@pytest.fixture(scope="module")
def query_vectors(encoder):
    return encoder.encode(QUERIES)


@pytest.fixture(scope="module")
def exported(local_index):
    client = connect(":memory:")
    summary = export_index(Index.load(local_index), client, ExportOptions("debian", batch_size=64), location=":memory:")
    return client, summary


def _positions(index: Index, ids: list[list[str]]) -> np.ndarray:
    where = {doc_id: position for position, doc_id in enumerate(index.ids())}
    return np.array([[where[i] for i in row] for row in ids])


@pytest.mark.parametrize("plan", PLANS)
def test_exported_collection_gives_the_local_top10(local_index, exported, encoder, query_vectors, plan):
    client, _ = exported
    local = Retriever(Index.load(local_index), encoder)
    remote = QdrantRetriever(QdrantIndex(client, "debian"), encoder)
    expected = local.search_vectors(query_vectors, 10, plan)
    got = remote.search_vectors(query_vectors, 10, plan)
    assert_same_ranking(expected.scores, expected.positions, got.scores, _positions(local.index, got.ids))


def test_export_writes_named_vectors_and_payload(local_index, exported):
    client, summary = exported
    assert summary.points == INDEXED and summary.uploaded == INDEXED and summary.layout.complete
    vectors = client.get_collection("debian").config.params.vectors
    assert {name: params.size for name, params in vectors.items()} == {"d64": 64, "d128": 128, "full": 384}
    assert vectors["d64"].hnsw_config.m > 0 and vectors["full"].hnsw_config.m == 0 and vectors["full"].on_disk
    index = Index.load(local_index)
    first = index.documents([0])[0]
    point = client.retrieve("debian", ids=[point_id(first["id"])], with_vectors=True)[0]
    assert point.payload == {"id": first["id"], "title": first["title"], "text": first["text"], "metadata": first["metadata"]}
    # Qdrant's cosine re-normalizes what it stores: the float16 vector, scaled to unit length.
    np.testing.assert_allclose(point.vector["full"], normalize(index.vectors(np.array([0])))[0], atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(point.vector["d64"]), 1.0, atol=1e-5)


def test_search_gives_the_same_hits(local_index, exported, encoder):
    client, _ = exported
    local = Retriever(Index.load(local_index), encoder)
    remote = QdrantRetriever(QdrantIndex(client, "debian"), encoder)
    for mine, theirs in zip(local.search_batch(QUERIES[:4], 5, "64:60,full:10"), remote.search_batch(QUERIES[:4], 5, "64:60,full:10")):
        assert [(h.id, h.rank, h.text, h.title, h.metadata) for h in mine] == [(h.id, h.rank, h.text, h.title, h.metadata) for h in theirs]
        np.testing.assert_allclose([h.score for h in mine], [h.score for h in theirs], atol=1e-4)
    # The default plan (no stages given) is the local one too.
    assert remote.plan(10) == local.plan(10)
    assert [h.id for h in remote.search(QUERIES[0], 3)] == [h.id for h in local.search(QUERIES[0], 3)]


def test_the_tuned_plan_travels_with_its_middle_dim(tmp_path, local_index, encoder, query_vectors):
    from funnel.tuning.store import save_plan

    copy = shutil.copytree(local_index, tmp_path / "tuned")
    save_plan(copy, {"k": 10, "stages": "64:80,96:25,full:10", "target_recall": 0.99})
    client = connect(":memory:")
    summary = export_index(Index.load(copy), client, ExportOptions("tuned"))
    assert summary.layout.rescore_dims == (96,)
    remote = QdrantRetriever(QdrantIndex(client, "tuned"), encoder)
    local = Retriever(Index.load(copy), encoder)
    assert str(",".join(map(str, remote.plan(10)))) == "64:80,96:25,full:10"
    expected, got = local.search_vectors(query_vectors, 10), remote.search_vectors(query_vectors, 10)
    assert_same_ranking(expected.scores, expected.positions, got.scores, _positions(local.index, got.ids))
    assert client.get_collection("tuned").config.params.vectors["d96"].hnsw_config.m == 0


def test_add_and_delete_reach_the_collection(tmp_path, local_index, sample_parts, encoder, query_vectors):
    copy = shutil.copytree(local_index, tmp_path / "copy")
    client = connect(":memory:")
    export_index(Index.load(copy), client, ExportOptions("live"))
    remote = QdrantRetriever(QdrantIndex(client, "live"), encoder)
    more = open_corpus(sample_parts / "more.parquet")
    assert remote.add(more) == 10
    add_corpus(copy, more, encoder)
    new_ids = pq.read_table(sample_parts / "more.parquet").column("id").to_pylist()
    assert remote.index.count == INDEXED + 10
    with pytest.raises(InputError, match="in the collection already"):
        remote.add(more)

    gone = [new_ids[0], Index.load(copy).ids()[3]]
    assert remote.delete(gone) == 2
    delete_documents(copy, gone)
    assert remote.index.count == INDEXED + 8
    with pytest.raises(InputError, match="not in the collection"):
        remote.delete(["no-such-package"])

    local = Retriever(Index.load(copy), encoder)
    for plan in ("64:100,full:10", "64:150,128:40,full:10"):
        expected, got = local.search_vectors(query_vectors, 10, plan), remote.search_vectors(query_vectors, 10, plan)
        assert_same_ranking(expected.scores, expected.positions, got.scores, _positions(local.index, got.ids))
    # An added document is found by its own text; a deleted one never comes back.
    text = pq.read_table(sample_parts / "more.parquet").column("text")[1].as_py()
    assert remote.search(text, 1)[0].id == new_ids[1]
    assert gone[0] not in {h.id for h in remote.search(pq.read_table(sample_parts / "more.parquet").column("text")[0].as_py(), 10)}


def test_an_interrupted_export_resumes(tmp_path, local_index, encoder, query_vectors):
    index = Index.load(local_index)
    client = connect(str(tmp_path / "qdrant"))
    options = ExportOptions("resumed", batch_size=32)

    def crashing():
        for number, batch in enumerate(index_batches(index, rows=50)):
            if number == 2:
                raise KeyboardInterrupt  # the upload dies after 100 rows
            yield batch

    with pytest.raises(KeyboardInterrupt):
        upload(crashing(), client, layout_of_index(index, options), options)
    with pytest.raises(InputError, match="did not finish"):
        QdrantIndex(client, "resumed")
    with pytest.raises(InputError, match="already exists"):
        export_index(index, client, options)
    summary = export_index(index, client, ExportOptions("resumed", batch_size=32, resume=True))
    assert summary.resumed_from == 96 and summary.uploaded == INDEXED - 96 and summary.points == INDEXED
    local = Retriever(index, encoder)
    remote = QdrantRetriever(QdrantIndex(client, "resumed"), encoder)
    expected, got = local.search_vectors(query_vectors, 10, "64:100,full:10"), remote.search_vectors(query_vectors, 10, "64:100,full:10")
    assert_same_ranking(expected.scores, expected.positions, got.scores, _positions(local.index, got.ids))
    client.close()


def test_clear_errors(tmp_path, exported, encoder, query_vectors):
    client, _ = exported
    with pytest.raises(QdrantError, match="cannot reach Qdrant at http://127.0.0.1:9"):
        connect("http://127.0.0.1:9", timeout=2)
    with pytest.raises(QdrantError, match="no collection 'nope'.*debian"):
        QdrantIndex(client, "nope")
    remote = QdrantRetriever(QdrantIndex(client, "debian"), encoder)
    with pytest.raises(InputError, match="rescores at 96 dims.*--rescore-dim 96"):
        remote.search_vectors(query_vectors, 10, "64:100,96:20,full:10")
    with pytest.raises(InputError, match="shortlists at: 64, 128"):
        remote.search_vectors(query_vectors, 10, "32:100,full:10")
    with pytest.raises(InputError, match="full model's vectors only"):
        remote.search_vectors(query_vectors, 10, "2:64:100,full:10")
    with pytest.raises(InputError, match="funnel only narrows"):
        remote.search("a query", 10, "64:10,full:20")

    small = vector_index(
        tmp_path / "small", np.random.default_rng(0).normal(size=(40, 32)).astype(np.float32), IndexConfig(shortlists=(make_spec(16),))
    )
    export_index(Index.load(small), client, ExportOptions("small"))
    with pytest.raises(InputError, match="384-dim vectors but the collection holds 32-dim"):
        QdrantRetriever(QdrantIndex(client, "small"), encoder)
    client.create_collection("foreign")
    with pytest.raises(QdrantError, match="not written by funnel"):
        QdrantIndex(client, "foreign")


@pytest.mark.slow
def test_cli_export(tmp_path, local_index):
    from test_cli import assert_one_line_error, funnel

    target = tmp_path / "qdrant"
    done = funnel("export", local_index, "--qdrant", target, "--collection", "debian", "--quantization", "scalar", "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["points"] == INDEXED and summary["shortlist_dims"] == [64, 128] and summary["quantization"] == "scalar"
    assert_one_line_error(funnel("export", local_index, "--qdrant", target, "--collection", "debian"), "already exists")
    assert_one_line_error(
        funnel("export", local_index, "--qdrant", target, "--collection", "x", "--quantization", "pq"), "quantization 'pq'"
    )


def test_a_corpus_encodes_straight_into_a_collection(sample_parts, encoder):
    from funnel.backends.build import build_to_qdrant

    client = connect(":memory:")
    summary = build_to_qdrant(open_corpus(sample_parts / "more.parquet"), encoder, IndexConfig(), client, ExportOptions("direct"))
    assert summary.points == 10 and summary.layout.shortlist_dims == (64,) and summary.layout.complete
    remote = QdrantRetriever(QdrantIndex(client, "direct"), encoder)
    table = pq.read_table(sample_parts / "more.parquet")
    assert remote.search(table.column("text")[4].as_py(), 1, "64:10,full:1")[0].id == table.column("id")[4].as_py()


def test_cli_refuses_ray_options_without_ray(sample_parts):
    from test_cli import assert_one_line_error, funnel

    assert_one_line_error(funnel("index", sample_parts / "more.parquet", "--workers", "2"), "--ray-address and --workers go with --ray")
    assert_one_line_error(funnel("index", sample_parts / "more.parquet", "--backend", "qdrant"), "--backend qdrant needs --qdrant")


def test_a_build_into_qdrant_refuses_a_rotation_it_cannot_fit(sample_parts, encoder):
    """It streams each batch out as it is encoded: no corpus to fit a PCA rotation on first."""
    from funnel.backends.build import build_to_qdrant

    client = connect(":memory:")
    with pytest.raises(InputError, match=r"cannot fit a rotation: build a local index with --rotation pca and `funnel export` it"):
        build_to_qdrant(open_corpus(sample_parts / "more.parquet"), encoder, IndexConfig(rotation="pca"), client, ExportOptions("rotated"))
    assert not client.collection_exists("rotated"), "refused before anything was written"
