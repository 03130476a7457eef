"""Test helpers shared by several test modules."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pyarrow as pa

from funnel.corpus import DOCUMENT_SCHEMA
from funnel.indexes.builder import IndexConfig, write_index
from funnel.vectors import normalize

SAMPLE = Path(__file__).resolve().parents[1] / "examples" / "debian-300.parquet"


def documents(count: int, start: int = 0) -> pa.RecordBatch:
    ids = [f"doc-{i}" for i in range(start, start + count)]
    return pa.RecordBatch.from_arrays(
        [
            pa.array(ids),
            pa.array([None] * count, pa.string()),
            pa.array([f"text of {i}" for i in ids]),
            pa.array([None] * count, pa.string()),
        ],
        schema=DOCUMENT_SCHEMA,
    )


def vector_index(path: Path, vectors: np.ndarray, config: IndexConfig = IndexConfig(), batch: int = 64) -> Path:
    """An index over given vectors (no model): for stage logic that needs no text."""
    vectors = normalize(vectors)
    batches = ((documents(len(vectors[s : s + batch]), s), vectors[s : s + batch]) for s in range(0, len(vectors), batch))
    return write_index(batches, path, model="vectors-only", dim=vectors.shape[1], config=config)


def assert_same_ranking(scores_a, positions_a, scores_b, positions_b, tolerance=1e-4):
    """Equal rankings, except that documents whose scores tie (within tolerance) may swap."""
    np.testing.assert_allclose(scores_a, scores_b, atol=tolerance)
    for row_a, row_b, row_scores in zip(positions_a, positions_b, scores_a):
        for rank, (a, b) in enumerate(zip(row_a, row_b)):
            if a != b:
                tied = np.abs(row_scores - row_scores[rank]) <= tolerance
                assert tied.sum() > 1, f"rank {rank}: {a} vs {b} without a tie"
                assert set(row_a[tied]) == set(row_b[tied]) or rank + tied.sum() >= len(row_a)


def write_signed_manifest(index_path: Path, data: dict) -> None:
    """Write an edited manifest with a valid checksum: what a writer with a bug (not a damaged
    file) would leave, so that the checks behind the checksum are what a test exercises."""
    import json

    from funnel.indexes.manifest import MANIFEST_FILE, content_checksum

    data = {**data, "checksum": content_checksum(data)}
    (index_path / MANIFEST_FILE).write_text(json.dumps(data))


class HashEncoder:
    """A stand-in model: a text's vector is a function of its text only, so runs are comparable."""

    name, dim, metadata = "hash-encoder", 32, {}

    def __init__(self, fail_on_call: int | None = None) -> None:
        self.calls, self.texts, self.fail_on_call = 0, 0, fail_on_call

    def encode(self, texts, batch_size=64):
        self.calls += 1
        if self.calls == self.fail_on_call:
            raise KeyboardInterrupt  # like Ctrl-C: the build stops, its partial folder stays
        self.texts += len(texts)
        seeds = [int.from_bytes(hashlib.sha256(t.encode()).digest()[:8], "little") for t in texts]
        vectors = np.stack([np.random.default_rng(s).normal(size=self.dim) for s in seeds]).astype(np.float32)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
