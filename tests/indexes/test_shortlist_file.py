"""Shortlist files written while streaming equal what FAISS itself writes."""

from __future__ import annotations

import numpy as np
import pytest
from index_helpers import unit_rows

from funnel.indexes import shortlist


def chunked(vectors: np.ndarray, size: int = 70):
    return lambda: (vectors[s : s + size] for s in range(0, len(vectors), size))


def test_streamed_flat_file_is_byte_identical_to_faiss(tmp_path):
    vectors = unit_rows(500, dim=96).astype(np.float16)
    spec = shortlist.make_spec(32)
    shortlist.build_file(spec, chunked(vectors), len(vectors), tmp_path / "streamed.faiss")
    shortlist.write(shortlist.build(spec, chunked(vectors), len(vectors)), spec, tmp_path / "faiss.faiss")
    assert (tmp_path / "streamed.faiss").read_bytes() == (tmp_path / "faiss.faiss").read_bytes()


@pytest.mark.parametrize("kind", shortlist.KINDS)
def test_every_kind_round_trips_through_a_file(tmp_path, kind):
    vectors = unit_rows(400, dim=64)
    spec = shortlist.make_spec(32, kind)
    path = tmp_path / f"{kind}.faiss"
    shortlist.build_file(spec, chunked(vectors), len(vectors), path)
    loaded = shortlist.read(spec, path, use_gpu=False)
    scores, rows = shortlist.search(loaded, spec, vectors[:5], 3)
    assert loaded.ntotal == 400 and rows[:, 0].tolist() == [0, 1, 2, 3, 4]
