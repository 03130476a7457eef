"""Fixtures for the index storage tests: real Cranfield vectors and texts, saved once per session."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import crash_data  # noqa: E402

from funnel.indexes.builder import write_index  # noqa: E402
from funnel.indexes.index import Index  # noqa: E402


@pytest.fixture(scope="session")
def crash_workdir(tmp_path_factory, cranfield_index) -> Path:
    """documents.arrow + vectors.npy of the 150 real Cranfield documents (vectors from the shared index)."""
    index = Index.load(cranfield_index)
    workdir = tmp_path_factory.mktemp("crash-data")
    documents = index.segments[0].documents
    crash_data.save(workdir, documents, index.all_vectors())
    return workdir


@pytest.fixture(scope="session")
def reference_build(tmp_path_factory, crash_workdir) -> Path:
    """The uninterrupted build every interrupted-and-resumed build must equal. Read-only."""
    path = tmp_path_factory.mktemp("reference") / "index"
    return write_index(crash_data.batches(crash_workdir), path, model="cranfield-vectors", dim=384, config=crash_data.config())


@pytest.fixture
def index_copy(tmp_path, reference_build) -> Path:
    """A private, writable copy of the reference index."""
    path = tmp_path / "index"
    shutil.copytree(reference_build, path)
    return path
