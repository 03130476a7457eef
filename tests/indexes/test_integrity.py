"""A truncated or altered index file is reported by name: on load (sizes and sampled digests) and
by `funnel verify` (every byte, and each file against the others)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import vector_index, write_signed_manifest
from index_helpers import unit_rows

from funnel.errors import IndexFormatError
from funnel.indexes.builder import IndexConfig
from funnel.indexes.index import Index
from funnel.indexes.manifest import SAMPLE_BYTES, read_manifest
from funnel.indexes.shortlist import make_spec
from funnel.indexes.updates import delete_documents
from funnel.indexes.verify import verify_index

REPO = Path(__file__).resolve().parents[2]


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def truncate(path: Path, drop: int = 7) -> None:
    with path.open("r+b") as handle:
        handle.truncate(path.stat().st_size - drop)


FILES = ["seg-000000/documents.arrow", "seg-000000/vectors.f16", "seg-000000/shortlist-d64.faiss", "seg-000000/shortlist-d128.faiss"]


@pytest.mark.parametrize("name", FILES)
@pytest.mark.parametrize("damage", ["truncated", "altered"])
def test_damaged_file_is_named_on_load_and_by_verify(index_copy, name, damage):
    path = index_copy / name
    if damage == "truncated":
        truncate(path)
        expected = rf"{name} holds \d+ bytes but the manifest says \d+; the file is truncated or altered"
    else:
        flip_byte(path, min(path.stat().st_size // 2, SAMPLE_BYTES // 2))  # within what load samples
        expected = rf"{name} does not match its checksum in the manifest; the file is altered or damaged"
    with pytest.raises(IndexFormatError, match=expected):
        Index.load(index_copy)
    report = verify_index(index_copy)
    assert not report.ok and any(name in problem for problem in report.problems), report.problems


def test_missing_file_is_named(index_copy):
    (index_copy / "seg-000000" / "shortlist-d64.faiss").unlink()
    with pytest.raises(IndexFormatError, match=r"seg-000000/shortlist-d64.faiss is missing"):
        Index.load(index_copy)


def test_altered_tombstone_is_named(index_copy):
    delete_documents(index_copy, [Index.load(index_copy).ids()[3]])
    [tombstone] = index_copy.glob("seg-000000.deleted-*.npy")
    flip_byte(tombstone, tombstone.stat().st_size - 1)
    with pytest.raises(IndexFormatError, match=rf"{tombstone.name} does not match its checksum"):
        Index.load(index_copy)
    assert any(tombstone.name in p for p in verify_index(index_copy).problems)


def test_manifest_that_lies_about_counts_is_caught(index_copy):
    manifest = json.loads((index_copy / "manifest.json").read_text())
    manifest["segments"][0]["count"] = 149
    write_signed_manifest(index_copy, manifest)
    with pytest.raises(IndexFormatError, match=r"documents.arrow holds 150 documents, the manifest says 149"):
        Index.load(index_copy)
    assert not verify_index(index_copy).ok


def test_alteration_in_the_middle_of_the_vectors_is_caught_on_load_and_by_verify(tmp_path):
    """The default load hashes every byte; the sampled check reads the first and last 64 KiB."""
    path = vector_index(tmp_path / "big", unit_rows(400), IndexConfig(shortlists=(make_spec(64),)))
    vectors = path / "seg-000000" / "vectors.f16"
    assert vectors.stat().st_size > 2 * SAMPLE_BYTES + 2
    middle = vectors.stat().st_size // 2
    data = bytearray(vectors.read_bytes())
    data[middle : middle + 2] = np.float16(0.75).tobytes()  # a plausible value: norms barely move
    vectors.write_bytes(bytes(data))
    with pytest.raises(IndexFormatError, match=r"vectors.f16 does not match its checksum"):
        Index.load(path)
    Index.load(path, integrity="sampled")  # the sampled check does not read the middle
    report = verify_index(path)
    assert [p for p in report.problems if "vectors.f16 does not match its checksum" in p], report.problems


def test_verify_passes_a_sound_index_and_the_cli_names_damage(index_copy):
    report = verify_index(index_copy)
    lexical = read_manifest(index_copy).lexical
    assert lexical is not None  # documents, vectors, shortlist, rotation and the lexical index's files
    assert report.ok and report.documents == 150 and report.files == 4 + len(lexical.files)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    ok = subprocess.run([sys.executable, "-m", "funnel", "verify", str(index_copy)], env=env, capture_output=True, text=True)
    assert ok.returncode == 0 and f"ok (150 documents; {4 + len(lexical.files)} files" in ok.stdout
    flip_byte(index_copy / "seg-000000" / "documents.arrow", 100)
    bad = subprocess.run([sys.executable, "-m", "funnel", "verify", str(index_copy)], env=env, capture_output=True, text=True)
    assert bad.returncode == 1
    assert "problem: " in bad.stderr and "seg-000000/documents.arrow does not match its checksum" in bad.stderr
