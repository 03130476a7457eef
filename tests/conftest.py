"""Shared fixtures: the offline MiniLM loaded once, and small indexes of real documents."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session", autouse=True)
def graph_cache(tmp_path_factory) -> Path:
    """Exported ONNX graphs go to a cache of the test session's own (children inherit it), unless
    FUNNEL_CACHE is set already: a suite never writes into the user's ~/.cache."""
    if "FUNNEL_CACHE" not in os.environ:
        os.environ["FUNNEL_CACHE"] = str(tmp_path_factory.mktemp("funnel-cache"))
    return Path(os.environ["FUNNEL_CACHE"])


REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "data"
"""Small slices of the real datasets, inside the repo: what every default test reads."""
SHARED_DATA = Path(os.environ.get("FUNNEL_DATA", REPO.parent / "shared" / "data"))
"""The whole datasets, beside the checkout: only for tests marked ``data`` (``pytest -m data``)."""
SAMPLE = REPO / "examples" / "debian-300.parquet"


def read_jsonl(path: Path, limit: int | None = None) -> list[dict]:
    rows = []
    with path.open() as handle:
        for line in handle:
            rows.append(json.loads(line))
            if limit is not None and len(rows) == limit:
                break
    return rows


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The in-repo fixtures (tests/data): Cranfield, SciFact and Debian slices, training pairs."""
    return FIXTURES


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The whole datasets, for tests marked ``data``; those tests are deselected by default."""
    if not (SHARED_DATA / "cranfield" / "corpus.jsonl").exists():
        pytest.fail(f"the whole datasets are not at {SHARED_DATA}: set FUNNEL_DATA, or run without -m data")
    return SHARED_DATA


@pytest.fixture(scope="session")
def encoder():
    from funnel.models import Encoder

    return Encoder.load()


@pytest.fixture(scope="session")
def cranfield_docs(data_dir: Path) -> list[dict]:
    """The first 150 Cranfield abstracts: small enough to encode in seconds, real enough to rank."""
    return read_jsonl(data_dir / "cranfield" / "corpus.jsonl", limit=150)


@pytest.fixture(scope="session")
def cranfield_queries(data_dir: Path) -> list[str]:
    return [row["text"] for row in read_jsonl(data_dir / "cranfield" / "queries.jsonl", limit=20)]


@pytest.fixture(scope="session")
def cranfield_parquet(tmp_path_factory, cranfield_docs) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "cranfield-150.parquet"
    table = pa.table(
        {
            "id": [row["_id"] for row in cranfield_docs],
            "title": [row["title"] for row in cranfield_docs],
            "text": [row["text"] for row in cranfield_docs],
            "year": [1960 + i % 10 for i in range(len(cranfield_docs))],
        }
    )
    pq.write_table(table, path)
    return path


@pytest.fixture(scope="session")
def cranfield_index(tmp_path_factory, cranfield_parquet, encoder) -> Path:
    """A real index (64- and 128-dim flat shortlists) over 150 Cranfield abstracts. Read-only."""
    from funnel.corpus import open_corpus
    from funnel.indexes.builder import IndexConfig, build_index
    from funnel.indexes.shortlist import make_spec

    path = tmp_path_factory.mktemp("indexes") / "cranfield"
    config = IndexConfig(shortlists=(make_spec(64), make_spec(128)))
    return build_index(open_corpus(cranfield_parquet), encoder, path, config)


@pytest.fixture(scope="session")
def query_vectors(encoder, cranfield_queries) -> np.ndarray:
    return encoder.encode(cranfield_queries)


@pytest.fixture(scope="session")
def sample_index(tmp_path_factory, encoder) -> Path:
    """The README's quick-start index: examples/debian-300.parquet, 64-dim flat shortlist. Read-only."""
    from funnel.corpus import open_corpus
    from funnel.indexes.builder import IndexConfig, build_index

    return build_index(open_corpus(SAMPLE), encoder, tmp_path_factory.mktemp("indexes") / "debian-300", IndexConfig())
