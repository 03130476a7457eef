"""Regression tests of the second adversarial test (issue 22): resume of another corpus's build,
edited or hostile manifests, versions after --overwrite, and what an interrupted swap leaves."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
from helpers import HashEncoder

from funnel.corpus import open_corpus
from funnel.errors import IndexFormatError, InputError
from funnel.indexes import builder
from funnel.indexes.builder import IndexConfig, build_index, partial_path
from funnel.indexes.index import Index
from funnel.indexes.manifest import MANIFEST_FILE, read_manifest
from funnel.indexes.shortlist import make_spec
from funnel.indexes.updates import delete_documents
from funnel.indexes.verify import verify_index

CONFIG = IndexConfig(shortlists=(make_spec(16),))


@pytest.fixture
def two_corpora(tmp_path, cranfield_parquet):
    first = tmp_path / "first.parquet"
    shutil.copy(cranfield_parquet, first)
    second = tmp_path / "second.parquet"
    pq.write_table(pq.read_table(cranfield_parquet).slice(0, 90), second)
    return first, second


def build(corpus, target, **options):
    return build_index(open_corpus(corpus, batch_size=32), HashEncoder(), target, CONFIG, **options)


def interrupt_before_swap(monkeypatch):
    def interrupted(temp, target):
        raise KeyboardInterrupt

    monkeypatch.setattr(builder, "_swap_into_place", interrupted)


def test_resume_never_installs_a_finished_build_of_another_corpus(tmp_path, two_corpora, monkeypatch):
    first, second = two_corpora
    target = tmp_path / "index"
    with monkeypatch.context() as patched:
        interrupt_before_swap(patched)
        with pytest.raises(KeyboardInterrupt):
            build(first, target)
    assert (partial_path(target) / MANIFEST_FILE).is_file(), "the build finished; only the swap was left"
    with pytest.raises(InputError, match="started with other settings or another corpus: pass --overwrite"):
        build(second, target, resume=True)
    assert not target.exists()
    build(first, target, resume=True)  # the corpus it was started with: installed
    assert Index.load(target).count == 150


def test_an_overwrite_interrupted_after_the_exchange_resumes_to_the_new_index(tmp_path, two_corpora, monkeypatch):
    """The old index lies at the partial path for an instant; a resume must not put it back."""
    first, second = two_corpora
    target = tmp_path / "index"
    build(first, target)
    with monkeypatch.context() as patched:
        original = builder._exchange

        def exchange_then_die(one, other):
            original(one, other)
            raise KeyboardInterrupt

        patched.setattr(builder, "_exchange", exchange_then_die)
        with pytest.raises(KeyboardInterrupt):
            build(second, target, overwrite=True)
    assert Index.load(target).count == 90 and (partial_path(target) / builder.RETIRED_MARK).exists()
    build(second, target, overwrite=True, resume=True)
    assert Index.load(target).count == 90, "the new index stays in place"
    assert not partial_path(target).exists() and not list(tmp_path.glob(".index.*"))


def test_versions_keep_increasing_across_overwrite(tmp_path, two_corpora):
    first, second = two_corpora
    target = tmp_path / "index"
    build(first, target)
    delete_documents(target, ["1", "2"])
    assert Index.load(target).version == 1
    build(second, target, overwrite=True)
    assert Index.load(target).version == 2, "a client caching by version must never see 0 again"


def test_retired_folders_of_an_interrupted_cleanup_are_removed_by_the_next_write(tmp_path, two_corpora):
    first, _ = two_corpora
    target = tmp_path / "index"
    build(first, target)
    left = tmp_path / ".index.old-ab_c1234"  # what a kill during the clean-up of an overwrite leaves
    shutil.copytree(target, left)
    unrelated = [tmp_path / ".index.old-notours", tmp_path / ".other.old-ab_c1234"]
    for folder in unrelated:
        folder.mkdir()
    delete_documents(target, ["1"])
    assert not left.exists()
    assert all(folder.exists() for folder in unrelated), "only names funnel makes are removed"


def test_overwrite_of_a_symlinked_index_replaces_what_the_link_names(tmp_path, two_corpora):
    first, second = two_corpora
    real = tmp_path / "real"
    build(first, real)
    link = tmp_path / "link"
    link.symlink_to(real)
    build(second, link, overwrite=True)
    assert link.is_symlink() and Index.load(link).count == 90 and Index.load(real).count == 90
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no dangling .link.old-* left"


@pytest.fixture
def small_index(tmp_path, two_corpora):
    target = tmp_path / "index"
    build(two_corpora[1], target)
    delete_documents(target, ["1", "2", "3"])
    return target


def edit_manifest(path, edit):
    data = json.loads((path / MANIFEST_FILE).read_text())
    edit(data)
    (path / MANIFEST_FILE).write_text(json.dumps(data, indent=2))


@pytest.mark.parametrize(
    "edit",
    [
        pytest.param(lambda m: m.update(tombstones=[]), id="tombstones-dropped"),
        pytest.param(lambda m: m.update(rotation=None), id="rotation-null"),
        pytest.param(lambda m: m.update(generation=0), id="version-rewound"),
    ],
)
def test_an_edited_manifest_is_refused_on_load_and_by_verify(small_index, edit):
    edit_manifest(small_index, edit)
    with pytest.raises(IndexFormatError, match="does not match its own checksum"):
        Index.load(small_index)
    report = verify_index(small_index)
    assert any("does not match its own checksum" in problem for problem in report.problems)


def test_reformatting_a_manifest_keeps_its_checksum(small_index):
    edit_manifest(small_index, lambda data: None)  # re-indented, same content
    assert Index.load(small_index).count == 87


def test_a_segment_named_outside_the_folder_is_refused(tmp_path, small_index):
    outside = tmp_path / "evilseg"
    shutil.copytree(small_index / "seg-000000", outside)
    from helpers import write_signed_manifest

    data = json.loads((small_index / MANIFEST_FILE).read_text())
    data["segments"][0]["name"] = "../evilseg"
    data["tombstones"][0]["segment"] = "../evilseg"
    write_signed_manifest(small_index, data)  # even with a valid checksum
    with pytest.raises(IndexFormatError, match=r"lists '\.\./evilseg', which is not a name funnel writes"):
        Index.load(small_index)
    assert not verify_index(small_index).ok


@pytest.mark.parametrize("kind", ["fifo", "device", "folder"])
def test_a_manifest_that_is_not_a_regular_file_is_refused_without_hanging(small_index, kind):
    manifest = small_index / MANIFEST_FILE
    manifest.unlink()
    if kind == "fifo":
        os.mkfifo(manifest)
    elif kind == "device":
        manifest.symlink_to("/dev/urandom")
    else:
        manifest.mkdir()
    with pytest.raises(IndexFormatError, match="is not a regular file"):
        read_manifest(small_index)
    assert not verify_index(small_index).ok


def test_a_manifest_larger_than_any_funnel_writes_is_not_read(small_index):
    with (small_index / MANIFEST_FILE).open("r+b") as handle:
        handle.truncate(65 << 20)
    with pytest.raises(IndexFormatError, match="more than any manifest.json funnel writes"):
        read_manifest(small_index)


def test_the_integrity_setting_is_checked(small_index, monkeypatch):
    monkeypatch.setenv("FUNNEL_INTEGRITY", "sampled")
    assert Index.load(small_index).count == 87
    monkeypatch.setenv("FUNNEL_INTEGRITY", "fast")
    with pytest.raises(InputError, match=r"FUNNEL_INTEGRITY='fast' is not a check funnel knows: choose full or sampled"):
        Index.load(small_index)


def test_a_flipped_byte_in_the_middle_of_the_vectors_stops_the_load(small_index):
    vectors = small_index / "seg-000000" / "vectors.f16"
    data = bytearray(vectors.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 2] = np.float16(0.5).tobytes()
    vectors.write_bytes(bytes(data))
    with pytest.raises(IndexFormatError, match="vectors.f16 does not match its checksum"):
        Index.load(small_index)
