import json

import pytest

from funnel.errors import IndexFormatError
from funnel.indexes.manifest import (
    FORMAT_VERSION,
    FileEntry,
    Manifest,
    SegmentEntry,
    ShortlistSpec,
    content_checksum,
    read_manifest,
    write_manifest_atomically,
)


def sample_manifest() -> Manifest:
    return Manifest(
        model="all-MiniLM-L6-v2",
        dim=384,
        vector_dtype="float16",
        shortlists=(ShortlistSpec(64, "flat", {}), ShortlistSpec(128, "hnsw", {"m": 32, "ef_construction": 80, "ef_search": 128})),
        segments=(SegmentEntry("seg-000000", 3, {"vectors.f16": FileEntry(2304, "ab" * 32)}),),
        model_metadata={"nested_dims": [64, 384]},
        plan={"stages": "64:200,full:10", "k": 10},
        source={"path": "c.parquet"},
    )


def test_manifest_round_trips(tmp_path):
    manifest = sample_manifest()
    write_manifest_atomically(tmp_path, manifest)
    assert read_manifest(tmp_path) == manifest
    assert json.loads((tmp_path / "manifest.json").read_text())["count"] == 3
    assert not list(tmp_path.glob(".manifest.*")), "the temporary file must be renamed away"


def test_newer_format_version_is_refused(tmp_path):
    data = json.loads(sample_manifest().to_json())
    data["format_version"] = FORMAT_VERSION + 1
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(
        IndexFormatError, match=rf"format version {FORMAT_VERSION + 1}, newer than this funnel reads \({FORMAT_VERSION}\): upgrade funnel"
    ):
        read_manifest(tmp_path)


def test_damaged_manifest(tmp_path):
    (tmp_path / "manifest.json").write_text('{"format": "funnel-index", "format_ver')
    with pytest.raises(IndexFormatError, match=r"not valid JSON .* rebuild it"):
        read_manifest(tmp_path)
    data = json.loads(sample_manifest().to_json())
    del data["segments"]
    data["checksum"] = content_checksum(data)
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(IndexFormatError, match=r"missing or has a bad field .*segments"):
        read_manifest(tmp_path)


def test_folder_that_is_not_an_index(tmp_path):
    with pytest.raises(IndexFormatError, match=r"is not a funnel index \(no manifest.json\)"):
        read_manifest(tmp_path)
    with pytest.raises(IndexFormatError, match=r"does not exist: build it with `funnel index"):
        read_manifest(tmp_path / "missing")
