"""Precomputed embeddings for an evaluation, checked against the model before they are trusted.

A cache folder holds ``corpus.npy`` / ``queries.npy`` (float32, one row per id) with
``corpus_ids.json`` / ``queries_ids.json`` (the ids in row order), as
``python -m benchmarks.embed_cache`` writes them; the folder may hold them directly or in a subfolder
named after the dataset. Before use, a seeded sample of documents and queries is re-encoded with
the model: a cache made from other text or another model is refused, so figures computed from
the cache are the figures a real encode gives.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from funnel.errors import InputError
from funnel.vectors import normalize

if TYPE_CHECKING:
    from funnel.corpus import Corpus
    from funnel.encoders.choose import TextEncoder

SAMPLE = 8
MIN_COSINE = 0.9999


@dataclass(frozen=True)
class CachedEmbeddings:
    """One part (corpus or queries) of a cache: ids and their normalized vectors (n, dim)."""

    path: Path
    ids: list[str]
    vectors: np.ndarray

    def rows(self, ids: Sequence[str]) -> np.ndarray:
        """Vectors for ``ids`` in that order; InputError naming an id the cache lacks."""
        lookup = self._lookup()
        missing = [doc_id for doc_id in ids if doc_id not in lookup]
        if missing:
            raise InputError(
                f"{self.path} has no embedding for {len(missing)} ids (such as {missing[0]!r}); "
                "rebuild the cache for this dataset or drop --embeddings-cache"
            )
        return self.vectors[[lookup[doc_id] for doc_id in ids]]

    def _lookup(self) -> dict[str, int]:
        # The first row of a repeated id wins, as the corpus reader keeps the first document.
        lookup: dict[str, int] = {}
        for row, doc_id in enumerate(self.ids):
            lookup.setdefault(doc_id, row)
        return lookup


def cache_folder(root: str | Path, dataset: str | Path | None) -> Path:
    """``root`` itself when it holds corpus.npy or queries.npy, else ``root/<dataset name>``."""
    folder = Path(root).expanduser()
    if any((folder / f"{part}.npy").exists() for part in ("corpus", "queries")) or dataset is None:
        return folder
    return folder / Path(dataset).resolve().name


def load_part(folder: Path, part: str, dim: int) -> CachedEmbeddings:
    """Read ``part`` ("corpus" or "queries") of a cache; InputError if absent or inconsistent."""
    vectors_path, ids_path = folder / f"{part}.npy", folder / f"{part}_ids.json"
    if not vectors_path.is_file() or not ids_path.is_file():
        raise InputError(
            f"{folder} has no cached {part} embeddings ({part}.npy and {part}_ids.json); make them with python -m benchmarks.embed_cache"
        )
    vectors = np.load(vectors_path, mmap_mode="r")
    ids = [str(doc_id) for doc_id in json.loads(ids_path.read_text())]
    if vectors.ndim != 2 or vectors.shape[0] != len(ids):
        raise InputError(f"{vectors_path} holds {vectors.shape} vectors for {len(ids)} ids; rebuild the cache")
    if vectors.shape[1] != dim:
        raise InputError(f"{vectors_path} holds {vectors.shape[1]}-dim vectors but the model gives {dim}: the cache is from another model")
    return CachedEmbeddings(vectors_path, ids, normalize(np.asarray(vectors, dtype=np.float32)))


def verify(cached: CachedEmbeddings, ids: Sequence[str], texts: Sequence[str], encoder: TextEncoder, seed: int = 0) -> None:
    """Re-encode a seeded sample of (id, text) pairs; InputError if a cached vector differs from the model's."""
    if not ids:
        return
    rng = np.random.default_rng(seed)
    picks = sorted(rng.choice(len(ids), size=min(SAMPLE, len(ids)), replace=False).tolist())
    fresh = encoder.encode([texts[i] for i in picks])
    stored = cached.rows([ids[i] for i in picks])
    cosines = np.sum(fresh * stored, axis=1)
    worst = int(np.argmin(cosines))
    if cosines[worst] < MIN_COSINE:
        raise InputError(
            f"{cached.path}: the cached vector of {ids[picks[worst]]!r} differs from the model's "
            f"(cosine {cosines[worst]:.5f}): the cache was made with another model or text; rebuild it or drop --embeddings-cache"
        )


def corpus_batches(corpus: Corpus, cached: CachedEmbeddings) -> Iterator[tuple[pa.RecordBatch, np.ndarray]]:
    """The corpus reader's validated batches, each with its documents' cached vectors."""
    for batch in corpus.batches():
        yield batch, cached.rows(batch.column("id").to_pylist())
