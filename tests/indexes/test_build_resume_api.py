"""build_index resumes from a real corpus without encoding the rows it already wrote, and a
reader racing a writer loads the newer version instead of reporting damage."""

from __future__ import annotations

import os

import pytest
from helpers import HashEncoder, documents
from index_helpers import folder_files, unit_rows

from funnel.corpus import open_corpus
from funnel.errors import InputError
from funnel.indexes import index as index_module
from funnel.indexes.builder import IndexConfig, build_index, partial_path
from funnel.indexes.index import Index
from funnel.indexes.shortlist import make_spec
from funnel.indexes.updates import add_documents, compact_index, delete_documents


def test_build_index_resumes_where_it_stopped(tmp_path, cranfield_parquet):
    # pca: a rotated index (fitted after the last row) resumes to the same bytes, rotation included.
    config = IndexConfig(shortlists=(make_spec(16),), rotation="pca")
    reference = build_index(open_corpus(cranfield_parquet, batch_size=16), HashEncoder(), tmp_path / "reference", config)
    target = tmp_path / "index"
    with pytest.raises(KeyboardInterrupt):
        build_index(open_corpus(cranfield_parquet, batch_size=16), HashEncoder(fail_on_call=5), target, config)
    assert partial_path(target).exists() and not target.exists()
    resumed = HashEncoder()
    build_index(open_corpus(cranfield_parquet, batch_size=16), resumed, target, config, resume=True)
    assert resumed.texts == 150 - 4 * 16, "rows written before the interruption are not encoded again"
    assert folder_files(target) == folder_files(reference)
    assert (target / "rotation.f32").exists() and Index.load(target).rotation() is not None


def test_resume_of_a_changed_corpus_is_refused(tmp_path, cranfield_parquet):
    import shutil

    corpus = tmp_path / "corpus.parquet"
    shutil.copy(cranfield_parquet, corpus)
    config = IndexConfig(shortlists=(make_spec(16),))
    with pytest.raises(KeyboardInterrupt):
        build_index(open_corpus(corpus, batch_size=16), HashEncoder(fail_on_call=3), tmp_path / "index", config)
    os.utime(corpus, ns=(1, 1))  # the corpus changed since the interrupted build
    with pytest.raises(InputError, match="started with other settings or another corpus"):
        build_index(open_corpus(corpus, batch_size=16), HashEncoder(), tmp_path / "index", config, resume=True)


def test_reader_racing_a_writer_loads_the_newer_version(index_copy, monkeypatch):
    original = index_module._load_segments
    raced = {"done": False}

    def racing(folder, manifest, use_gpu, integrity="full"):
        if not raced["done"]:
            raced["done"] = True
            # Between reading the manifest and opening its files, two writes make them garbage.
            delete_documents(index_copy, ["doc-x"], ignore_missing=True)
            add_documents(index_copy, [(documents(2, 900), unit_rows(2))])
            delete_documents(index_copy, [Index.load(index_copy).ids()[0]])
            compact_index(index_copy)
            add_documents(index_copy, [(documents(2, 950), unit_rows(2, seed=1))])
        return original(folder, manifest, use_gpu, integrity)

    monkeypatch.setattr(index_module, "_load_segments", racing)
    index = Index.load(index_copy)
    assert index.count == 150 + 2 - 1 + 2 and index.version == 4
