import numpy as np
import pytest
from helpers import documents, vector_index

from funnel.corpus import open_corpus
from funnel.errors import IndexFormatError, InputError
from funnel.indexes.builder import IndexConfig, build_index, default_shortlist_dim, write_index
from funnel.indexes.index import Index
from funnel.indexes.manifest import read_manifest
from funnel.indexes.shortlist import make_spec


def test_built_index_holds_documents_vectors_and_shortlists(cranfield_index, cranfield_docs, encoder):
    index = Index.load(cranfield_index)
    assert index.count == len(cranfield_docs) and index.dim == 384
    assert index.shortlist_dims == [64, 128]
    assert index.ids() == [row["_id"] for row in cranfield_docs]
    doc = index.documents([3])[0]
    assert doc["text"] == cranfield_docs[3]["text"] and doc["metadata"] == {"year": 1963}
    manifest = read_manifest(cranfield_index)
    assert manifest.model == "all-MiniLM-L6-v2" and manifest.vector_dtype == "float16"
    assert set(manifest.segments[0].files) == {"documents.arrow", "vectors.f16", "shortlist-d64.faiss", "shortlist-d128.faiss"}
    # Stored vectors are the encoder's in the index's basis, to float16 precision.
    text = f"{cranfield_docs[3]['title']} {cranfield_docs[3]['text']}"
    np.testing.assert_allclose(index.vectors(np.array([3]))[0], index.stored_queries(encoder.encode([text])).vectors[0], atol=2e-3)


def test_default_shortlist_dim_follows_a_nested_model():
    assert default_shortlist_dim(384, {}, 64) == 64
    assert default_shortlist_dim(384, {"nested_dims": [384, 128, 32, 16]}, 64) == 32
    assert default_shortlist_dim(32, {}, 64) == 32


def test_existing_target_needs_overwrite(tmp_path):
    vectors = np.random.default_rng(0).normal(size=(20, 16))
    config = IndexConfig(shortlists=(make_spec(8),))
    path = vector_index(tmp_path / "idx", vectors, config)
    with pytest.raises(InputError, match=r"already exists: choose another --output or pass --overwrite"):
        vector_index(path, vectors, config)
    batches = [(documents(5), np.eye(5, 16, dtype=np.float32))]
    write_index(batches, path, model="m", dim=16, config=config, overwrite=True)
    assert Index.load(path).count == 5
    assert [p.name for p in tmp_path.iterdir()] == ["idx"], "no temporary or retired folders stay behind"


def test_an_interrupted_build_leaves_nothing_behind(tmp_path):
    def batches():
        yield documents(10), np.eye(10, 16, dtype=np.float32)
        raise KeyboardInterrupt  # the user pressed Ctrl-C mid-encoding

    with pytest.raises(KeyboardInterrupt):
        write_index(batches(), tmp_path / "idx", model="m", dim=16, config=IndexConfig(shortlists=(make_spec(8),)))
    # Only the hidden partial build is left, for --resume; nothing loads as an index.
    assert [p.name for p in tmp_path.iterdir()] == [".idx.partial"]
    with pytest.raises(IndexFormatError, match=r"does not exist"):
        Index.load(tmp_path / "idx")
    with pytest.raises(IndexFormatError, match=r"is not a funnel index"):
        Index.load(tmp_path / ".idx.partial")


def test_an_interrupted_rebuild_keeps_the_old_index(tmp_path):
    config = IndexConfig(shortlists=(make_spec(8),))
    path = vector_index(tmp_path / "idx", np.random.default_rng(0).normal(size=(20, 16)), config)

    def failing():
        yield documents(3), np.eye(3, 16, dtype=np.float32)
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_index(failing(), path, model="m", dim=16, config=config, overwrite=True)
    assert Index.load(path).count == 20


def test_build_refuses_bad_corpus_before_writing(tmp_path, encoder):
    corpus_file = tmp_path / "c.jsonl"
    corpus_file.write_text('{"id": "a", "text": "fine"}\n{"id": "a", "text": "again"}\n')
    with pytest.raises(InputError, match=r"duplicate id 'a'"):
        build_index(open_corpus(corpus_file), encoder, tmp_path / "idx")
    assert [p.name for p in tmp_path.iterdir()] == ["c.jsonl"]


@pytest.fixture()
def damaged(tmp_path):
    config = IndexConfig(shortlists=(make_spec(8),))
    return vector_index(tmp_path / "idx", np.random.default_rng(0).normal(size=(30, 16)), config) / "seg-000000"


def test_truncated_vectors_are_reported_by_name(damaged):
    vectors = damaged / "vectors.f16"
    vectors.write_bytes(vectors.read_bytes()[:-32])
    with pytest.raises(IndexFormatError, match=r"vectors.f16 holds \d+ bytes but the manifest says \d+; the file is truncated or altered"):
        Index.load(damaged.parent)


def test_missing_shortlist_is_reported_by_name(damaged):
    (damaged / "shortlist-d8.faiss").unlink()
    with pytest.raises(IndexFormatError, match=r"shortlist-d8.faiss is missing"):
        Index.load(damaged.parent)


def test_garbage_documents_file_is_reported(damaged):
    path = damaged / "documents.arrow"
    path.write_bytes(b"\0" * path.stat().st_size)
    with pytest.raises(IndexFormatError, match=r"documents.arrow (is not readable|does not match its checksum)"):
        Index.load(damaged.parent)


def test_bad_config_values():
    with pytest.raises(InputError, match=r"vector dtype 'int8' is not supported: choose float16 or float32"):
        IndexConfig(vector_dtype="int8")
    with pytest.raises(InputError, match=r"unknown shortlist kind 'pq'"):
        make_spec(64, "pq")
    with pytest.raises(InputError, match=r"multiple of 8"):
        make_spec(20, "binary")
    with pytest.raises(InputError, match=r"shortlist dim 512 does not fit the 384 dims of the vectors"):
        IndexConfig(shortlists=(make_spec(512),)).resolved_shortlists(384, {})
